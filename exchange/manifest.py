"""The drop manifest: what was sent, to whom, why, under which agreement; signed by the gateway.

Its format is versioned (`manifest_version`) and described by manifest.schema.json (packaged
beside this module; docs/manifest.schema.json is the same file). It carries ids, counts, names
and hashes only, never a value from a row. A partner parses it as hostile input: a valid
signature proves who sent a drop, not that its names are safe on the partner's file system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema

from exchange import patterns
from exchange.contract.vocabulary import units

if TYPE_CHECKING:
    import datetime as dt

    from exchange.contract import Contract

MANIFEST_VERSION = "exchange-manifest/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
SSH_SIGNATURE_NAME = "manifest.json.sshsig"  # the same bytes signed for `ssh-keygen -Y verify`
SCHEMA_NAME = "manifest.schema.json"
MAX_BYTES = 1 << 20  # real manifests are a few kB; a cap bounds parsing and validation
FORMATS = ("csv", "parquet")
# Days after retention ends before a drop with no destruction receipt is an incident.
DESTRUCTION_GRACE_DAYS = 7.0
MAX_RETENTION_DAYS = units.MAX_DAYS  # the schema's `retention.days` maximum

# Names a partner writes files under. fullmatch, unlike a JSON Schema pattern's `$` in Python,
# does not let a trailing newline through.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SAFE_KEY = re.compile(r"[A-Za-z0-9_:.-]{1,40}")


class ManifestError(ValueError):
    """A manifest that is not a well-formed exchange-manifest/1; the message is one line."""


def is_safe_id(value: object) -> bool:
    """True for an id that is safe as a file name: SAFE_ID, and never '..'."""
    return isinstance(value, str) and SAFE_ID.fullmatch(value) is not None and ".." not in value


def payload_name(fmt: str) -> str:
    """The encrypted payload's file name for a format, exactly as the gateway writes it."""
    if fmt not in FORMATS:
        raise ManifestError(f"unknown payload format (expected one of {', '.join(FORMATS)})")
    return f"data.{fmt}.age"


