"""The trust anchor: which IG officers' keys may approve, suspend and resume agreements.

It is operator configuration, kept outside the contracts tree, so whoever can commit a contract
cannot also approve it. One JSON file (EXCHANGE_APPROVERS, default /etc/exchange/approvers.json):

    {"approvers": [{"name": "Ivy Officer", "role": "IG lead", "key": "ssh-ed25519 AAAA..."}],
     "revoked": ["ed25519:0123456789abcdef"]}

Names shown anywhere come from this file, never from a key's comment. The file must not be
writable by group or others, nor sit inside the contracts folder; in production it belongs to
another user than the gateway's (e.g. root, mode 0644), so the gateway cannot change who it trusts.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.crypto import signing
from exchange.errors import NotRunnable
from exchange.manifest import strict_json

MAX_BYTES = 1 << 20
NAME_MAX = 120


class TrustError(NotRunnable):
    """The trusted approvers cannot be read safely: nothing runs until the operator fixes it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="trust-config-invalid")


@dataclass(frozen=True)
class Approver:
    """A trusted IG officer: their key and the name the operator gave them."""

    key_id: str
    name: str
    key: Ed25519PublicKey
    role: str = ""

    @property
    def label(self) -> str:
        """`Name (key id)`, as shown in messages and the ledger."""
        return f"{self.name} ({self.key_id})"


@dataclass(frozen=True)
class Trust:
    """The approvers trusted now (revoked keys already removed) and the revoked key ids."""

    approvers: dict[str, Approver]
    revoked: frozenset[str]
    source: str = ""

    def approver(self, key_id: str) -> Approver | None:
        """The trusted approver with this key id, if any."""
        return None if key_id in self.revoked else self.approvers.get(key_id)


def _public_key(text: str) -> Ed25519PublicKey:
    data = text.strip().encode()
    try:
        if data.startswith(b"ssh-ed25519"):
            key: object = serialization.load_ssh_public_key(data)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("is not a readable public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("is not an Ed25519 public key")
    return key


def _check_placement(path: Path, contracts: Path | None) -> None:
    """Refuse a trust file others could change, or one inside the contracts tree."""
    target = path.resolve()
    for place in (target, target.parent):
        mode = place.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise TrustError(
                f"trusted approvers file {path}: {place} is writable by group or others; "
                f"fix with: chmod go-w {place}"
            )
    if contracts is not None and target.is_relative_to(contracts.resolve()):
        raise TrustError(
            f"trusted approvers file {path} is inside the contracts folder: whoever can commit "
            "a contract could approve it; keep it in the operator's configuration instead"
        )


def load_trust(path: Path, *, contracts: Path | None = None) -> Trust:
    """Read the trusted approvers; TrustError names the file and what is wrong."""
    if not path.exists():
        raise TrustError(
            f"no trusted approvers file at {path}: set EXCHANGE_APPROVERS "
            "(see docs/operators.md, 'Trusted approvers')"
        )
    _check_placement(path, contracts)
    try:
        # Strict JSON as for manifests: no duplicate keys, no NaN, a size cap, bounded depth.
        document = strict_json(path.read_bytes(), limit=MAX_BYTES, what="trusted approvers")
        if not isinstance(document, dict) or set(document) - {"approvers", "revoked"}:
            raise ValueError("expected an object with 'approvers' and 'revoked' only")
        entries = document.get("approvers") or []
        revoked = document.get("revoked") or []
        if not isinstance(entries, list) or not isinstance(revoked, list):
            raise ValueError("'approvers' and 'revoked' must be lists")
        if not all(isinstance(k, str) for k in revoked):
            raise ValueError("'revoked' must list key ids as strings")
        approvers: dict[str, Approver] = {}
        for index, entry in enumerate(entries):
            where = f"approvers[{index}]"
            if not isinstance(entry, dict) or set(entry) - {"name", "role", "key"}:
                raise ValueError(f"{where}: expected an object with name, role and key")
            name, role, key_text = entry.get("name"), entry.get("role", ""), entry.get("key")
            if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
                raise ValueError(f"{where}.name: a name of 1 to {NAME_MAX} characters is needed")
            if not name.isprintable() or not isinstance(role, str) or not role.isprintable():
                raise ValueError(f"{where}: names and roles must be printable text")
            if not isinstance(key_text, str):
                raise ValueError(f"{where}.key: an OpenSSH or PEM Ed25519 public key is needed")
            try:
                key = _public_key(key_text)
            except ValueError as exc:
                raise ValueError(f"{where}.key {exc}") from None
            key_id = signing.key_id(key)
            if key_id in approvers:
                raise ValueError(f"{where}.key: key {key_id} is listed twice")
            approvers[key_id] = Approver(key_id, name.strip(), key, role.strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrustError(f"trusted approvers file {path}: {exc}") from None
    gone = frozenset(k.strip() for k in revoked)
    live = {k: a for k, a in approvers.items() if k not in gone}
    return Trust(live, gone, str(path))


def trust_entry(name: str, public_key_line: str, role: str = "") -> dict[str, str]:
    """One approver as the trust file lists it (for set-up scripts and tests)."""
    _public_key(public_key_line)
    return {"name": name, "role": role, "key": public_key_line.strip()}
