"""The gateway facade: wires settings, ledger, secrets, transports and clock into the stages.

The stages live in `exchange.pipeline` (check -> prepare -> deliver, and `run` for all three)
and the operations in `exchange.operations` (acknowledgements, retention, rectification, the
incremental watermark). The CLI runs the stages in one go; each DAG task runs one of them.
Every stage writes its own audit entries, refusals and failures included, so both paths leave
the same trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from exchange.approval import Governance
from exchange.audit import Disclosures, Ledger
from exchange.audit.anchor import anchor_folder
from exchange.contract import Contract
from exchange.errors import ExchangeError
from exchange.files import private_dir
from exchange.incidents import Notifier, notifiers_from_settings
from exchange.operations import acks, incremental, rectify, retention
from exchange.pipeline import check, deliver, prepare, run, staging
from exchange.pipeline.boundary import stage
from exchange.pipeline.context import DISCLOSURE_KEY, Context, open_disclosures
from exchange.pipeline.naming import drop_id_for, new_run_id
from exchange.pipeline.results import Prepared, RunResult
from exchange.pipeline.source import resolve
from exchange.pipeline.store import StagingStore
from exchange.secrets import LocalSecrets, SecretStore
from exchange.settings import Settings
from exchange.sources import Source
from exchange.transport import TRANSPORTS, Delivery, Transport, open_transport
from exchange.transport.registry import TransportFactory

UTC_NOW = partial(dt.datetime.now, dt.UTC)  # the default clock

__all__ = ["DISCLOSURE_KEY", "Gateway", "Prepared", "RunResult", "drop_id_for", "new_run_id"]


class Gateway:
    """Runs exchanges for the contracts it is given, recording everything in the ledger."""

    def __init__(
        self,
        settings: Settings,
        *,
        secrets: SecretStore | None = None,
        ledger: Ledger | None = None,
        transports: Mapping[str, TransportFactory] = TRANSPORTS,
        clock: Callable[[], dt.datetime] = UTC_NOW,
        notifiers: Sequence[Notifier] | None = None,
    ) -> None:
        self.settings = settings
        try:
            self.notifiers = list(
                notifiers_from_settings(settings) if notifiers is None else notifiers
            )
        except ValueError as exc:
            raise ExchangeError(f"incident notification settings: {exc}") from None
        private_dir(settings.home)
        self.secrets = secrets or LocalSecrets.from_settings(settings)
        self.ledger = ledger or Ledger(
            settings.audit_url, clock=clock, anchor=anchor_folder(settings.home)
        )
        self.transports = dict(transports)  # server type -> factory (`transport.registry`)
        self.clock = clock
        self._disclosures: Disclosures | None = None

    @classmethod
    def from_env(cls) -> Gateway:
        """A gateway configured from EXCHANGE_* environment variables."""
        return cls(Settings.from_env())

    @property
    def context(self) -> Context:
        """The wiring the stages use, built afresh so a changed clock or transport applies."""
        return Context(
            self.settings,
            self.ledger,
            self.secrets,
            self.transport_for,
            self.clock,
            self.notifiers,
            self.disclosures,
        )

    def transport_for(self, contract: Contract) -> Transport:
        """The transport to the contract's server, by its type. Raises NotRunnable."""
        return open_transport(contract.endpoint, self.secrets, self.transports)

    def disclosures(self) -> Disclosures:
        """The disclosure ledger, keyed by the `disclosure-key` secret. Raises SecretMissing."""
        if self._disclosures is None:
            self._disclosures = open_disclosures(self.settings, self.secrets)
        return self._disclosures

    # -- check --------------------------------------------------------------------------------

    def governance(self) -> Governance:
        """The trust anchor and the suspensions; read afresh so a change takes effect at once."""
        return self.context.governance()

    def contract_file(self, contract: str | Path) -> Path:
        """A contract file inside the configured contracts folder, by path or by id."""
        return check.contract_file(self.settings, contract)

    def check(self, contract_path: str | Path, *, run_id: str) -> Contract:
        """Load the contract and confirm it may run today; every refusal is audited."""
        return check.check_contract(self.context, contract_path, run_id=run_id)

    def recheck(
        self, contract_path: str | Path, sha256: str | None = None, *, run_id: str
    ) -> Contract:
        """The contract as checked at the start of this run, and still runnable now."""
        return check.recheck_contract(self.context, contract_path, sha256, run_id=run_id)

    # -- prepare ------------------------------------------------------------------------------

    def resolve_source(self, contract: Contract, source: str | Path | Source | None) -> Source:
        """The source to read: a file in EXCHANGE_SOURCE_DIR, or a named database connection."""
        return resolve(self.settings, self.secrets, contract, source, digest=False)[0]

    def prepare(
        self,
        contract: Contract,
        source: str | Path | Source | None,
        *,
        run_id: str,
        extra: Mapping[str, Any] | None = None,
        full_refresh: bool = False,
        triggered_by: str | None = None,
        advance_watermark: bool = True,
    ) -> Prepared:
        """Extract, minimise, guard, validate, encrypt and sign into a staged drop.

        With a shared staging store (EXCHANGE_STAGING) the verified drop is then moved there,
        so another worker can deliver it; a failure to publish is audited (stage `publish`)."""
        options = prepare.Options(extra, full_refresh, triggered_by, advance_watermark)
        prepared = prepare.prepare_drop(self.context, contract, source, run_id, options)
        if self.settings.staging_url:
            with stage(self.context, "publish", run_id, contract=contract):
                staging.publish(self.context, contract, run_id)
        return prepared

    def staging_for(self, drop_id: str) -> Path:
        """Where a drop is staged: derived from the run alone, never from task state."""
        return staging.staging_for(self.settings, drop_id)

    def staging_store(self) -> StagingStore | None:
        """The shared staging store (EXCHANGE_STAGING); None when drops stay in a local folder."""
        return staging.store_for(self.settings)

    def purge_staging(self, contract: Contract | None = None) -> list[str]:
        """Delete the staged drops of abandoned runs (EXCHANGE_STAGING_MAX_AGE_HOURS); drop ids."""
        contract_id = contract.id if contract is not None else None
        return staging.purge_expired(self.settings, self.clock(), contract_id=contract_id)

    # -- deliver ------------------------------------------------------------------------------

    def staged(self, contract: Contract, run_id: str) -> Prepared:
        """The drop this run staged, verified before anything of it leaves the gateway."""
        return staging.staged(self.context, contract, run_id)

    def deliver(self, contract: Contract, run_id: str) -> Delivery:
        """Verify the run's staged drop, re-check the agreement, send; then purge and record."""
        return deliver.deliver_drop(self.context, contract, run_id)

    def run(
        self,
        contract_path: str | Path,
        source: str | Path | None,
        *,
        run_id: str | None = None,
        full_refresh: bool = False,
    ) -> RunResult:
        """One whole exchange: check, prepare, deliver; a run already delivered is not redone."""
        return run.run_exchange(
            self.context, contract_path, source, run_id=run_id, full_refresh=full_refresh
        )

    # -- operations ---------------------------------------------------------------------------

    def collect_acks(self, contract: Contract) -> tuple[int, int]:
        """Record the partner's signed acknowledgements; returns (received, overdue)."""
        return acks.record_acks(self.context, contract)

    def watermark(self, contract: Contract) -> dt.datetime | None:
        """The newest last-updated time of the last delivered run (None: send everything)."""
        return incremental.watermark(self.ledger, contract)

    def rectify(
        self,
        subject_id: str,
        *,
        fields: Sequence[str],
        reason: str,
        contracts_dir: Path | None = None,
        source: str | Path | None = None,
    ) -> list[tuple[str, str, str]]:
        """Send every recipient of this person a correction notice; (contract, recipient, drop)."""
        correction = rectify.Correction(fields, reason)
        return rectify.rectify(self.context, subject_id, correction, contracts_dir, source)

    def expire_drops(self, contract: Contract) -> list[str]:
        """Remove this contract's drops past retention from the partner's inbox; audited."""
        return retention.expire_drops(self.context, contract)