def to_bytes(manifest: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, two-space indent, UTF-8."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


@cache
def schema() -> dict[str, Any]:
    """The manifest's JSON Schema, as shipped in the package."""
    text = resources.files("exchange").joinpath(SCHEMA_NAME).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> jsonschema.protocols.Validator:
    return patterns.schema_validator(schema())  # `$` the end of the text, as JSON Schema means


class _DuplicateKey(ManifestError):
    """Raised inside the parser; `strict_json` names the document it was in."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicated key would let the signed text say one thing and the parser read another.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey("duplicate key")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise ManifestError(f"{name} is not JSON")


def strict_json(data: bytes, *, limit: int, what: str) -> Any:
    """Parse UTF-8 JSON with no duplicate keys, no NaN/Infinity, a size cap and bounded depth."""
    if len(data) > limit:
        raise ManifestError(f"{what} is larger than {limit} bytes")
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
        )
    except _DuplicateKey:
        raise ManifestError(f"duplicate key in {what} JSON") from None
    except ManifestError:
        raise
    except RecursionError:
        raise ManifestError(f"{what} is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ManifestError(f"{what} is not UTF-8 JSON") from None


def _where(path: Iterable[Any]) -> str:
    """A JSON path for a message, without echoing hostile keys."""
    parts = [str(p) if isinstance(p, int) or _SAFE_KEY.fullmatch(str(p)) else "<key>" for p in path]
    return "/" + "/".join(parts)


def from_bytes(data: bytes) -> dict[str, Any]:
    """Parse and validate a manifest (JSON only, its schema, safe names); ManifestError if not."""
    manifest = strict_json(data, limit=MAX_BYTES, what="manifest")
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ManifestError("not an exchange manifest of a supported version")
    try:
        error = jsonschema.exceptions.best_match(_validator().iter_errors(manifest))
    except RecursionError:
        raise ManifestError("manifest is nested too deeply") from None
    if error is not None:
        # The keyword and the place, never the value: it may be long, hostile or personal.
        raise ManifestError(
            f"manifest does not match its schema at {_where(error.absolute_path)} "
            f"({error.validator})"
        )
    if not is_safe_id(manifest["drop_id"]):
        raise ManifestError("manifest drop_id is not a safe name")
    if not is_safe_id(manifest["contract"]["id"]):
        raise ManifestError("manifest contract id is not a safe name")
    info = manifest["payload"]
    if info["name"] != payload_name(info["format"]):
        raise ManifestError(f"payload name is not the one the gateway writes for {info['format']}")
    return manifest


@dataclass(frozen=True)
class Payload:
    """The encrypted file of a drop."""

    name: str
    format: str
    size: int
    sha256: str
    cipher: str
    recipients: tuple[str, ...]
    csv_formula_guard: bool = True  # payload.encode's default: formulae in CSV text neutralised

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; a CSV payload says whether its cells were guarded against formulae."""
        return {
            "name": self.name,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "encryption": {"cipher": self.cipher, "recipients": list(self.recipients)},
            **({"csv_formula_guard": self.csv_formula_guard} if self.format == "csv" else {}),
        }


def contract_facts(contract: Contract) -> dict[str, Any]:
    """The agreement a drop is sent under, as the manifest and the ledger name it."""
    return {
        "id": contract.id,
        "version": contract.version,
        "sha256": contract.sha256,
        "purposes": list(contract.purposes),
        "legal_basis": contract.legal_basis.summary(),
        "provider": contract.provider.organisation,
        "recipient": contract.recipient.organisation,
        **{
            f"{role}_code": {"scheme": party.code.scheme, "value": party.code.value}
            for role, party in (("provider", contract.provider), ("recipient", contract.recipient))
            if party.code
        },
        **(
            {"pseudonym_scope": contract.pseudonym_scope or "shared"}
            if contract.pseudonymisation_key
            else {}
        ),
    }


def field_facts(contract: Contract) -> list[dict[str, Any]]:
    """Each outgoing field with its type and minimisation transform."""
    return [
        {
            "name": f.name,
            "type": f.logical_type,
            "transform": f.transform,
            **({"options": dict(f.transform_options)} if f.transform_options else {}),
        }
        for f in contract.fields
    ]


def extract_facts(since: dt.datetime | None) -> dict[str, Any]:
    """Whether a drop is a full extract or a delta, and since which watermark."""
    if since is None:
        return {"kind": "full"}
    return {"kind": "delta", "since": since.isoformat()}


def describe_extract(body: Mapping[str, Any]) -> str:
    """The manifest's `extract` in words, for a partner."""
    extract = body.get("extract")
    if not isinstance(extract, Mapping):
        return "extent not stated (a gateway older than the manifest's extract field)"
    if extract.get("kind") == "delta":
        return f"a delta: rows added or changed after {extract.get('since')}"
    return "a full extract"


def retention_facts(contract: Contract) -> dict[str, Any] | None:
    """The agreement's retention as the partner's `expire` reads it (None if unknown)."""
    if contract.retention_days is None:
        return None
    if contract.retention_days > MAX_RETENTION_DAYS:
        # The partner's schema refuses more (a sender-chosen 1e10 once stopped `expire`).
        raise ManifestError(
            f"the agreement's retention ({contract.retention}) is longer than "
            f"{MAX_RETENTION_DAYS} days, the most a manifest states: shorten it in the contract"
        )
    return {
        "period": contract.retention,
        "days": contract.retention_days,
        "action": contract.retention_action,
        "grace_days": DESTRUCTION_GRACE_DAYS,
    }


def build_manifest(
    contract: Contract,
    *,
    drop_id: str,
    run_id: str,
    created_at: dt.datetime,
    rows: Mapping[str, Any],
    payload: Payload,
    sender_key_id: str,
    ledger: Mapping[str, Any],
    pseudonym_key_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    since: dt.datetime | None = None,
) -> dict[str, Any]:
    """The manifest of one drop, ready for `to_bytes` and signing.

    `ledger` is the sender's ledger position and checkpoint; `extra` adds top-level keys (a
    correction notice's `correction`); `since` is the watermark a delta starts after (None:
    the payload is a full extract)."""
    retention = retention_facts(contract)
    return {
        "manifest_version": MANIFEST_VERSION,
        "drop_id": drop_id,
        "run_id": run_id,
        "created_at": created_at.isoformat(timespec="seconds"),
        "contract": contract_facts(contract),
        "fields": field_facts(contract),
        "rows": dict(rows),
        "extract": extract_facts(since),
        "payload": payload.as_dict(),
        "sender": {"key_id": sender_key_id},
        **({"pseudonymisation": {"key_id": pseudonym_key_id}} if pseudonym_key_id else {}),
        **({"retention": retention} if retention else {}),
        **dict(extra or {}),
        "ledger": dict(ledger),
    }
