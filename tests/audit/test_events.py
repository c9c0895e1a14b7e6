"""The event registry (exchange.audit.events) covers every event the code writes or reads, and
every registered event is documented for auditors and handled by the report."""

from __future__ import annotations

import ast
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from exchange import reporting
from exchange.audit import Entry, Event, Ledger
from exchange.audit.entry import seal
from exchange.audit.events import REGISTRY, Outcome, lookup

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("exchange", "dags") for p in (ROOT / folder).rglob("*.py"))
DOCS = ROOT / "docs" / "auditors.md"


class Unresolved(Exception):
    """An event argument whose value the scan cannot tell."""


@dataclass
class Module:
    """One parsed source file, with what a name in it may refer to."""

    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]

    @classmethod
    def read(cls, path: Path) -> Module:
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        return cls(path, tree, parents)

    @property
    def dotted(self) -> str:
        return ".".join(self.path.relative_to(ROOT).with_suffix("").parts)

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"

    def function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node
        return None


MODULES = {m.dotted: m for m in map(Module.read, SOURCES)}


def _assigned(scope: ast.AST, name: str) -> Iterator[ast.expr]:
    """The values assigned to `name` directly in `scope` (tuple assignments unpacked)."""
    body = scope.body if isinstance(scope, ast.Module) else list(ast.walk(scope))
    for node in body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            if isinstance(target, ast.Name) and target.id == name:
                yield node.value
            elif isinstance(target, ast.Tuple):
                for i, t in enumerate(target.elts):
                    if not (isinstance(t, ast.Name) and t.id == name):
                        continue
                    if isinstance(node.value, ast.Tuple):
                        yield node.value.elts[i]
                    else:  # `event, body = make(...)`: item i of what it returns
                        yield ast.Subscript(node.value, ast.Constant(i), lineno=node.lineno)


def _from_callers(
    module: Module, func: ast.FunctionDef | ast.AsyncFunctionDef, name: str, depth: int
) -> set[str]:
    """A parameter's values, from the calls of its function in the same module."""
    params = [a.arg for a in func.args.args]
    annotation = next((a.annotation for a in func.args.args if a.arg == name), None)
    if annotation is not None and "Event" in ast.unparse(annotation):
        return set()  # typed as an Event: mypy checks every caller
    index = params.index(name) - (1 if params and params[0] in ("self", "cls") else 0)
    found: set[str] = set()
    for call in ast.walk(module.tree):
        if not isinstance(call, ast.Call) or _called(call) != func.name:
            continue
        given = [k.value for k in call.keywords if k.arg == name]
        given += call.args[index : index + 1]
        for value in given:
            found |= resolve(value, module, depth + 1)
    if not found:
        raise Unresolved(f"parameter {name!r} of {func.name}() (annotate it as Event)")
    return found


def resolve(node: ast.expr, module: Module, depth: int = 0) -> set[str]:
    """Every event name `node` may hold; Unresolved if the scan cannot tell."""
    if depth > 6:
        raise Unresolved(ast.unparse(node))
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return resolve(node.body, module, depth + 1) | resolve(node.orelse, module, depth + 1)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(resolve(e, module, depth + 1) for e in node.elts))
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call):
        index = node.slice.value if isinstance(node.slice, ast.Constant) else None
        return _returned(node.value, module, index, depth)
    if isinstance(node, ast.Call):
        return _returned(node, module, None, depth)
    if isinstance(node, ast.Attribute) and isinstance(getattr(Event, node.attr, None), Event):
        return {getattr(Event, node.attr).value}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        other = _imported(module, node.value.id)
        if other is not None:
            return _named(other, node.attr, depth)
    if isinstance(node, ast.Name):
        func = module.function(node)
        if func is not None:
            local = list(_assigned(func, node.id))
            if local:
                return set().union(*(resolve(v, module, depth + 1) for v in local))
            if node.id in {a.arg for a in func.args.args}:
                return _from_callers(module, func, node.id, depth)
        return _named(module, node.id, depth)
    raise Unresolved(ast.unparse(node))


