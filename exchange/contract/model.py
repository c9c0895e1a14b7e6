"""The typed, immutable view of a loaded data contract."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Party:
    """An organisation taking part in the agreement."""

    organisation: str
    contact: str
    department: str | None = None


@dataclass(frozen=True)
class Statute:
    """An Act and section the sharing relies on."""

    act: str
    section: str

    def __str__(self) -> str:
        return f"{self.act} {self.section}"


@dataclass(frozen=True)
class LegalBasis:
    """The lawful basis: statutes plus UK GDPR conditions."""

    statutes: tuple[Statute, ...]
    article6: str
    article9: str | None = None
    dpa2018_schedule1: str | None = None

    def summary(self) -> str:
        """One line naming every part of the basis."""
        parts = [str(s) for s in self.statutes] + [f"UK GDPR Art {self.article6}"]
        if self.article9:
            parts.append(f"UK GDPR Art {self.article9}")
        if self.dpa2018_schedule1:
            parts.append(f"DPA 2018 Sch 1 {self.dpa2018_schedule1}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Objections:
    """Which source column carries a person's objection, and whether the basis overrides it."""

    column: str
    overridden: bool
    justification: str | None = None
    list: str | None = None  # a secret holding objecting subject ids, one per line


@dataclass(frozen=True)
class Endpoint:
    """Where drops go: the recipient's SFTP folder and the connection that reaches it."""

    server: str
    host: str
    folder: str  # relative to the SFTP session's starting directory
    format: str  # "csv" or "parquet"
    connection: str
    host_keys: tuple[str, ...] = ()  # pinned SSH host keys ("ssh-ed25519 AAAA...")
    type: str = "sftp"  # the ODCS server type; it picks the transport (exchange.transport)


@dataclass(frozen=True)
class Field:
    """One outgoing field: its source column and what is done to it."""

    name: str
    source: str
    logical_type: str
    transform: str
    transform_options: Mapping[str, Any]
    required: bool
    unique: bool
    subject_key: bool
    classification: str | None
    type_options: Mapping[str, Any]
    quality: tuple[Mapping[str, Any], ...]
    path: str  # location in the contract, e.g. "schema[0].properties[2]"


@dataclass(frozen=True)
class Contract:
    """A validated data contract (an ODCS v3.1 document with the gateway's sharing terms)."""

    path: Path
    document: Mapping[str, Any]
    sha256: str
    id: str
    name: str
    version: str
    status: str
    purpose: str
    purposes: tuple[str, ...]
    provider: Party
    recipient: Party
    legal_basis: LegalBasis
    objections: Objections
    schedule: str
    review_date: dt.date
    recipient_keys: tuple[str, ...]
    endpoint: Endpoint
    pseudonymisation_key: str | None
    dataset: str
    source_name: str
    fields: tuple[Field, ...]
    dataset_quality: tuple[Mapping[str, Any], ...]
    retention: str
    retention_action: str
    dpia_reference: str
    filters: tuple[Mapping[str, Any], ...] = ()  # purpose filters on source columns, in order
    acknowledgements: Mapping[str, Any] | None = None  # folder, partnerKeys, deadlineHours
    sender_manages_inbox: bool = False
    incremental_column: str | None = None  # the last-updated timestamp column, if incremental
    source_time_zone: str | None = None  # IANA zone of the source's times without one
    ambiguous_times: str = "refuse"  # a time the clocks show twice: refuse, earlier, later
    retention_days: float | None = None

    @property
    def field_names(self) -> tuple[str, ...]:
        """The outgoing columns, in contract order."""
        return tuple(f.name for f in self.fields)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every source column the exchange needs to read, and no other."""
        needed = [f.source for f in self.fields] + [self.objections.column]
        needed += [str(f["column"]) for f in self.filters]
        return tuple(dict.fromkeys(needed))

    @property
    def subject_key(self) -> Field:
        """The field that identifies the person (exactly one per contract)."""
        return next(f for f in self.fields if f.subject_key)
