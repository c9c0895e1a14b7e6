"""How diff walks two versions of a value: the shapes a handler accepts, pairing, reporting, words.

A handler judges one place: `handler(out, old, new, path)` appends the Changes it finds to `out`.
`@accepts(shape, otherwise)` declares the shape a handler judges; any other value goes whole to
`otherwise`, so the type guard is written once, here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Concatenate, Final, NamedTuple, ParamSpec, TypeAlias

from exchange.contract.diff._change import Change


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Final[Any] = _Missing()

P = ParamSpec("P")
Handler: TypeAlias = Callable[[list[Change], Any, Any, str], None]
Judge: TypeAlias = Callable[Concatenate[list[Change], Any, Any, str, P], None]
# A handler of one list item, also told the item's name (its key).
ItemHandler: TypeAlias = Callable[[list[Change], Any, Any, str, str], None]


# --- shapes: each returns the value as the handler takes it, or None ---------------------------


def as_list(value: Any) -> list[Any] | None:
    """A list; absent or null as an empty one."""
    if value is MISSING or value is None:
        return []
    return value if isinstance(value, list) else None


def as_map(value: Any) -> Mapping[str, Any] | None:
    """A mapping; absent or null as an empty one."""
    if value is MISSING or value is None:
        return {}
    return value if isinstance(value, Mapping) else None


def present_map(value: Any) -> Mapping[str, Any] | None:
    """A mapping that is there (null as an empty one)."""
    return None if value is MISSING else as_map(value)


def only_map(value: Any) -> Mapping[str, Any] | None:
    """A mapping, not null."""
    return value if isinstance(value, Mapping) else None


def filled_list(value: Any) -> list[Any] | None:
    """A list with at least one item."""
    return value if isinstance(value, list) and value else None


def accepts(shape: Callable[[Any], Any], otherwise: Judge[P]) -> Callable[[Judge[P]], Judge[P]]:
    """Run the handler on both values in `shape`, or `otherwise` on the values as they are."""

    def decorate(handler: Judge[P]) -> Judge[P]:
        @functools.wraps(handler)
        def guarded(
            out: list[Change], old: Any, new: Any, path: str, /, *args: P.args, **kwargs: P.kwargs
        ) -> None:
            before, after = shape(old), shape(new)
            if before is None or after is None:
                otherwise(out, old, new, path, *args, **kwargs)
            else:
                handler(out, before, after, path, *args, **kwargs)

        return guarded

    return decorate


def ignore(*_: Any, **__: Any) -> None:
    """A handler for what decides nothing."""


# --- walking mappings and lists ----------------------------------------------------------------


def union(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys of both, in the new order, then those only the old has."""
    return [*new, *(k for k in old if k not in new)]


def changed(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str | None
) -> Iterator[tuple[str, Any, Any, str]]:
    """(key, old value, new value, path of the key) for each key whose values differ."""
    for key in union(old, new):
        before, after = old.get(key, MISSING), new.get(key, MISSING)
        if before != after:
            yield key, before, after, key if path is None else f"{path}.{key}"


def by_key(table: Mapping[str, Handler]) -> Callable[..., None]:
    """A handler of two mappings judging each differing key by its handler in `table` (a key
    not in it is unclassified); as a list item's handler, it ignores the item's name."""

    def judge(
        out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str | None, *_: Any
    ) -> None:
        for key, before, after, at in changed(old, new, path):
            table.get(key, unclassified)(out, before, after, at)

    return judge


def added_removed(old: Any, new: Any) -> tuple[list[Any], list[Any]]:
    """The items only `new` has, and those only `old` has, each in its own order."""
    return [x for x in new if x not in old], [x for x in old if x not in new]


class _Pair(NamedTuple):
    """One list item in both versions, matched by its key; MISSING where a version lacks it."""

    key: str
    old_index: int | None
    old: Any
    new_index: int | None
    new: Any

    @property
    def position(self) -> int:
        """Its index in the new version, else in the old."""
        return self.new_index if self.new_index is not None else self.old_index or 0


