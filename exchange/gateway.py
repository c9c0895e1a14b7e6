"""The exchange, stage by stage: check -> prepare (extract, minimise, guard, validate, encrypt,
sign) -> deliver. The CLI runs the stages in one go; each DAG task runs one of them. Every stage
writes its own audit entries, refusals and failures included, so both paths leave the same trail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import re
import secrets as random
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from exchange import guard, manifest, payload, transforms
from exchange.acks import RejectedAck, collect_acks
from exchange.approval import Governance
from exchange.audit import Disclosure, Disclosures, Ledger
from exchange.audit.anchor import anchor_folder
from exchange.contract import Contract, load_contract
from exchange.crypto import age, signing
from exchange.crypto.streams import HashingWriter
from exchange.errors import (
    ContractError,
    CryptoError,
    ExchangeError,
    HostKeyRejected,
    NotRunnable,
    Problem,
    QualityFailed,
    Refused,
    Retryable,
    SourceError,
)
from exchange.files import open_private, private_dir, write_private
from exchange.incidents import Incident, Notifier, notifiers_from_env, raise_incident
from exchange.minimise import Minimiser, source_types
from exchange.quality import QualityGate, compile_rules
from exchange.secrets import LocalSecrets, SecretMissing, SecretStore, SftpConnection
from exchange.settings import Settings
from exchange.sources import Source, check_columns, open_source
from exchange.sources.subset import ChangedSince, OnlySubjects
from exchange.transport import Delivery, SftpTransport, Transport
from exchange.transport.retry import Attempt
from exchange.transport.sftp import remove_expired
from exchange.types import arrow_type


@dataclass(frozen=True)
class Prepared:
    """A drop staged as ciphertext, ready to deliver: ids and counts only, never a path.

    It may travel through XCom, which Airflow users can edit, so delivery never trusts it: the
    staged drop is found from the run and verified afresh (`Gateway.deliver`)."""

    run_id: str
    drop_id: str
    contract_id: str
    rows_read: int
    rows_sent: int
    excluded: dict[str, int]
    payload_sha256: str
    objections_overridden: int = 0
    watermark: str | None = None  # the newest last-updated time read; advanced on delivery
    rows_unchanged: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Prepared:
        """Inverse of to_dict."""
        return cls(**value)


@dataclass(frozen=True)
class RunResult:
    """What one exchange did, for people and logs (counts and ids only)."""

    run_id: str
    drop_id: str
    rows_read: int
    rows_sent: int
    excluded: dict[str, int]
    remote_path: str
    already_delivered: bool
    objections_overridden: int = 0


DISCLOSURE_KEY = "disclosure-key"  # the secret that keys the disclosure ledger's subject hashes


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id(now: dt.datetime) -> str:
    """A run id for a run started by hand."""
    return f"cli-{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RUN_ID_MAX = 250


def drop_id_for(contract_id: str, run_id: str) -> str:
    """The drop's name: fixed by the run, so re-running a run never makes a second drop."""
    if not SAFE_ID.fullmatch(contract_id) or ".." in contract_id:
        raise NotRunnable(f"contract id {contract_id!r} is not a safe name", reason="unsafe-id")
    if not run_id or len(run_id) > RUN_ID_MAX or not run_id.isprintable():
        raise NotRunnable("the run id is empty, too long or not printable", reason="unsafe-id")
    digest = hashlib.sha256(f"{contract_id}\n{run_id}".encode()).hexdigest()[:16]
    return f"{contract_id}-{digest}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _os_user() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        return "os:unknown"


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, Refused | HostKeyRejected):
        return "refused"
    return "failed"


