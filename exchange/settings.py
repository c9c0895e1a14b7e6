"""The gateway's own configuration: the only module that reads EXCHANGE_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from exchange.errors import InvalidRequest

DEFAULT_APPROVERS = Path("/etc/exchange/approvers.json")
# Secrets and connections may be given as variables (see exchange.secrets); never logged.
SECRET_PREFIXES = ("EXCHANGE_SECRET_", "EXCHANGE_CONN_")


LOG_FORMATS = ("text", "json")


# mimalloc (pyarrow's and DataFusion's allocator), read when those libraries load: freed pages
# handed back to the system at once, not kept for reuse (about 60 MB less at 1M rows, no
# slower: BENCHMARKS.md, fifth round); and no transparent huge pages, where one live block
# keeps 2 MiB resident and a purge of less gives nothing back (20-35 MB less: twelfth round).
# mimalloc turns them off for the whole process (prctl), and for the processes it starts.
ALLOCATOR_SETTINGS = {"MIMALLOC_PURGE_DELAY": "0", "MIMALLOC_ALLOW_THP": "0"}


def release_memory_promptly(environ: MutableMapping[str, str] | None = None) -> None:
    """Set `ALLOCATOR_SETTINGS` where the operator has not set them. mimalloc reads them when
    pyarrow or DataFusion loads, so a command calls this before they are imported."""
    environ = os.environ if environ is None else environ
    for name, value in ALLOCATOR_SETTINGS.items():
        environ.setdefault(name, value)


# The CSV reader's block: the longest row a CSV source may have, and its memory, since pyarrow's
# streaming reader reads up to 32 blocks ahead (not configurable: ARROW-12090): about 17 MiB at
# 512 KiB, 35 MiB at 1 MiB. 512 KiB took the run's processes together 15-35 MB lower at 10M rows
# (BENCHMARKS.md, thirteenth round); a source with longer rows sets EXCHANGE_CSV_BLOCK_SIZE.
CSV_BLOCK_SIZE = 512 << 10


def _block_size(text: str | None) -> int:
    """EXCHANGE_CSV_BLOCK_SIZE in bytes (512 KiB if unset); between 64 KiB and 1 GiB."""
    if not text:
        return CSV_BLOCK_SIZE
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest("EXCHANGE_CSV_BLOCK_SIZE must be a whole number of bytes") from None
    if not (1 << 16) <= value <= (1 << 30):
        raise InvalidRequest("EXCHANGE_CSV_BLOCK_SIZE must be between 65536 and 1073741824 bytes")
    return value


def _log_format(text: str | None) -> str:
    """EXCHANGE_LOG_FORMAT: `text` (the default) or `json`."""
    value = (text or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise InvalidRequest(f"EXCHANGE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    return value


def _switch(name: str, text: str | None, *, default: bool = False) -> bool:
    """A yes/no variable: `1` or `0` (unset or empty: `default`)."""
    value = (text or ("1" if default else "0")).strip()
    if value not in ("0", "1"):
        raise InvalidRequest(f"{name} must be 1 or 0")
    return value == "1"


def _hours(name: str, text: str | None, default: float) -> float:
    """A positive number of hours from a variable; `default` if unset."""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number of hours") from None
    if not 0 < value <= 24 * 366:
        raise InvalidRequest(f"{name} must be more than 0 and at most 8784 hours (a year)")
    return value


@dataclass(frozen=True)
class Settings:
    """Where the gateway keeps its state, finds its keys and sends incident notices.

    EXCHANGE_HOME          state folder (staging, quarantine reports, default ledger); ~/.exchange
    EXCHANGE_AUDIT_URL     SQLAlchemy URL of the audit ledger; sqlite under EXCHANGE_HOME
    EXCHANGE_SIGNING_KEY   the gateway's Ed25519 private key; EXCHANGE_HOME/keys/gateway.key
    EXCHANGE_SECRETS       a 0600 JSON file of connections and secrets (see exchange.secrets)
    EXCHANGE_SOURCE_DIR    where a contract's source file is found by its physicalName
    EXCHANGE_LOG_ORIGIN    the name of the audit log in signed checkpoints; from the key id
    EXCHANGE_CONTRACTS     the only folder contracts run from; ./contracts
    EXCHANGE_APPROVERS     the trusted approvers (operator configuration, outside the contracts
                           folder); /etc/exchange/approvers.json
    EXCHANGE_CSV_BLOCK_SIZE  bytes the CSV reader takes at a time (a row must fit); 512 KiB
    EXCHANGE_STAGING       a staging store shared by several workers: s3://bucket/prefix or
                           file:///shared/path (exchange.pipeline.store); unset: the local folder
    EXCHANGE_STAGING_MAX_AGE_HOURS  a staged drop of an abandoned run expires after; 168 (a week)
    EXCHANGE_LOG_FORMAT    the gateway's lines in task logs: text, or json (one object per line
                           with the run and agreement ids); text
    EXCHANGE_VALIDATION_WORKER  1 (the default): Great Expectations validates in a worker
                           process of its own (validators.worker), which `exchange run` starts
                           as it begins; 0: in the run's own process (less memory in all)
    EXCHANGE_INCIDENT_*    incident notices: SMTP, SMTP_TLS, FROM, TO, WEBHOOK (exchange.incidents)
    EXCHANGE_SECRET_*, EXCHANGE_CONN_*  secrets and connections by name (`secret_env`)
    """

    home: Path
    audit_url: str
    signing_key: Path
    secrets_file: Path | None
    source_dir: Path | None
    log_origin: str | None = None
    contracts: Path = Path("contracts")
    approvers: Path = DEFAULT_APPROVERS
    csv_block_size: int = CSV_BLOCK_SIZE
    staging_url: str | None = None
    staging_max_age_hours: float = 168.0
    log_format: str = "text"
    validation_worker: bool = True
    incident_smtp: str | None = None
    incident_smtp_tls: str | None = None
    incident_from: str = "exchange-gateway@localhost"
    incident_to: str = ""
    incident_webhook: str | None = field(default=None, repr=False)  # a URL may hold a token
    # The variables read, kept only so `secret_env` can pick the secrets out of them.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from environment variables, with defaults."""
        env = os.environ if env is None else env
        home = Path(env.get("EXCHANGE_HOME") or Path.home() / ".exchange").absolute()
        secrets = env.get("EXCHANGE_SECRETS")
        sources = env.get("EXCHANGE_SOURCE_DIR")
        return cls(
            home=home,
            audit_url=env.get("EXCHANGE_AUDIT_URL") or f"sqlite:///{home / 'audit.db'}",
            signing_key=Path(env.get("EXCHANGE_SIGNING_KEY") or home / "keys" / "gateway.key"),
            secrets_file=Path(secrets) if secrets else None,
            source_dir=Path(sources) if sources else None,
            log_origin=env.get("EXCHANGE_LOG_ORIGIN") or None,
            contracts=Path(env.get("EXCHANGE_CONTRACTS") or "contracts").absolute(),
            approvers=Path(env.get("EXCHANGE_APPROVERS") or DEFAULT_APPROVERS).absolute(),
            csv_block_size=_block_size(env.get("EXCHANGE_CSV_BLOCK_SIZE")),
            staging_url=env.get("EXCHANGE_STAGING") or None,
            staging_max_age_hours=_hours(
                "EXCHANGE_STAGING_MAX_AGE_HOURS", env.get("EXCHANGE_STAGING_MAX_AGE_HOURS"), 168.0
            ),
            log_format=_log_format(env.get("EXCHANGE_LOG_FORMAT")),
            validation_worker=_switch(
                "EXCHANGE_VALIDATION_WORKER", env.get("EXCHANGE_VALIDATION_WORKER"), default=True
            ),
            incident_smtp=env.get("EXCHANGE_INCIDENT_SMTP") or None,
            incident_smtp_tls=env.get("EXCHANGE_INCIDENT_SMTP_TLS") or None,
            incident_from=env.get("EXCHANGE_INCIDENT_FROM", "exchange-gateway@localhost"),
            incident_to=env.get("EXCHANGE_INCIDENT_TO", ""),
            incident_webhook=env.get("EXCHANGE_INCIDENT_WEBHOOK") or None,
            environ=env,
        )

    def secret_env(self) -> dict[str, str]:
        """The EXCHANGE_SECRET_* and EXCHANGE_CONN_* variables (values are secrets: never log)."""
        return {k: v for k, v in self.environ.items() if k.startswith(SECRET_PREFIXES)}

    def checkpoint_origin(self, signing_key_id: str) -> str:
        """The log's name in signed checkpoints: EXCHANGE_LOG_ORIGIN, else from the key id."""
        return self.log_origin or f"exchange-gateway/{signing_key_id.removeprefix('ed25519:')}"

    @property
    def staging(self) -> Path:
        """Ciphertext waiting for delivery."""
        return self.home / "staging"

    @property
    def quarantine(self) -> Path:
        """Reports of runs whose data failed quality (counts and rules only)."""
        return self.home / "quarantine"