def keyed(items: list[Any], key: str) -> dict[str, tuple[int, Any]]:
    """Each item (and its index) by its `key`; `#i` for an item without one."""
    out: dict[str, tuple[int, Any]] = {}
    for i, item in enumerate(items):
        name = item.get(key) if isinstance(item, Mapping) else None
        out[str(name) if name is not None else f"#{i}"] = (i, item)
    return out


def _match(old: list[Any], new: list[Any], key: str, *, renames: bool = False) -> list[_Pair]:
    """Pair list items by `key`; with `renames`, a lone leftover on each side is one item."""
    o, n = keyed(old, key), keyed(new, key)
    pairs = [_Pair(k, *o.get(k, (None, MISSING)), *n.get(k, (None, MISSING))) for k in union(o, n)]
    gone = [p for p in pairs if p.new is MISSING]
    fresh = [p for p in pairs if p.old is MISSING]
    if renames and len(gone) == 1 and len(fresh) == 1:
        pairs.remove(gone[0])
        pairs[pairs.index(fresh[0])] = fresh[0]._replace(
            old_index=gone[0].old_index, old=gone[0].old
        )
    return pairs


def items(
    key: str,
    judge: ItemHandler,
    otherwise: Handler,
    *,
    shape: Callable[[Any], Any] | None = None,
    unshaped: ItemHandler = ignore,
    at: str = "{path}[{key}]",
    renames: bool = False,
) -> Handler:
    """A list of items matched by `key`, each judged with its name at the path `at` gives.

    With `shape`, an item in both versions and of that shape goes to `judge`, and an item added,
    removed or of another shape to `unshaped`; without, every item goes to `judge` as it is.
    """
    item = judge if shape is None else accepts(shape, unshaped)(judge)

    @accepts(as_list, otherwise)
    def each(out: list[Change], old: list[Any], new: list[Any], path: str) -> None:
        for p in _match(old, new, key, renames=renames):
            item(out, p.old, p.new, at.format(path=path, key=p.key, position=p.position), p.key)

    return each


class Said(NamedTuple):
    """How an item added to or removed from a list is reported; `{}` in `words` names it."""

    kind: str
    words: str
    reapproval: bool = True


def members(
    added: Said,
    removed: Said,
    otherwise: Handler,
    name: Callable[[Any], str],
    *,
    by: Callable[[Any], str] | None = None,
    indexed: bool = False,
) -> Handler:
    """A list compared as a set (of its items, or of their `by` keys): one Change an item."""

    @accepts(as_list, otherwise)
    def each(out: list[Change], old: list[Any], new: list[Any], path: str) -> None:
        if by is None:
            fresh, gone = added_removed(old, new)
        else:
            before, after = {by(x): x for x in old}, {by(x): x for x in new}
            fresh_keys, gone_keys = added_removed(before, after)
            fresh, gone = [after[k] for k in fresh_keys], [before[k] for k in gone_keys]
        for item, said in [*((x, added) for x in fresh), *((x, removed) for x in gone)]:
            where = f"{path}[{item}]" if indexed else path
            out.append(Change(where, said.kind, said.words.format(name(item)), said.reapproval))

    return each


def value_of(item: Any) -> Any:
    """A customProperties item's `value`."""
    return item.get("value", MISSING) if isinstance(item, Mapping) else MISSING


# --- reporting ---------------------------------------------------------------------------------


