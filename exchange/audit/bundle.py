"""One file holding everything needed to check an agreement's history offline.

`write_bundle` signs a fresh checkpoint of the ledger and writes a JSON document
(`exchange-audit-bundle/1`, docs/formats.md) with: the gateway's public key and that
checkpoint; every ledger entry of the agreement (since a date) with its RFC 9162 inclusion
proof against the checkpoint; the checkpoints partners cosigned, each with a consistency proof
to it; the partners' and approvers' public keys; the contract versions the entries name, in
canonical form, with the approvals kept for them. Acknowledgements (and destruction receipts)
are inside their ledger entries, with the partner's own signature. scripts/verify_bundle.py
checks it with nothing but `cryptography`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from exchange.approval import APPROVED_DIR, approval_path
from exchange.audit import merkle
from exchange.audit.anchor import anchor_folder
from exchange.audit.entry import Entry
from exchange.audit.ledger import Ledger
from exchange.crypto import signing
from exchange.errors import ContractError, InvalidRequest
from exchange.files import write_private
from exchange.settings import Settings

BUNDLE_VERSION = "exchange-audit-bundle/1"


def _entry(entry: Entry, tree: merkle.Subtrees) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "recorded_at": entry.recorded_at,
        "event": entry.event,
        "run_id": entry.run_id,
        "contract_id": entry.contract_id,
        "body": entry.body,
        "prev_hash": entry.prev_hash,
        "entry_hash": entry.entry_hash,
        "inclusion": [h.hex() for h in tree.inclusion_proof(entry.seq - 1)],
    }


def _cosigned(entries: Iterable[Entry], tree: merkle.Subtrees) -> list[dict[str, Any]]:
    """Each distinct cosigned checkpoint, with a consistency proof to the bundle's tree."""
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        cosigned = entry.data.get("cosignature") if entry.event == "ack.received" else None
        if not isinstance(cosigned, dict) or cosigned.get("verified") is not True:
            continue
        size = int(cosigned["size"])
        if size > tree.size:
            continue
        found[cosigned["note"]] = {
            "note": cosigned["note"],
            "witness": cosigned["witness"],
            "key_id": entry.data.get("key_id"),
            "consistency": [h.hex() for h in tree.consistency_proof(size)],
        }
    return list(found.values())


def _contracts(settings: Settings, agreement: str, shas: set[str]) -> list[dict[str, Any]]:
    """The approved copies of each contract version named, canonical, with their approvals."""
    from exchange.contract.canonical import canonical_bytes
    from exchange.contract.load import parse_text

    approvals: dict[str, Any] = {}
    current = _live_contract(settings, agreement)
    for path in [approval_path(current)] if current else []:
        if path.is_file():
            envelope = json.loads(path.read_text("utf-8"))
            body = envelope.get("body", {}) if isinstance(envelope, dict) else {}
            approvals.setdefault(str(body.get("contract_sha256")), []).append(envelope)
    versions = []
    for sha in sorted(shas):
        copy = settings.contracts / APPROVED_DIR / agreement / f"{sha}.yaml"
        canonical = None
        if copy.is_file():
            document = parse_text(copy.read_text("utf-8"), str(copy))
            canonical = base64.b64encode(canonical_bytes(document)).decode()
        versions.append(
            {"sha256": sha, "canonical": canonical, "approvals": approvals.get(sha, [])}
        )
    return versions


def _approvers(settings: Settings) -> list[dict[str, str]]:
    try:
        listed = json.loads(settings.approvers.read_text("utf-8")).get("approvers", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [
        {"name": str(a.get("name")), "key": str(a.get("key"))}
        for a in listed
        if isinstance(a, dict)
    ]


def _live_contract(settings: Settings, agreement: str) -> Path | None:
    """The contract file of this id at the top of the contracts folder, if there is one."""
    from exchange.contract.load import parse_text

    for path in sorted(settings.contracts.glob("*.yaml")):
        try:
            if parse_text(path.read_text("utf-8"), str(path)).get("id") == agreement:
                return path
        except (OSError, ValueError, ContractError):
            continue
    return None


def _partner_keys(path: Path | None) -> list[str]:
    """The keys the contract lists for the partner's acknowledgements."""
    from exchange.contract.load import load_contract

    if path is None:
        return []
    try:
        terms = load_contract(path).acknowledgements or {}
    except ContractError:
        return []
    return [str(k) for k in terms.get("partnerKeys", [])]


def build_bundle(
    settings: Settings,
    agreement: str,
    *,
    since: dt.date | None = None,
    partner_keys: Iterable[str] = (),
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The bundle document of one agreement's history; InvalidRequest if it has none."""
    ledger = Ledger(settings.audit_url, create=False, anchor=anchor_folder(settings.home))
    try:
        key = signing.load_private_key(settings.signing_key)
        origin = settings.checkpoint_origin(signing.key_id(key.public_key()))
        checkpoint = ledger.checkpoint(key, origin)
        tree = ledger.subtrees(checkpoint.size)  # proofs from stored nodes: O(log n) reads
        chosen = [
            e
            for e in ledger.entries(until=checkpoint.size)
            if e.contract_id == agreement
            and (since is None or dt.datetime.fromisoformat(e.recorded_at).date() >= since)
        ]
        proven, cosigned = [_entry(e, tree) for e in chosen], _cosigned(chosen, tree)
    finally:
        ledger.close()
    if not chosen:
        raise InvalidRequest(
            f"the audit ledger has no entries of agreement {agreement!r}"
            + (f" since {since}" if since else "")
            + ": check the id with `exchange audit report`"
        )
    shas = {
        str(e.data.get("sha256") or e.data.get("contract_sha256"))
        for e in chosen
        if e.event in ("transfer.sent", "contract.approved")
    }
    return {
        "format": BUNDLE_VERSION,
        "agreement": agreement,
        "since": since.isoformat() if since else None,
        "created_at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "gateway": {
            "key": Path(f"{settings.signing_key}.pub").read_text("utf-8").strip(),
            "origin": origin,
        },
        "checkpoint": checkpoint.note,
        "entries": proven,
        "cosigned": cosigned,
        "partners": sorted(set(partner_keys) or _partner_keys(_live_contract(settings, agreement))),
        "approvers": _approvers(settings),
        "contracts": _contracts(settings, agreement, shas - {"None"}),
    }


def write_bundle(
    settings: Settings,
    agreement: str,
    out: Path,
    *,
    since: dt.date | None = None,
    partner_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """Build the bundle and write it to `out` (0600); the document."""
    document = build_bundle(settings, agreement, since=since, partner_keys=partner_keys)
    data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
    write_private(out, data, overwrite=True)
    return document
