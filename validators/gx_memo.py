"""Each expectation's configuration built once per validation, not once per read.

In GX 1.24, `Expectation.configuration` is a property that builds a new
`ExpectationConfiguration` on every read (a pydantic `dict()` of the expectation and a regex over
its class name), and building a validation's metric graph reads it about 90 times per
expectation: measured here, about half the fixed cost GX pays per validate call (a
1,000-row window of the sample's 15 rules: 0.12-0.17 s, and 0.06-0.10 s with it built once).

Inside `memoised()`, the property gives, for each expectation object, the configuration it
built on that object's first read; outside, it is GX's own property, untouched. GX makes the
expectation objects it validates afresh from the suite for each validate call and changes
neither them nor their configurations while it validates, so each read would have built an
equal object; the one exception is GX's processing of suite parameters (`$PARAMETER` values,
which the gateway's suites never use), done once per configuration it reads: a second
validate call in the same block would reuse the first call's values. So a block holds one
validate call. The objects are held (not just their ids) until the block ends, so an id is
never reused within it. If GX's property is not what this module expects (another GX
version), nothing is replaced and `memoised()` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import validators.gx_import  # noqa: F401 - must precede the first import of GX

# isort: split
from great_expectations.expectations.expectation import Expectation

_Memo = dict[int, tuple[Any, Any]]
_memo: ContextVar[_Memo | None] = ContextVar("gx_configuration_memo", default=None)


def _memoising(build: Callable[[Any], Any]) -> property:
    def configuration(self: Any) -> Any:
        memo = _memo.get()
        if memo is None:
            return build(self)
        held = memo.get(id(self))
        if held is None:
            held = memo[id(self)] = (self, build(self))
        return held[1]

    configuration.__doc__ = build.__doc__
    return property(configuration)


_gx_property = Expectation.__dict__.get("configuration")
INSTALLED = isinstance(_gx_property, property) and _gx_property.fget is not None
if INSTALLED:
    assert isinstance(_gx_property, property) and _gx_property.fget is not None
    Expectation.configuration = _memoising(_gx_property.fget)  # type: ignore[method-assign,assignment]


@contextmanager
def memoised() -> Iterator[None]:
    """Within the block (on this thread), each expectation's configuration is built once; for
    one validate call (see the module's docstring)."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)
