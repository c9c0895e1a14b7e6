"""Regular expressions as the gateway reads them: in RE2, where `$` is the end of the text.

Contract patterns run in RE2 (Arrow's, `validators.expectations.pattern_mask`) and are checked
here by the RE2 project's own binding, so lint accepts exactly what runs. The JSON schemas of
contract terms and manifests are checked the same way: `jsonschema` runs a schema's `pattern`
with Python's `re`, where `$` also matches before a final line break, so
`"early-help-sftp\\n"` passed `^[a-z0-9-]+$`; JSON Schema's patterns are ECMA-262's, whose `$`
is RE2's.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import jsonschema
import re2

# RE2 would print a rejected pattern's parse error to stderr; the caller says it instead.
_QUIET = re2.Options()
_QUIET.log_errors = False


def problem(pattern: str) -> str | None:
    """Why RE2 cannot read `pattern`, or None if it can."""
    try:
        re2.compile(pattern, _QUIET)
    except re2.error as exc:
        return exc.args[0].decode("utf-8", "replace") if exc.args else "not a pattern"
    return None


@cache
def _compiled(pattern: str) -> Any:
    return None if problem(pattern) is not None else re2.compile(pattern, _QUIET)


def schema_validator(schema: dict[str, Any], **options: Any) -> jsonschema.protocols.Validator:
    """A validator for `schema` (its own draft) whose `pattern` is searched for in RE2; a
    pattern RE2 cannot compile (a lookahead) is left to jsonschema's own `re`."""
    base = jsonschema.validators.validator_for(schema)
    by_re = base.VALIDATORS["pattern"]

    def pattern(validator: Any, wanted: str, instance: Any, where: Any) -> Iterator[Any]:
        compiled = _compiled(wanted) if isinstance(wanted, str) else None
        if compiled is None:
            yield from by_re(validator, wanted, instance, where)
        elif validator.is_type(instance, "string") and not _found(compiled, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {wanted!r}")

    strict = jsonschema.validators.extend(base, {"pattern": pattern})
    return strict(schema, **options)


def _found(compiled: Any, text: str) -> bool:
    try:
        return compiled.search(text) is not None
    except UnicodeEncodeError:  # a lone surrogate (valid JSON, not UTF-8): no pattern matches it
        return False
