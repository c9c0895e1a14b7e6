"""Read contract YAML so that what a reviewer reads is exactly what runs.

The loader refuses what YAML allows but a reviewer cannot see: anchors and aliases (which also
expand without limit), duplicate keys (the last one silently wins), merge keys, tags other than
the plain types, duplicate `property` entries in a customProperties or slaProperties list, and
anything that looks like a secret key. Size, depth and node count are capped.

Only `yaml`, `re` and the standard library are imported: the DAG file loads this module on its
own to read contract outlines, without importing the rest of the gateway.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

MAX_BYTES = 1024 * 1024  # a large agreement is ~30 KiB; 1 MiB leaves ample room
MAX_DEPTH = 32  # the sample nests 10 deep
MAX_NODES = 50_000  # the sample has ~400 nodes; this bounds parse time to about a second

# Contract ids name staged drops, ledger entries, suspensions and DAGs (see names.py).
CONTRACT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

SECRET_MESSAGE = "looks like a secret key; never put secret keys in a contract"  # noqa: S105

# Shapes of private keys. Matched without echoing: the message never carries the value.
SECRET_SHAPES = re.compile(
    r"AGE-SECRET-KEY-1[0-9A-Z]{20}"  # an age identity (bech32, any case)
    r"|AGE-PLUGIN-[0-9A-Z-]+-1[0-9A-Z]{20}"  # an age plugin identity
    r"|-----BEGIN[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----"  # PEM, OpenSSH and OpenPGP private keys
    r"|PuTTY-User-Key-File-",
    re.IGNORECASE,
)

_CORE = "tag:yaml.org,2002:"
# Explicit tags that only restate a plain type; every other tag is refused.
_ALLOWED_TAGS = frozenset(
    f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
) | {"!"}

try:  # libyaml parses ~10x faster; the checks below run on its events either way
    from yaml._yaml import CParser as _Events
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Events(Reader, Scanner, Parser):  # type: ignore[no-redef]
        """The pure-Python event parser."""

        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class YamlRefused(Exception):
    """The text is not a contract we may read; `problems` are (where, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{w}: {m}" if w else m for w, m in problems))


class _Refusal(yaml.MarkedYAMLError):
    """A rule of this loader, located at a node and at its path in the document."""

    def __init__(self, message: str, mark: Any, path: str) -> None:
        super().__init__(None, None, message, mark)
        self.path = path


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _path_text(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out if len(out) <= 120 else out[:117] + "..."  # a deep path says enough early on


def _key_text(value: Any) -> str:
    """A key as the contract's canonical form spells it (dates as ISO text)."""
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


class ContractLoader(Composer, _Events, SafeConstructor, Resolver):  # type: ignore[misc]
    """A SafeLoader whose composer refuses what a reviewer could misread."""

    def __init__(self, stream: str) -> None:
        _Events.__init__(self, stream)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self._path: list[str | int] = []
        self._nodes = 0

    def _refuse(self, message: str, mark: Any, *extra: str | int) -> _Refusal:
        return _Refusal(message, mark, _path_text([*self._path, *extra]))

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, refusing aliases, anchors, odd tags and excess depth or size."""
        event: Any = self.peek_event()
        if isinstance(event, AliasEvent):
            raise self._refuse(
                "YAML aliases (*name) are not allowed: write the value out in full",
                event.start_mark,
            )
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise self._refuse(
                "YAML anchors (&name) are not allowed: write each value out in full",
                event.start_mark,
            )
        tag = getattr(event, "tag", None)
        explicit = tag is not None and not (isinstance(event, ScalarEvent) and event.implicit[0])
        if isinstance(event, CollectionStartEvent):
            explicit = tag is not None and not event.implicit
        if explicit and tag not in _ALLOWED_TAGS:
            raise self._refuse(
                f"the YAML tag {tag!r} is not allowed: a contract holds only text, numbers, "
                "true/false, lists and mappings",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self._refuse(f"more than {MAX_NODES} YAML nodes: too large", event.start_mark)
        if len(self._path) >= MAX_DEPTH:
            raise self._refuse(f"nested more than {MAX_DEPTH} deep", event.start_mark)
        if isinstance(parent, MappingNode) and isinstance(index, ScalarNode):
            self._path.append(index.value)
        elif isinstance(index, int):
            self._path.append(index)
        else:  # a mapping key: located by its mapping
            return super().compose_node(parent, index)
        try:
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        """A scalar, refused if it looks like a secret key (the value is never echoed)."""
        node = super().compose_scalar_node(anchor)
        if SECRET_SHAPES.search(node.value):
            raise self._refuse(SECRET_MESSAGE, node.start_mark)
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        """A mapping, refused if a key repeats, is not a scalar, or is a merge key."""
        node = super().compose_mapping_node(anchor)
        seen: dict[str, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                raise self._refuse("a mapping key must be plain text", key_node.start_mark)
            if key_node.tag == f"{_CORE}merge":
                raise self._refuse(
                    "YAML merge keys (<<) are not allowed: write each key out in full",
                    key_node.start_mark,
                )
            text = _key_text(self.construct_object(key_node))
            if text in seen:
                first = seen[text].line + 1
                raise self._refuse(
                    f"duplicate key {text!r} (first on line {first}): YAML keeps only the last, "
                    "so what a reviewer reads is not what runs",
                    key_node.start_mark,
                    text,
                )
            seen[text] = key_node.start_mark
        return node


def _sequence_items(node: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], Any]]:
    """Every list in the document, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _sequence_items(value, [*path, str(key)])
    elif isinstance(node, list):
        yield path, node
        for i, value in enumerate(node):
            yield from _sequence_items(value, [*path, i])


def duplicate_properties(document: Any) -> list[tuple[str, str]]:
    """Repeated `property` entries (per `element`) in any list of property entries."""
    problems = []
    for path, items in _sequence_items(document, []):
        seen: dict[tuple[str, str | None], int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "property" not in item:
                continue
            element = item.get("element")
            key = (_key_text(item["property"]), None if element is None else str(element))
            if key in seen:
                problems.append(
                    (
                        _path_text([*path, i, "property"]),
                        f"duplicate property {key[0]!r} (also at [{seen[key]}]): only one "
                        "would be used, so what a reviewer reads is not what runs",
                    )
                )
            else:
                seen[key] = i
    return problems


def secret_lines(text: str) -> list[tuple[str, str]]:
    """Lines (comments included) holding something shaped like a private key."""
    return [
        (f"line {text.count(chr(10), 0, match.start()) + 1}", SECRET_MESSAGE)
        for match in SECRET_SHAPES.finditer(text)
    ]


def load_text(text: str) -> dict[str, Any]:
    """Parse one contract document; raise YamlRefused naming where and what is wrong."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused([("", f"larger than {MAX_BYTES // 1024} KiB: not a contract")])
    secrets = secret_lines(text)
    if secrets:  # before parsing, so no parse message can quote the value
        raise YamlRefused(secrets)
    loader = ContractLoader(text)
    try:
        document = loader.get_single_data()
    except _Refusal as exc:
        where = _at(exc.problem_mark) + (f" ({exc.path})" if exc.path else "")
        raise YamlRefused([(where, str(exc.problem))]) from None
    except ReaderError as exc:
        where = f"character {exc.position + 1}"
        raise YamlRefused([(where, f"not valid YAML: {exc.reason}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or "invalid YAML"
        context = getattr(exc, "context", None)
        detail = f"{context}, {detail}" if context else detail
        raise YamlRefused([(_at(mark), f"not valid YAML: {detail}")]) from None
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        raise YamlRefused([("", "a contract must be a YAML mapping")])
    duplicates = duplicate_properties(document)
    if duplicates:
        raise YamlRefused(duplicates)
    return document


def read_bytes(path: Path) -> bytes:
    """At most MAX_BYTES + 1 bytes of a file: a huge file is refused without reading it all."""
    try:
        with path.open("rb") as stream:
            return stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlRefused(
            [("", f"cannot read file: {exc.strerror or type(exc).__name__}")]
        ) from None


def load_file(path: Path) -> dict[str, Any]:
    """Read and parse a contract file; raise YamlRefused for any problem."""
    data = read_bytes(path)
    if len(data) > MAX_BYTES:
        raise YamlRefused([("", f"larger than {MAX_BYTES // 1024} KiB: not a contract")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused([(f"byte {exc.start}", "not UTF-8 text")]) from None
    return load_text(text)


def is_contract_id(value: Any) -> bool:
    """Whether value is a safe contract id."""
    return isinstance(value, str) and CONTRACT_ID.fullmatch(value) is not None
