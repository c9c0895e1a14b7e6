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

The same block memoises `IDDict.to_id`, the id GX gives each metric's arguments: an MD5 over
their JSON, built by walking them value by value. A validation asks it about 900 times for
the sample's 15 rules, of about 26 distinct arguments, and it was most of the fixed cost left
per validate call (BENCHMARKS.md, tenth round). An id is a function of the dict's class and
content alone, so it is reused for an equal dict: equal by a key that tells apart whatever JSON
tells apart (each value's exact type: `True` is not `1`, `0.0` is not `-0.0`, a tuple is not a
list, dicts in another order are apart), with the keys it ignores. Any dict holding another
type (a subclass of str, a numpy value, a date) is not memoised: GX computes its id as always.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import validators.gx_import  # noqa: F401 - must precede the first import of GX

# isort: split
from great_expectations.core.id_dict import IDDict
from great_expectations.expectations.expectation import Expectation

_Memo = dict[int, tuple[Any, Any]]
_memo: ContextVar[_Memo | None] = ContextVar("gx_configuration_memo", default=None)
_ids: ContextVar[dict[Hashable, Any] | None] = ContextVar("gx_id_memo", default=None)


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


class _Unkeyable(Exception):
    """A value whose JSON an exact key could not be sure to tell apart."""


_PLAIN = (str, int, bool, type(None))


def _exact(value: Any) -> Hashable:
    """A key equal for two values only if GX writes both as the same JSON."""
    kind = type(value)
    if kind in _PLAIN:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))  # 0.0 == -0.0, but they are written apart
    if kind in (list, tuple):
        return (kind, tuple(_exact(item) for item in value))
    if kind is dict or kind is IDDict:
        if any(type(name) is not str for name in value):
            raise _Unkeyable
        # In order: GX writes a dict nested under a lone key by `str()`, which keeps it.
        return (dict, tuple((name, _exact(item)) for name, item in value.items()))
    raise _Unkeyable


def _memoising_id(to_id: Callable[..., Any]) -> Callable[..., Any]:
    def memo_to_id(self: Any, id_keys: Any = None, id_ignore_keys: Any = None) -> Any:
        ids = _ids.get()
        if ids is None or id_keys is not None or id_ignore_keys is not None:
            return to_id(self, id_keys, id_ignore_keys)
        try:
            ignored = frozenset(self._id_ignore_keys)  # a class's, or one set on the dict
            key = (type(self), ignored, _exact(dict(self)))
        except (_Unkeyable, RecursionError, TypeError):  # a value that holds itself, say
            return to_id(self)
        if key not in ids:
            ids[key] = to_id(self)
        return ids[key]

    memo_to_id.__doc__ = to_id.__doc__
    return memo_to_id


_gx_property = Expectation.__dict__.get("configuration")
_gx_to_id = IDDict.__dict__.get("to_id")
INSTALLED = (
    isinstance(_gx_property, property)
    and _gx_property.fget is not None
    and callable(_gx_to_id)
    and list(inspect.signature(_gx_to_id).parameters) == ["self", "id_keys", "id_ignore_keys"]
)
if INSTALLED:
    assert isinstance(_gx_property, property) and _gx_property.fget is not None
    assert callable(_gx_to_id)
    Expectation.configuration = _memoising(_gx_property.fget)  # type: ignore[method-assign,assignment]
    IDDict.to_id = _memoising_id(_gx_to_id)  # type: ignore[method-assign]


@contextmanager
def memoised() -> Iterator[None]:
    """Within the block (on this thread), each expectation's configuration is built once, and
    each metric argument's id once per content; for one validate call (see the module's
    docstring)."""
    token, ids = _memo.set({}), _ids.set({})
    try:
        yield
    finally:
        _ids.reset(ids)
        _memo.reset(token)
