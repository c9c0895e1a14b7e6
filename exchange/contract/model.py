"""The typed, immutable view of a loaded data contract."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# The ODCS logicalTypes a contract's fields may have for exchange. `exchange.types` maps each to
# its Arrow type; this copy of the names lets contract commands skip loading pyarrow.
LOGICAL_TYPES: Final = ("string", "integer", "number", "boolean", "date", "timestamp")


@dataclass(frozen=True)
class OrganisationCode:
    """An organisation's official code: its scheme (ods, gss, ...) and value."""

    scheme: str
    value: str

    def __str__(self) -> str:
        return f"{self.scheme.upper()} {self.value}"


@dataclass(frozen=True)
class Party:
    """An organisation taking part in the agreement."""

    organisation: str
    contact: str
    department: str | None = None
    code: OrganisationCode | None = None  # an NHS ODS code, a council's GSS code ...


@dataclass(frozen=True)
class Statute:
    """An Act and section the sharing relies on."""

    act: str
    section: str
    title: str | None = None  # the section's title as the agreement cites it
    wording: str | None = None  # the agreement's own words on it, shown verbatim

    def __str__(self) -> str:
        return f"{self.act} {self.section}"


@dataclass(frozen=True)
class Condition:
    """A UK GDPR Article 9 or DPA 2018 Schedule 1 condition, with the agreement's wording."""

    code: str
    wording: str | None = None


@dataclass(frozen=True)
class LegalBasis:
    """The lawful basis: statutes plus UK GDPR conditions."""

    statutes: tuple[Statute, ...]
    article6: str
    article9: str | None = None  # the first Article 9 condition
    dpa2018_schedule1: str | None = None  # the first Schedule 1 condition
    article9_conditions: tuple[Condition, ...] = ()  # every one, in contract order
    schedule1_conditions: tuple[Condition, ...] = ()

    def summary(self) -> str:
        """One line naming every part of the basis."""
        parts = [str(s) for s in self.statutes] + [f"UK GDPR Art {self.article6}"]
        article9 = [c.code for c in self.article9_conditions] or [self.article9 or ""]
        schedule1 = [c.code for c in self.schedule1_conditions] or [self.dpa2018_schedule1 or ""]
        parts += [f"UK GDPR Art {code}" for code in article9 if code]
        parts += [f"DPA 2018 Sch 1 {code}" for code in schedule1 if code]
        return "; ".join(parts)


@dataclass(frozen=True)
class Objections:
    """Which source column carries a person's objection, and whether the basis overrides it."""

    column: str
    overridden: bool
    justification: str | None = None
    list: str | None = None  # a secret holding objecting subject ids, one per line
    objected_values: tuple[str, ...] | None = None  # a text flag: the values meaning objected
    empty_means: str | None = None  # "objected" | "not-objected"; None: the form's default
    override_column: str | None = None  # the override holds only where this column ...
    override_values: tuple[str, ...] = ()  # ... holds one of these values

    @property
    def empty_objected(self) -> bool:
        """Whether an empty flag counts as an objection (default: yes for a text flag)."""
        if self.empty_means is not None:
            return self.empty_means == "objected"
        return self.objected_values is not None


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
    pseudonym_scope: str | None = None  # "agreement" | "shared"; None: not stated (as shared)

    @property
    def field_names(self) -> tuple[str, ...]:
        """The outgoing columns, in contract order."""
        return tuple(f.name for f in self.fields)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every source column the exchange needs to read, and no other."""
        needed = [f.source for f in self.fields] + [self.objections.column]
        if self.objections.override_column:
            needed.append(self.objections.override_column)
        needed += [str(f["column"]) for f in self.filters]
        return tuple(dict.fromkeys(needed))

    @property
    def subject_key(self) -> Field:
        """The field that identifies the person (exactly one per contract)."""
        return next(f for f in self.fields if f.subject_key)
