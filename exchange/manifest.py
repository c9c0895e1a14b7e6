"""The drop manifest: what was sent, to whom, why, under which agreement; signed by the gateway.

Its format is versioned (`manifest_version`) and described by manifest.schema.json.
It carries ids, counts, names and hashes only, never a value from a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MANIFEST_VERSION = "exchange-manifest/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"


def to_bytes(manifest: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, two-space indent, UTF-8."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def from_bytes(data: bytes) -> dict[str, Any]:
    """Parse a manifest (JSON only, never an object-constructing loader)."""
    manifest = json.loads(data.decode("utf-8"))
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError("not an exchange manifest of a supported version")
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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "encryption": {"cipher": self.cipher, "recipients": list(self.recipients)},
        }