def _returned(call: ast.Call, module: Module, index: int | None, depth: int) -> set[str]:
    """What the function `call` calls returns (item `index` of a returned tuple)."""
    func, home = call.func, module
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        home = _imported(module, func.value.id) or module  # `events.refusal(...)`
    name = _called(call)
    defs = [
        n
        for n in ast.walk(home.tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    ]
    if not defs:
        raise Unresolved(ast.unparse(call))
    found: set[str] = set()
    for node in (n for d in defs for n in ast.walk(d)):
        if isinstance(node, ast.Return) and node.value is not None:
            value: ast.expr = node.value
            if index is not None and isinstance(value, ast.Tuple):
                value = value.elts[index]
            elif index is not None:
                value = ast.Subscript(value, ast.Constant(index), lineno=node.lineno)
            if not (isinstance(value, ast.Constant) and value.value is None):
                found |= resolve(value, home, depth + 1)
    return found


def _named(module: Module, name: str, depth: int) -> set[str]:
    """A module-level name's values, following `from X import name`."""
    values = list(_assigned(module.tree, name))
    if values:
        return set().union(*(resolve(v, module, depth + 1) for v in values))
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.ImportFrom) or node.module not in MODULES:
            continue
        for alias in node.names:
            if (alias.asname or alias.name) == name:
                return _named(MODULES[node.module], alias.name, depth + 1)
    raise Unresolved(name)


