"""What the DAG files read from each contract when they are parsed: cheap, safe, no Airflow.

Reading a contract here uses the gateway's own safe YAML loader (loaded by path, without the
`exchange` package, which takes over a second to import) and nothing else: no connection, no
database, no data. Every function here never raises for a malformed contract: a broken file
still gets a DAG, whose first task reports exactly what is wrong.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"


def contracts_folder() -> Path:
    """EXCHANGE_CONTRACTS, or the repository's sample folder (for a developer's listing)."""
    return Path(os.environ.get("EXCHANGE_CONTRACTS") or REPO_CONTRACTS)


def _standalone(relative: str, alias: str) -> ModuleType:
    """A dependency-free module of the gateway, loaded by path without the package."""
    if alias in sys.modules:
        return sys.modules[alias]
    package = importlib.util.find_spec("exchange")  # locates the package without running it
    assert package is not None and package.submodule_search_locations
    location = Path(package.submodule_search_locations[0]) / relative
    spec = importlib.util.spec_from_file_location(alias, location)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def contract_yaml() -> ModuleType:
    """The gateway's contract YAML loader (`exchange.contract.safe_yaml`)."""
    if "exchange.contract.safe_yaml" in sys.modules:
        return sys.modules["exchange.contract.safe_yaml"]
    return _standalone("contract/safe_yaml.py", "_exchange_dag_safe_yaml")


@dataclass(frozen=True)
class Outline:
    """A contract as a DAG needs it at parse time."""

    dag_id: str
    schedule: str | None
    ack_deadline_hours: float | None
    doc_md: str


def _terms(document: dict[str, Any]) -> dict[str, Any]:
    items = document.get("customProperties")
    return {
        c["property"]: c.get("value")
        for c in (items if isinstance(items, list) else [])
        if isinstance(c, dict) and isinstance(c.get("property"), str)
    }


def _text(value: Any, limit: int = 400) -> str:
    """A contract value as one line of plain text for the DAG's documentation."""
    if isinstance(value, dict):
        value = ", ".join(str(v) for v in value.values() if isinstance(v, str | int | float))
    elif isinstance(value, list):
        value = ", ".join(_text(v, limit) for v in value)
    text = " ".join(str(value or "").split())
    # Markdown and HTML have no business in this page: show the contract's words as words.
    text = re.sub(r"[<>`*_#\[\]|\\]", " ", text)
    return text[:limit] or "(not stated)"


def _legal_basis(basis: Any) -> str:
    if not isinstance(basis, dict):
        return _text(basis)
    parts = []
    statutes = basis.get("statutes")
    if isinstance(statutes, list):
        parts += [_text(s) for s in statutes]
    for key, label in (("ukGdprArticle6", "UK GDPR Art."), ("ukGdprArticle9", "UK GDPR Art.")):
        if basis.get(key):
            parts.append(f"{label} {_text(basis[key])}")
    if basis.get("dpa2018Schedule1"):
        parts.append(f"DPA 2018 Sch. 1 {_text(basis['dpa2018Schedule1'])}")
    return "; ".join(parts) or "(not stated)"


def _doc_md(path: Path, document: dict[str, Any], terms: dict[str, Any]) -> str:
    """Purpose, recipient, owner, legal basis and digest, for the DAG's page."""
    canonical = _standalone("contract/canonical.py", "_exchange_dag_canonical")
    description = document.get("description")
    purpose = description.get("purpose") if isinstance(description, dict) else description
    purposes = terms.get("purposes")
    team = document.get("team")
    owner = terms.get("provider") or (team.get("name") if isinstance(team, dict) else None)
    try:
        digest = canonical.canonical_sha256(document)
    except (TypeError, ValueError):
        digest = "(the contract does not load; see the first task's log)"
    return "\n".join(
        [
            f"### {_text(document.get('name') or document.get('id'))}",
            "",
            f"- **Purpose**: {_text(purpose)}" + (f" ({_text(purposes)})" if purposes else ""),
            f"- **Recipient**: {_text(terms.get('recipient'))}",
            f"- **Owner**: {_text(owner)}",
            f"- **Legal basis**: {_legal_basis(terms.get('legalBasis'))}",
            f"- **Contract**: `{path.name}`, status {_text(document.get('status'))}, "
            f"SHA-256 `{digest}`",
            "",
            "The contract as parsed here. Every task checks again that it is approved and "
            "unchanged before it reads or sends anything. Created paused; a first scheduled "
            "run that starts late (as one does at once when the DAG is unpaused) is skipped: "
            "trigger a run by hand to send before the next scheduled time.",
        ]
    )


def _broken(path: Path, why: str) -> str:
    return (
        f"### `{path.name}`\n\nThis contract file {why}: the DAG's first task reports what is "
        "wrong, and nothing runs until it is fixed and approved."
    )


def outline(path: Path) -> Outline:
    """The DAG id, cron, acknowledgement deadline (hours) and documentation of a contract.

    Never raises: a broken file gets a DAG named by its file, with no schedule."""
    from croniter import croniter  # already imported by Airflow's cron timetables

    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    safe_yaml = contract_yaml()
    try:
        document = safe_yaml.load_file(path)
    except safe_yaml.YamlRefused:
        return Outline(f"exchange__{slug}", None, None, _broken(path, "cannot be read"))
    terms = _terms(document)
    contract_id = document.get("id")
    dag_id = contract_id if safe_yaml.is_contract_id(contract_id) else slug
    schedule = terms.get("schedule")
    if not (isinstance(schedule, str) and croniter.is_valid(schedule)):
        schedule = None  # an invalid cron would fail this whole file in the DagBag
    doc = _doc_md(path, document, terms)
    acks = terms.get("acknowledgements")
    deadline = acks.get("deadlineHours") if isinstance(acks, dict) else None
    if not isinstance(deadline, int | float) or isinstance(deadline, bool):
        return Outline(f"exchange__{dag_id}", schedule, None, doc)
    # NaN, infinity or a huge number would fail building the sensor, and with it every DAG.
    hours = float(deadline) if 0 <= deadline <= 24 * 366 else None
    return Outline(f"exchange__{dag_id}", schedule, hours, doc)


def outlines(folder: Path) -> tuple[dict[Path, Outline], dict[str, list[Path]]]:
    """Each contract file's outline, and the DAG ids that more than one file claims."""
    found = {path: outline(path) for path in sorted(folder.glob("*.yaml"))}
    claims: dict[str, list[Path]] = defaultdict(list)
    for path, item in found.items():
        claims[item.dag_id].append(path)
    clashes = {dag_id: paths for dag_id, paths in claims.items() if len(paths) > 1}
    unique = {p: o for p, o in found.items() if o.dag_id not in clashes}
    return unique, clashes


def clash_message(dag_id: str, paths: list[Path]) -> str:
    """The import error for contract files that claim the same id (and so the same DAG)."""
    contract_id = dag_id.removeprefix("exchange__")
    names = " and ".join(str(p) for p in paths)
    return (
        f"contract id {contract_id!r} is claimed by {len(paths)} files, {names}: neither runs "
        "(one must not silently replace the other) until one is removed or given its own id"
    )