def _leaves(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """The differing leaves of two values; lists are compared whole."""
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in union(old, new):
            yield from _leaves(old.get(key, MISSING), new.get(key, MISSING), f"{path}.{key}")
    else:
        yield path, old, new


def report(
    out: list[Change],
    old: Any,
    new: Any,
    path: str,
    kind: str,
    reapproval: bool,
    note: str = "",
    label: str = "",
) -> None:
    """One Change of `kind` for each differing leaf, named by its path (or `label`)."""
    for where, o, n in _leaves(old, new, path):
        name = label if label and where == path else where
        out.append(Change(where, kind, f"{name}: {was(o, n)}{note}", reapproval))


def fixed(kind: str, reapproval: bool, note: str = "", label: str = "") -> Handler:
    """A handler reporting every differing leaf as `kind`."""

    def handler(out: list[Change], old: Any, new: Any, path: str) -> None:
        report(out, old, new, path, kind, reapproval, note, label)

    return handler


def stated(kind: str, words: str, reapproval: bool = True) -> Handler:
    """A handler reporting one Change of `kind`: `words` and what the value was and is."""

    def handler(out: list[Change], old: Any, new: Any, path: str) -> None:
        out.append(Change(path, kind, f"{words} {was(old, new)}", reapproval))

    return handler


unclassified: Final = fixed("unclassified", True, " (not a term this tool can judge)")
wording: Final = fixed("wording", False)
contacts: Final = fixed("contacts-changed", False)


@accepts(as_list, wording)
def tags(out: list[Change], old: list[Any], new: list[Any], path: str) -> None:
    """Tags added and removed, as one wording change."""
    added, removed = added_removed(old, new)
    if added or removed:
        parts = ([f"added {show(added)}"] if added else []) + (
            [f"removed {show(removed)}"] if removed else []
        )
        out.append(Change(path, "wording", f"{path}: tags {', '.join(parts)}", False))


# --- customProperties and the other keys of list items -----------------------------------------


@accepts(as_map, ignore)
def item_extras(
    out: list[Change], old: Mapping[str, Any], new: Mapping[str, Any], path: str, skip: set[str]
) -> None:
    """Keys of a list item other than those in `skip`: description is wording."""
    for key, before, after, at in changed(old, new, path):
        if key not in skip:
            (wording if key == "description" else unclassified)(out, before, after, at)


_TERM_ITEM: Final = {"property", "value"}


def custom_properties(judge: ItemHandler, otherwise: Handler = unclassified) -> Handler:
    """A customProperties list: items matched by `property`, each changed value judged."""

    def term(out: list[Change], old: Any, new: Any, path: str, name: str) -> None:
        item_extras(out, old, new, path, _TERM_ITEM)
        before, after = value_of(old), value_of(new)
        if before != after:
            judge(out, before, after, path, name)

    return items("property", term, otherwise, at="{path}.{key}")


# --- words -------------------------------------------------------------------------------------


def show(value: Any, limit: int = 60) -> str:
    """A short, one-line rendering of a contract value."""
    if value is MISSING:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f'"{text}"' if isinstance(value, str) else text


def was(old: Any, new: Any) -> str:
    """What a value was and is, in words."""
    if old is MISSING:
        return f"added {show(new)}"
    if new is MISSING:
        return f"removed (was {show(old)})"
    if isinstance(old, str) and isinstance(new, str):
        old, new = _from_first_difference(old, new)
    return f"{show(old)} -> {show(new)}"


def _from_first_difference(old: str, new: str, context: int = 20) -> tuple[str, str]:
    """Both texts from a little before where they first differ, so a long rewording shows."""
    old, new = " ".join(old.split()), " ".join(new.split())
    same = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), None)
    if same is None:
        same = min(len(old), len(new))
    start = old.rfind(" ", 0, max(same - context, 0)) + 1
    if start <= 0:
        return old, new
    return "..." + old[start:], "..." + new[start:]


def key_text(key: Any) -> str:
    """A long key shortened to its ends."""
    return f"{key[:12]}...{key[-6:]}" if isinstance(key, str) and len(key) > 24 else show(key)


def canon(value: Any) -> str:
    """A value as comparable text: the same for equal values written in another key order."""
    return json.dumps(value, sort_keys=True, default=str)