def _imported(module: Module, name: str) -> Module | None:
    """The scanned module a local name stands for (`from exchange import approval`)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return MODULES.get(f"{node.module}.{alias.name}")
    return None


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _is_event(node: ast.expr) -> bool:
    """`x.event` or `table.c.event`: the event of an entry or the column."""
    return isinstance(node, ast.Attribute) and node.attr == "event"


def _writes(call: ast.Call) -> bool:
    """`ledger.append(event, body, ...)` or `ledger.find(event, run_id=...)` (not list.append)."""
    name, keywords = _called(call), {k.arg for k in call.keywords}
    if name == "append":
        return len(call.args) >= 2 or bool(call.args and keywords & {"run_id", "contract_id"})
    return name == "find" and bool(call.args) and "run_id" in keywords


def event_arguments() -> Iterator[tuple[Module, ast.AST, ast.expr, bool]]:
    """(module, place, expression, strict) for each event name the code writes or reads.

    Strict: the first argument of `ledger.append(event, body, ...)` and of `ledger.find(event,
    run_id=...)`; lenient (skipped when not literal): comparisons with `entry.event` and
    `entries.c.event.in_([...])`.
    """
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and _writes(node):
                yield module, node, node.args[0], True
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "in_"
                and _is_event(node.func.value)
            ):
                yield from ((module, node, arg, False) for arg in node.args)
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_is_event(side) for side in sides):
                    others = (s for s in sides if not _is_event(s))
                    yield from ((module, node, side, False) for side in others)


def test_the_registry_names_every_event_once() -> None:
    assert set(REGISTRY) == set(Event)
    for event, kind in REGISTRY.items():
        assert kind.event is event and kind.meaning and kind.fields, event
        assert len(set(kind.fields)) == len(kind.fields), event
        assert lookup(event.value) is kind
    assert lookup("no.such-event") is None


def test_every_event_the_code_writes_or_reads_is_registered() -> None:
    unknown, unresolved, strict = [], [], 0
    for module, place, node, is_strict in event_arguments():
        strict += is_strict
        try:
            names = resolve(node, module)
        except Unresolved as exc:
            if is_strict:
                unresolved.append(f"{module.where(place)}: cannot tell which event: {exc}")
            continue
        unknown += [f"{module.where(place)}: {n!r}" for n in sorted(names) if lookup(n) is None]
    assert strict >= 15, "the scan no longer finds the ledger writes: fix the test"
    assert not unresolved, "use an Event constant (exchange.audit.events):\n" + "\n".join(
        unresolved
    )
    assert not unknown, "register these in exchange/audit/events.py:\n" + "\n".join(unknown)


def test_every_registered_event_is_written_somewhere() -> None:
    written: set[str] = set()
    for module, _place, node, is_strict in event_arguments():
        if is_strict:
            written |= resolve(node, module)
    mentioned = {
        getattr(Event, n.attr).value
        for m in MODULES.values()
        if m.dotted != "exchange.audit.events"
        for n in ast.walk(m.tree)
        if isinstance(n, ast.Attribute) and isinstance(getattr(Event, n.attr, None), Event)
    }
    assert not {e.value for e in Event} - written - mentioned


def test_every_registered_event_is_documented_for_auditors() -> None:
    documented = set(re.findall(r"^\| `([a-z_.-]+)` \|", DOCS.read_text(), re.MULTILINE))
    missing = sorted(e.value for e in Event if e.value not in documented)
    assert not missing, f"document these in {DOCS.name} (Events and their fields): {missing}"


def _entry(seq: int, event: Event) -> Entry:
    body = {field: None for field in REGISTRY[event].fields}
    if event is Event.TRANSFER_SENT:
        rows = {"read": 3, "sent": 2, "excluded": {}, "objections_overridden": 0}
        body |= {"rows": rows, "fields_sent": ["a"], "drop_id": "d", "payload_sha256": "0" * 64}
        body |= {"recipient": "R", "purposes": ["p"]}
    if REGISTRY[event].security:
        body["security_event"] = True
    at = f"2026-11-25T10:00:{seq:02d}.000000+00:00"
    return seal(seq, "0" * 64, recorded_at=at, event=event, body=body, contract_id="c")


def test_the_report_handles_every_registered_event() -> None:
    entries = [_entry(seq, event) for seq, event in enumerate(Event, start=1)]
    entries.append(seal(99, "0" * 64, recorded_at=entries[0].recorded_at, event="x.y", body={}))
    day = dt.date(2026, 11, 25)
    report = reporting.build(entries, day, day)
    counted = {e["event"]: e for e in report.events}
    assert set(counted) == {e.value for e in Event} | {"x.y"}
    assert counted["run.refused"]["severity"] == "warning"
    assert counted["x.y"]["meaning"].startswith("not an event")
    problems = {p["event"] for p in report.problems}
    assert problems == {t.name for t in REGISTRY.values() if t.outcome is not Outcome.DONE}
    assert {s["event"] for s in report.security} == {
        t.name for t in REGISTRY.values() if t.security
    }
    assert [t["drop_id"] for t in report.transfers] == ["d"]
    assert [i["kind"] for i in report.incidents] == [None]
    (agreement,) = report.agreements
    assert (agreement.refusals, agreement.failures) == (1, 3)
    html, csv = reporting.to_html(report), reporting.to_csv(report)
    assert all(e.value in html for e in Event)
    assert "ack.rejected" in csv


def test_an_event_constant_is_stored_as_its_plain_text(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'audit.db'}")
    typed = ledger.append(Event.RUN_REFUSED, {"reason": "x"}, run_id="r", contract_id="c")
    plain = ledger.append("run.refused", {"reason": "x"}, run_id="r", contract_id="c")
    stored = list(ledger.entries())
    assert [type(e.event) for e in stored] == [str, str]
    assert stored[0].event == stored[1].event == "run.refused" == typed.event
    assert typed.computed_hash() == typed.entry_hash and plain.computed_hash() == plain.entry_hash
    assert ledger.find(Event.RUN_REFUSED, run_id="r", contract_id="c") == stored[1]
    assert ledger.verify().ok


def test_the_severities_auditors_read_are_the_registry_s() -> None:
    rows = re.findall(r"^\| (`.+`) \| .+ \| (info|notice|warning|high) \|$", DOCS.read_text(), re.M)
    listed = {name: severity for names, severity in rows for name in re.findall(r"`(.+?)`", names)}
    assert listed == {e.value: REGISTRY[e].severity.value for e in Event}