class Gateway:
    """Runs exchanges for the contracts it is given, recording everything in the ledger."""

    def __init__(
        self,
        settings: Settings,
        *,
        secrets: SecretStore | None = None,
        ledger: Ledger | None = None,
        transport_for: Callable[[SftpConnection, Sequence[str]], Transport] = SftpTransport,
        clock: Callable[[], dt.datetime] = _utcnow,
        notifiers: Sequence[Notifier] | None = None,
    ) -> None:
        self.settings = settings
        self._disclosures: Disclosures | None = None
        try:
            self.notifiers = list(notifiers_from_env() if notifiers is None else notifiers)
        except ValueError as exc:
            raise ExchangeError(f"incident notification settings: {exc}") from None
        private_dir(settings.home)
        self.secrets = secrets or LocalSecrets(settings.secrets_file)
        self.ledger = ledger or Ledger(
            settings.audit_url, clock=clock, anchor=anchor_folder(settings.home)
        )
        self.transport_for = transport_for
        self.clock = clock

    @classmethod
    def from_env(cls) -> Gateway:
        """A gateway configured from EXCHANGE_* environment variables."""
        return cls(Settings.from_env())

    # -- check ------------------------------------------------------------------------------

    def governance(self) -> Governance:
        """The trust anchor and the suspensions; read afresh so a change takes effect at once."""
        return Governance.from_settings(self.settings, self.ledger)

    def contract_file(self, contract: str | Path) -> Path:
        """A contract file inside the configured contracts folder, by path or by id.

        Contracts run only from that folder: a copy elsewhere, however approved, does not run."""
        folder = self.settings.contracts.resolve()
        given = Path(contract)
        if given.suffix not in (".yaml", ".yml") and SAFE_ID.fullmatch(str(contract)):
            given = folder / f"{contract}.yaml"
        path = (given if given.is_absolute() else Path.cwd() / given).resolve()
        if not path.is_relative_to(folder):
            raise NotRunnable(
                f"contract {given.name} is not in the configured contracts folder {folder} "
                "(EXCHANGE_CONTRACTS): contracts run only from there",
                reason="outside-contracts-folder",
            )
        if not path.is_file():
            raise ContractError([Problem(str(given), "", "no such contract file")])
        return path

    def check(self, contract_path: str | Path, *, run_id: str) -> Contract:
        """Load the contract and confirm it may run today; every refusal is audited."""
        name = Path(contract_path).name
        with self._audited("check", None, run_id):
            try:
                path = self.contract_file(contract_path)
                contract = load_contract(path)
                compile_rules(contract)  # a rule that cannot be enforced refuses the run here
            except ContractError as exc:
                self.ledger.append(
                    "run.refused",
                    {
                        "reason": "contract-invalid",
                        "file": name,
                        "problems": [str(p) for p in exc.problems][:50],
                    },
                    run_id=run_id,
                )
                self._incident("policy-refusal", f"contract {name} is invalid", None, run_id)
                raise
            except NotRunnable as exc:
                self.ledger.append(
                    "run.refused",
                    {"reason": exc.reason, "file": name, "message": str(exc), "stage": "check"},
                    run_id=run_id,
                )
                self._incident("policy-refusal", f"check: {exc}", None, run_id)
                raise
            approval = self._runnable(contract, run_id, stage="check")
            self.ledger.append(
                "contract.checked",
                {
                    **self._contract_facts(contract),
                    "approval": {
                        "approver": approval.approver,
                        "approved_at": approval.approved_at,
                        "review_by": approval.review_by,
                    },
                },
                run_id=run_id,
                contract_id=contract.id,
            )
        return contract

    def recheck(
        self, contract_path: str | Path, sha256: str | None = None, *, run_id: str
    ) -> Contract:
        """The contract as checked at the start of this run, and still runnable now.

        Every task and retry calls this: a suspension, revocation or review date that falls
        between tasks stops the run before the next one does anything. The version checked at
        the start is taken from the ledger, not from task state (`sha256`, if given, must agree)."""
        with self._audited("recheck", None, run_id):
            contract = load_contract(self.contract_file(contract_path))
            checked = self.ledger.find("contract.checked", run_id=run_id, contract_id=contract.id)
            expected = checked.data.get("sha256") if checked else None
            if expected is None or contract.sha256 != expected or sha256 not in (None, expected):
                exc = NotRunnable(
                    f"contract {contract.id} changed during the run, or this run never checked it",
                    reason="changed-during-run",
                )
                self._refused(contract, run_id, exc, stage="recheck")
                raise exc
            self._runnable(contract, run_id, stage="recheck")
        return contract

    def _runnable(self, contract: Contract, run_id: str, *, stage: str) -> Any:
        try:
            return self.governance().check(contract, self.clock().date())
        except NotRunnable as exc:
            self._refused(contract, run_id, exc, stage=stage)
            raise

    @contextlib.contextmanager
    def _audited(self, stage: str, contract_id: str | None, run_id: str) -> Iterator[None]:
        """Record a failure the stage did not expect (a bug, a full disk), then let it rise.

        Expected errors are audited where they happen; this catches only the rest, and records
        the error's type, never its message (which could hold a value from a row)."""
        try:
            yield
        except ExchangeError:
            raise
        except Exception as exc:
            self.ledger.append(
                "run.failed",
                {
                    "stage": stage,
                    "outcome": "failed",
                    "reason": "unexpected-error",
                    "error": type(exc).__name__,
                },
                run_id=run_id,
                contract_id=contract_id,
            )
            self._incident(
                "run-failed", f"{stage}: unexpected {type(exc).__name__}", contract_id, run_id
            )
            raise

    # -- prepare ------------------------------------------------------------------------------

    def resolve_source(self, contract: Contract, source: str | Path | Source | None) -> Source:
        """The source to read: a file in EXCHANGE_SOURCE_DIR, or a named database connection.

        `None` means the contract's physicalName in the source folder; a file name or path must
        resolve inside that folder; `postgres:NAME` names a connection in the secrets store (URL,
        password and optional query stay there). Nothing else: a source is never taken from a
        DAG param or the command line beyond choosing among what the operator configured."""
        return self._resolve(contract, source)[0]

    def _resolve(
        self, contract: Contract, source: str | Path | Source | None
    ) -> tuple[Source, dict[str, Any]]:
        """The source and what exactly it is (for the ledger: path and digest, or query digest)."""
        if source is not None and not isinstance(source, str | Path):
            return source, {"kind": "given", "name": source.name}
        if isinstance(source, str) and source.startswith("postgres:"):
            from exchange.sources.postgres import PostgresSource

            name = source.removeprefix("postgres:")
            database = self.secrets.database_connection(name)
            described: dict[str, Any] = {"kind": "database", "connection": name}
            if database.query:
                described["query_sha256"] = hashlib.sha256(database.query.encode()).hexdigest()
                pg = PostgresSource(database.url, query=database.query, password=database.password)
            else:
                described["table"] = contract.source_name
                pg = PostgresSource(
                    database.url, table=contract.source_name, password=database.password
                )
            return pg, described
        if isinstance(source, str) and "://" in source:
            raise SourceError(
                "a database source is named, not given as a URL: add it to the secrets store "
                "and use --source postgres:NAME (see docs/operators.md)"
            )
        folder = self.settings.source_dir
        if folder is None:
            raise SourceError("EXCHANGE_SOURCE_DIR is not set: sources are read only from there")
        folder = folder.resolve()
        if source is None:
            matches = sorted(folder.glob(f"{contract.source_name}.*"))
            if not matches:
                raise SourceError(f"no file named {contract.source_name}.* in {folder}")
            source = matches[0]
        given = Path(source)
        path = (given if given.is_absolute() else folder / given).resolve()
        if not path.is_relative_to(folder) or path == folder:
            raise SourceError(
                f"source {given.name} is outside the source folder {folder} "
                "(EXCHANGE_SOURCE_DIR): sources are read only from there"
            )
        opened = open_source(path)
        if not path.is_file():
            raise SourceError(f"source {given.name} does not exist in {folder}")
        return opened, {"kind": "file", "path": str(path), "sha256": _file_sha256(path)}

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

        `extra` adds top-level keys to the manifest (a correction notice's `correction`);
        `triggered_by` names who started the run (an Airflow user, or the OS user of the CLI)."""
        started = self.clock()
        drop_id = drop_id_for(contract.id, run_id)
        staging = self.staging_for(drop_id)
        shutil.rmtree(staging, ignore_errors=True)  # a retried run starts its staging afresh
        private_dir(staging)
        try:
            with self._audited("prepare", contract.id, run_id):
                return self._prepare(
                    contract,
                    source,
                    run_id,
                    drop_id,
                    staging,
                    started,
                    extra,
                    full_refresh,
                    triggered_by or _os_user(),
                    advance_watermark,
                )
        except ExchangeError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            self._discard_disclosures(drop_id)
            if isinstance(exc, QualityFailed):
                self._quarantine_report(contract, run_id, drop_id, exc)
            self._refused(contract, run_id, exc, stage="prepare")
            raise
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            self._discard_disclosures(drop_id)
            raise

    def staging_for(self, drop_id: str) -> Path:
        """Where a drop is staged: derived from the run alone, never from task state."""
        root = private_dir(self.settings.staging)
        if root.is_symlink():
            raise NotRunnable(f"staging folder {root} is a symbolic link", reason="unsafe-path")
        return root / drop_id

    def _prepare(
        self,
        contract: Contract,
        source_arg: str | Path | Source | None,
        run_id: str,
        drop_id: str,
        staging: Path,
        started: dt.datetime,
        extra: Mapping[str, Any] | None,
        full_refresh: bool,
        triggered_by: str,
        advance_watermark: bool,
    ) -> Prepared:
        signing_key = signing.load_private_key(self.settings.signing_key)  # fail before the work
        disclosures = self.disclosures()
        source, provenance = self._resolve(contract, source_arg)
        changed = None
        if contract.incremental_column:
            since = None if full_refresh else self.watermark(contract)
            source = changed = ChangedSince(source, contract.incremental_column, since)
        types = source_types(contract)
        unread = check_columns(source, list(types))
        key = None
        if contract.pseudonymisation_key:
            key = self.secrets.secret(contract.pseudonymisation_key)
            if len(key) < transforms.MIN_KEY_BYTES:
                raise SecretMissing(
                    f"secret {contract.pseudonymisation_key!r} is shorter than "
                    f"{transforms.MIN_KEY_BYTES} bytes: generate a new random key"
                )
        objecting = None
        if contract.objections.list:
            # A named list that cannot be read stops the run: never send as if nobody objected.
            try:
                text = self.secrets.secret(contract.objections.list).decode("utf-8")
            except UnicodeDecodeError:
                raise SecretMissing(
                    f"objection list {contract.objections.list!r} is not UTF-8 text"
                ) from None
            objecting = {line.strip() for line in text.splitlines() if line.strip()}
        minimise = Minimiser(
            contract, pseudonym_key=key, today=started.date(), objecting_ids=objecting
        )
        subjects: list[pa.Array] = []
        quality = QualityGate(contract)
        schema = pa.schema([pa.field(f.name, arrow_type(f.logical_type)) for f in contract.fields])
        fmt = contract.endpoint.format

        def validated() -> Iterator[pa.RecordBatch]:
            for batch in source.batches(types):
                out = minimise(batch)
                guard.check(out.schema, contract)  # before anything is encoded or written
                subjects.append(minimise.last_subjects)
                yield from quality.add(out.cast(schema))
            yield from quality.finish()

        payload_name = manifest.payload_name(fmt)
        with open_private(staging / payload_name) as handle:
            sink = HashingWriter(handle)
            age.encrypt_chunks(
                payload.encode(validated(), fmt, schema), sink, contract.recipient_keys
            )
        tally = minimise.tally
        recorded = disclosures.record(
            Disclosure(
                drop_id,
                contract.id,
                contract.version,
                contract.recipient.organisation,
                contract.purposes,
                contract.legal_basis.summary(),
                contract.field_names,
                sent_at=None,
                run_id=run_id,
            ),
            subjects,
        )
        head_seq, head_hash = self.ledger.head()
        checkpoint = self.ledger.checkpoint(
            signing_key, self.settings.checkpoint_origin(signing.key_id(signing_key.public_key()))
        )
        body = {
            "manifest_version": manifest.MANIFEST_VERSION,
            "drop_id": drop_id,
            "run_id": run_id,
            "created_at": self.clock().isoformat(timespec="seconds"),
            "contract": self._contract_facts(contract),
            "fields": [
                {
                    "name": f.name,
                    "type": f.logical_type,
                    "transform": f.transform,
                    **({"options": dict(f.transform_options)} if f.transform_options else {}),
                }
                for f in contract.fields
            ],
            "rows": {
                "read": tally.read,
                "excluded": dict(tally.excluded),
                "objections_overridden": tally.objections_overridden,
                "sent": tally.sent,
            },
            "payload": manifest.Payload(
                name=payload_name,
                format=fmt,
                size=sink.size,
                sha256=sink.sha256,
                cipher=age.NAME,
                recipients=contract.recipient_keys,
            ).as_dict(),
            "sender": {"key_id": signing.key_id(signing_key.public_key())},
            **({"pseudonymisation": {"key_id": transforms.key_id(key)}} if key else {}),
            **dict(extra or {}),
            "ledger": {"seq": head_seq, "hash": head_hash, "checkpoint": checkpoint.note},
        }
        document = manifest.to_bytes(body)
        write_private(staging / manifest.MANIFEST_NAME, document)
        write_private(staging / manifest.SIGNATURE_NAME, signing.sign(signing_key, document))
        watermark = changed.newest.isoformat() if changed and changed.newest else None
        prepared = Prepared(
            run_id=run_id,
            drop_id=drop_id,
            contract_id=contract.id,
            rows_read=tally.read,
            rows_sent=tally.sent,
            excluded=dict(tally.excluded),
            objections_overridden=tally.objections_overridden,
            payload_sha256=sink.sha256,
            watermark=watermark if advance_watermark else None,
            rows_unchanged=changed.unchanged if changed else 0,
        )
        self.ledger.append(
            "run.prepared",
            {
                "drop_id": drop_id,
                "source": provenance,
                "triggered_by": triggered_by,
                "source_columns_not_read": unread,
                "rows": body["rows"],
                "disclosures": recorded.as_dict(),
                **(
                    {
                        "incremental": {
                            "since": changed.since.isoformat() if changed.since else None,
                            "watermark": prepared.watermark,
                            "rows_unchanged": changed.unchanged,
                            "full_refresh": full_refresh,
                        }
                    }
                    if changed
                    else {}
                ),
                "validation": {"outcome": "passed", "rules": len(quality.rules)},
                "payload": {"sha256": sink.sha256, "size": sink.size, "format": fmt},
                "manifest_sha256": hashlib.sha256(document).hexdigest(),
                "started_at": started.isoformat(timespec="seconds"),
            },
            run_id=run_id,
            contract_id=contract.id,
        )
        return prepared

    # -- deliver ------------------------------------------------------------------------------

    def staged(self, contract: Contract, run_id: str) -> Prepared:
        """The drop this run staged, verified before anything of it leaves the gateway.

        Its folder is derived from the contract and run (never from task state); it must hold
        exactly a manifest, its signature and the payload; the manifest must verify under the
        gateway's own key, name this contract version, run and drop, match the ledger's record of
        this run's prepare, and give the payload's exact size and SHA-256."""
        drop_id = drop_id_for(contract.id, run_id)
        folder = self.staging_for(drop_id)

        def refuse(why: str) -> NotRunnable:
            return NotRunnable(
                f"staged drop {drop_id} {why}: prepare the run again", reason="staging-invalid"
            )

        try:
            info = folder.lstat()
        except FileNotFoundError:
            raise refuse("does not exist") from None
        if not stat.S_ISDIR(info.st_mode):
            raise refuse("is not a folder")
        try:
            document = (folder / manifest.MANIFEST_NAME).read_bytes()
            signature = (folder / manifest.SIGNATURE_NAME).read_bytes()
        except OSError:
            raise refuse("has no manifest or signature") from None
        key = signing.load_private_key(self.settings.signing_key).public_key()
        try:
            signing.verify(key, document, signature)
            body = manifest.from_bytes(document)
        except (CryptoError, ValueError):
            raise refuse("has a manifest that does not verify under the gateway's key") from None
        facts = body.get("contract") or {}
        expected_payload = manifest.payload_name(contract.endpoint.format)
        info_payload = body.get("payload") or {}
        if (
            body.get("drop_id") != drop_id
            or body.get("run_id") != run_id
            or facts.get("id") != contract.id
            or facts.get("sha256") != contract.sha256
            or info_payload.get("name") != expected_payload
        ):
            raise refuse("belongs to another run, contract version or format")
        names = {p.name for p in folder.iterdir()}
        wanted = {manifest.MANIFEST_NAME, manifest.SIGNATURE_NAME, expected_payload}
        if names != wanted:
            raise refuse("holds other files than its manifest, signature and payload")
        data = folder / expected_payload
        if data.is_symlink() or not data.is_file():
            raise refuse("has a payload that is not a regular file")
        if data.stat().st_size != info_payload.get("size") or _file_sha256(
            data
        ) != info_payload.get("sha256"):
            raise refuse("has a payload whose size or SHA-256 differs from its manifest")
        record = self.ledger.find("run.prepared", run_id=run_id, contract_id=contract.id)
        manifest_sha256 = hashlib.sha256(document).hexdigest()
        if record is None or record.data.get("manifest_sha256") != manifest_sha256:
            raise refuse("is not the one this run recorded in the ledger")
        rows = body.get("rows") or {}
        incremental = record.data.get("incremental") or {}
        return Prepared(
            run_id=run_id,
            drop_id=drop_id,
            contract_id=contract.id,
            rows_read=int(rows.get("read", 0)),
            rows_sent=int(rows.get("sent", 0)),
            excluded=dict(rows.get("excluded") or {}),
            payload_sha256=str(info_payload["sha256"]),
            objections_overridden=int(rows.get("objections_overridden", 0)),
            watermark=incremental.get("watermark"),
            rows_unchanged=int(incremental.get("rows_unchanged", 0)),
        )

    def deliver(self, contract: Contract, run_id: str) -> Delivery:
        """Verify the run's staged drop, re-check the agreement, send; then purge and record."""
        try:
            with self._audited("deliver", contract.id, run_id):
                prepared = self.staged(contract, run_id)
                self._runnable(contract, run_id, stage="deliver")  # right before upload
        except NotRunnable as exc:
            if exc.reason == "staging-invalid":
                self._refused(contract, run_id, exc, stage="deliver")
            raise
        with self._audited("deliver", contract.id, run_id):
            return self._deliver(contract, prepared, self.staging_for(prepared.drop_id))

    def _deliver(self, contract: Contract, prepared: Prepared, staging: Path) -> Delivery:
        started = self.clock()
        base = {
            "drop_id": prepared.drop_id,
            "recipient": contract.recipient.organisation,
            "server": contract.endpoint.server,
        }
        attempts: list[Attempt] = []

        def attempted(attempt: Attempt) -> None:
            attempts.append(attempt)
            if not attempt.ok:
                self.ledger.append(
                    "transfer.attempt",
                    {**base, **attempt.as_dict()},
                    run_id=prepared.run_id,
                    contract_id=contract.id,
                )

        try:
            connection = self.secrets.sftp_connection(contract.endpoint.connection)
            transport = self.transport_for(connection, contract.endpoint.host_keys)
            delivery = transport.deliver(
                staging, contract.endpoint.folder, prepared.drop_id, on_attempt=attempted
            )
        except ExchangeError as exc:
            self.ledger.append(
                "transfer.failed",
                {
                    **base,
                    "outcome": _outcome(exc),
                    "error": type(exc).__name__,
                    "message": str(exc),
                    "retryable": isinstance(exc, Retryable),
                    "security_event": isinstance(exc, HostKeyRejected),
                    "attempts": len(attempts),
                },
                run_id=prepared.run_id,
                contract_id=contract.id,
            )
            if isinstance(exc, HostKeyRejected):
                self._incident("host-key-changed", str(exc), contract.id, prepared.run_id)
            else:  # transient faults were retried by the transport before this
                self._incident("delivery-failed", str(exc), contract.id, prepared.run_id)
            raise
        manifest_sha256 = hashlib.sha256(
            (staging / manifest.MANIFEST_NAME).read_bytes()
        ).hexdigest()
        shutil.rmtree(staging, ignore_errors=True)  # the ciphertext has arrived: purge it
        finished = self.clock()
        self.disclosures().mark_sent(prepared.drop_id, finished)
        self.ledger.append(
            "transfer.sent",
            {
                **base,
                **self._contract_facts(contract),
                "fields_sent": list(contract.field_names),
                "rows": {
                    "read": prepared.rows_read,
                    "excluded": prepared.excluded,
                    "objections_overridden": prepared.objections_overridden,
                    "sent": prepared.rows_sent,
                },
                "validation": "passed",
                "payload_sha256": prepared.payload_sha256,
                "manifest_sha256": manifest_sha256,
                "watermark": prepared.watermark,
                "remote_path": delivery.remote_path,
                "bytes": delivery.bytes,
                "already_delivered": delivery.already_delivered,
                "attempts": len(delivery.attempts) or len(attempts),
                "rename": delivery.rename,
                "outcome": "sent",
                "started_at": started.isoformat(timespec="seconds"),
                "finished_at": finished.isoformat(timespec="seconds"),
            },
            run_id=prepared.run_id,
            contract_id=contract.id,
        )
        return delivery

    # -- all stages ---------------------------------------------------------------------------

    def run(
        self,
        contract_path: str | Path,
        source: str | Path | None,
        *,
        run_id: str | None = None,
        full_refresh: bool = False,
    ) -> RunResult:
        """One whole exchange: check, prepare, deliver; a run already delivered is not redone."""
        run_id = run_id or new_run_id(self.clock())
        contract = self.check(contract_path, run_id=run_id)
        earlier = self.ledger.find("transfer.sent", run_id=run_id, contract_id=contract.id)
        if earlier is not None:
            sent = earlier.data
            return RunResult(
                run_id,
                sent["drop_id"],
                sent["rows"]["read"],
                sent["rows"]["sent"],
                sent["rows"]["excluded"],
                sent["remote_path"],
                already_delivered=True,
                objections_overridden=sent["rows"].get("objections_overridden", 0),
            )
        prepared = self.prepare(contract, source, run_id=run_id, full_refresh=full_refresh)
        delivery = self.deliver(contract, run_id)
        return RunResult(
            run_id,
            prepared.drop_id,
            prepared.rows_read,
            prepared.rows_sent,
            prepared.excluded,
            delivery.remote_path,
            delivery.already_delivered,
            prepared.objections_overridden,
        )

    # -- acknowledgements ---------------------------------------------------------------------

    def collect_acks(self, contract: Contract) -> tuple[int, int]:
        """Record the partner's signed acknowledgements of this contract's drops, and raise an
        incident for each drop not acknowledged by the deadline. Returns (received, overdue)."""
        terms = contract.acknowledgements
        if not terms:
            raise NotRunnable(f"contract {contract.id} names no acknowledgements folder")
        sent, acked, overdue_noted = {}, set(), set()
        for entry in self.ledger.entries():
            if entry.contract_id != contract.id:
                continue
            if entry.event == "transfer.sent" and "manifest_sha256" in entry.data:
                sent[entry.data["drop_id"]] = (entry.data["manifest_sha256"], entry)
            elif entry.event == "ack.received":
                acked.add(entry.data["drop_id"])
            elif entry.event == "ack.overdue":
                overdue_noted.add(entry.data["drop_id"])
        waiting = {d: sha for d, (sha, _) in sent.items() if d not in acked}
        keys = [load_ssh_public_key(line.encode()) for line in terms["partnerKeys"]]
        connection = self.secrets.sftp_connection(contract.endpoint.connection)
        transport = self.transport_for(connection, contract.endpoint.host_keys)

        def rejected(ack: RejectedAck) -> None:
            self.ledger.append(
                "ack.rejected",
                {
                    "file": ack.name,
                    "reason": ack.reason,
                    "key_id": ack.key_id,
                    "security_event": True,
                },
                contract_id=contract.id,
            )

        with transport.session() as sftp:  # type: ignore[attr-defined]
            found = collect_acks(
                sftp,
                terms["folder"],
                keys,  # type: ignore[arg-type]
                expected=waiting,
                on_rejected=rejected,
            )
        for ack in found:
            rows_sent = sent[ack.drop_id][1].data["rows"]["sent"]
            self.ledger.append(
                "ack.received",
                {
                    "drop_id": ack.drop_id,
                    "manifest_sha256": ack.manifest_sha256,
                    "rows": ack.rows,
                    "rows_match": ack.rows == rows_sent,
                    "received_at": ack.received_at,
                    "key_id": ack.key_id,
                    "ledger": ack.body.get("ledger"),
                },
                run_id=sent[ack.drop_id][1].run_id,
                contract_id=contract.id,
            )
            waiting.pop(ack.drop_id, None)
        deadline = self.clock() - dt.timedelta(hours=float(terms["deadlineHours"]))
        overdue = 0
        for drop_id in waiting:
            entry = sent[drop_id][1]
            if drop_id in overdue_noted or dt.datetime.fromisoformat(entry.recorded_at) > deadline:
                continue
            overdue += 1
            self.ledger.append(
                "ack.overdue", {"drop_id": drop_id}, run_id=entry.run_id, contract_id=contract.id
            )
            self._incident(
                "unacknowledged-drop",
                f"drop {drop_id} not acknowledged within {terms['deadlineHours']} hours",
                contract.id,
                entry.run_id or "",
            )
        return len(found), overdue

    # -- incremental extracts -----------------------------------------------------------------

    def watermark(self, contract: Contract) -> dt.datetime | None:
        """The newest last-updated time of the last delivered run (None: send everything)."""
        latest = None
        for entry in self.ledger.entries():
            if entry.event == "transfer.sent" and entry.contract_id == contract.id:
                latest = entry.data.get("watermark") or latest
        return dt.datetime.fromisoformat(latest) if latest else None

    # -- rectification ------------------------------------------------------------------------

    def rectify(
        self,
        subject_id: str,
        *,
        fields: Sequence[str],
        reason: str,
        contracts_dir: Path | None = None,
        source: str | Path | None = None,
    ) -> list[tuple[str, str, str]]:
        """Send every recipient that received this person a correction notice.

        Each notice is a drop like any other (encrypted, signed, audited, acknowledged): the
        person's row as the source holds it now, minimised under that agreement, with a
        `correction` manifest entry naming the corrected fields, the reason and the earlier
        drops it corrects. Returns (contract id, recipient, drop id) per notice."""
        if not reason.strip():
            raise ExchangeError("a correction needs a reason")
        earlier: dict[str, list[str]] = {}
        public_key = signing.load_private_key(self.settings.signing_key).public_key()
        found, _ = self.disclosures().verified_lookup(
            subject_id,
            self.ledger,
            public_key=public_key,
            origin=self.settings.checkpoint_origin(signing.key_id(public_key)),
        )
        for disclosure in found:  # a forged disclosure row cannot direct a correction
            earlier.setdefault(disclosure.contract_id, []).append(disclosure.drop_id)
        if not earlier:
            raise ExchangeError("no recorded disclosure about this subject: nobody to notify")
        contracts_dir = contracts_dir or self.settings.contracts
        by_id = {}
        for path in sorted(contracts_dir.glob("*.yaml")):
            try:
                by_id[load_contract(path).id] = path
            except ContractError:
                continue  # another agreement's file; its own runs report its problems
        # A random id: one derived from the person's id would let a recipient test guesses.
        run_id = f"rectify-{random.token_hex(8)}"
        sent = []
        for contract_id, drops in sorted(earlier.items()):
            if contract_id not in by_id:
                raise ExchangeError(f"contract {contract_id} is not in {contracts_dir}")
            contract = self.check(by_id[contract_id], run_id=run_id)
            unknown = [f for f in fields if f not in contract.field_names]
            if unknown:
                raise ExchangeError(f"{contract_id} does not send field(s) {', '.join(unknown)}")
            subject = OnlySubjects(
                self.resolve_source(contract, source), contract.subject_key.source, [subject_id]
            )
            correction = {
                "fields": list(fields),
                "reason": reason.strip(),
                "corrects": sorted(drops),
            }
            # A notice carries the row whatever its last-updated time, and must not move an
            # incremental agreement's watermark.
            prepared = self.prepare(
                contract,
                subject,
                run_id=run_id,
                extra={"correction": correction},
                full_refresh=True,
                advance_watermark=False,
            )
            delivery = self.deliver(contract, run_id)
            self.ledger.append(
                "rectification.sent",
                {
                    **correction,
                    "drop_id": prepared.drop_id,
                    "recipient": contract.recipient.organisation,
                    "remote_path": delivery.remote_path,
                },
                run_id=run_id,
                contract_id=contract.id,
            )
            sent.append((contract.id, contract.recipient.organisation, prepared.drop_id))
        return sent

    # -- retention ----------------------------------------------------------------------------

    def expire_drops(self, contract: Contract) -> list[str]:
        """Remove this contract's drops older than its retention from the partner's inbox,
        where the agreement makes the sender manage it; each removal is audited."""
        if not contract.sender_manages_inbox:
            raise NotRunnable(f"contract {contract.id} does not let the sender manage the inbox")
        if contract.retention_days is None:
            raise NotRunnable(f"contract {contract.id}: retention {contract.retention!r} unknown")
        older_than = self.clock() - dt.timedelta(days=contract.retention_days)
        connection = self.secrets.sftp_connection(contract.endpoint.connection)
        transport = self.transport_for(connection, contract.endpoint.host_keys)
        with transport.session() as sftp:  # type: ignore[attr-defined]
            removed = remove_expired(
                sftp, contract.endpoint.folder, older_than, contract_id=contract.id
            )
        for drop_id in removed:
            self.ledger.append(
                "retention.removed",
                {
                    "drop_id": drop_id,
                    "retention": contract.retention,
                    "older_than": older_than.isoformat(timespec="seconds"),
                },
                contract_id=contract.id,
            )
        return removed

    # -- the disclosure ledger and checkpoints ---------------------------------------------

    def disclosures(self) -> Disclosures:
        """The disclosure ledger, keyed by the `disclosure-key` secret."""
        if self._disclosures is None:
            key = self.secrets.secret(DISCLOSURE_KEY)
            if len(key) < transforms.MIN_KEY_BYTES:
                raise SecretMissing(f"secret {DISCLOSURE_KEY!r} is shorter than 32 bytes")
            try:  # the key before the last rotation still finds older disclosures
                retired = [self.secrets.secret(f"{DISCLOSURE_KEY}-old")]
            except SecretMissing:
                retired = []
            self._disclosures = Disclosures(self.settings.audit_url, key, old_keys=retired)
        return self._disclosures

    def _discard_disclosures(self, drop_id: str) -> None:
        if self._disclosures is not None:
            self._disclosures.discard(drop_id)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _contract_facts(contract: Contract) -> dict[str, Any]:
        return {
            "id": contract.id,
            "version": contract.version,
            "sha256": contract.sha256,
            "purposes": list(contract.purposes),
            "legal_basis": contract.legal_basis.summary(),
            "provider": contract.provider.organisation,
            "recipient": contract.recipient.organisation,
        }

    def _refused(self, contract: Contract, run_id: str, exc: ExchangeError, *, stage: str) -> None:
        body: dict[str, Any] = {
            "stage": stage,
            "outcome": _outcome(exc),
            "reason": getattr(exc, "reason", type(exc).__name__),
            "error": type(exc).__name__,
            "message": str(exc),
            "contract_sha256": contract.sha256,
        }
        for attr in ("unexpected", "missing", "failures"):
            if getattr(exc, attr, None):
                body[attr] = list(getattr(exc, attr))
        event = "run.refused" if isinstance(exc, Refused) else "run.failed"
        self.ledger.append(event, body, run_id=run_id, contract_id=contract.id)
        if isinstance(exc, Refused):
            self._incident("policy-refusal", f"{stage}: {exc}", contract.id, run_id)

    def _incident(self, kind: str, summary: str, contract_id: str | None, run_id: str) -> None:
        raise_incident(self.ledger, Incident(kind, summary, contract_id, run_id), self.notifiers)

    def _quarantine_report(
        self, contract: Contract, run_id: str, drop_id: str, exc: QualityFailed
    ) -> None:
        report = {
            "run_id": run_id,
            "contract": contract.id,
            "failures": list(exc.failures),
            "at": self.clock().isoformat(timespec="seconds"),
        }
        path = private_dir(self.settings.quarantine) / f"{drop_id}.json"
        write_private(path, json.dumps(report, indent=2).encode(), overwrite=True)
