"""Stage 2, prepare: extract, minimise, guard, validate, encrypt and sign into a staged drop.

Data flows as Arrow record batches from the source to the encrypted file; plaintext never
reaches disk. On any failure the staging folder and the drop's disclosure rows are removed,
and a quality failure leaves a quarantine report (the boundary runs the undo steps).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import shutil
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from exchange import guard, manifest, payload, transforms
from exchange.audit import Disclosure, Disclosures, witness
from exchange.audit.disclosures import Recorded, SubjectHashes
from exchange.contract import Contract
from exchange.crypto import age, signing, sshsig
from exchange.crypto.streams import HashingWriter
from exchange.errors import QualityFailed
from exchange.files import open_private, private_dir, write_private
from exchange.minimise import Minimiser, source_types
from exchange.operations.incremental import watermark
from exchange.pipeline import events
from exchange.pipeline.boundary import Stage, stage
from exchange.pipeline.context import Context
from exchange.pipeline.naming import drop_id_for
from exchange.pipeline.overlap import background
from exchange.pipeline.results import Prepared
from exchange.pipeline.source import Provenance, resolve, settled
from exchange.pipeline.staging import staging_for
from exchange.quality import QualityGate
from exchange.secrets import SecretMissing
from exchange.sources import Source, check_columns
from exchange.sources.subset import ChangedSince
from exchange.types import arrow_type

# Source batches are gathered to about this size before they are minimised: the keyed hashes
# and compute kernels have a fixed cost per call (a CSV block is only ~6,500 rows), and a
# gathered batch is still a small part of a validation window (a window closes at 8 MiB, so
# it holds a few). 16,384 rows cost 11% more CPU per run than these; 65,536 a little
# less again, for 40-80 MB more (BENCHMARKS.md, tenth round).
GATHER_ROWS = 32_768
GATHER_BYTES = 4 << 20
# Minimised batches waiting to be validated: enough to keep reading while the validation
# worker imports Great Expectations (about 2.5 s from the command's start; with 16 MiB the
# reader stood still for 1.2-1.7 s of it at 1M rows, and it is the critical path after),
# and no more. The bytes bound holds memory flat when a source's rows (so its batches) are
# wide. Past the queue, the gate holds at most two windows.
QUEUE_BATCHES = 96
QUEUE_BYTES = 48 << 20
# Batches whose subject ids wait for the recorder thread to hash them (each a column of ids).
SUBJECT_BATCHES_AHEAD = 8


@dataclass(frozen=True)
class Extract:
    """What the run reads: the source, where it came from, and the columns read."""

    source: Source
    provenance: Provenance
    changed: ChangedSince | None  # the incremental filter, when the agreement has one
    types: dict[str, Any]
    unread: list[str]  # source columns the contract does not know


@dataclass(frozen=True)
class Options:
    """How to prepare: manifest extras, a full refresh, who triggered it, the watermark."""

    extra: Mapping[str, Any] | None = None  # top-level manifest keys (a notice's `correction`)
    full_refresh: bool = False  # ignore the incremental watermark
    triggered_by: str | None = None  # an Airflow user; the OS user of the CLI if None
    advance_watermark: bool = True  # False for a correction notice


def prepare_drop(
    ctx: Context,
    contract: Contract,
    source: str | Path | Source | None,
    run_id: str,
    options: Options = Options(),
) -> Prepared:
    """Stage the run's drop as signed ciphertext; every failure is cleaned up and audited.

    Raises Refused (guard, quality, not runnable), SourceError, SecretMissing, CryptoError."""
    # Unless EXCHANGE_VALIDATION_WORKER=0, Great Expectations validates in a worker process
    # (where it is not loaded in this one already): the one `exchange run` started as it began,
    # or one started now, so its import overlaps the reading below; it is stopped however the
    # stage ends. On two cores: 15-20% faster at 1M rows, more memory in all (BENCHMARKS.md).
    worker = None if ctx.settings.validation_worker else False
    with (
        stage(ctx, "prepare", run_id, contract=contract) as current,
        QualityGate(contract, pipelined=True, worker=worker) as quality,
    ):
        started = ctx.clock()
        drop_id = drop_id_for(contract.id, run_id)
        staging = _fresh_staging(ctx, current, contract, run_id, drop_id)
        signing_key = signing.load_private_key(ctx.settings.signing_key)  # fail before the work
        disclosures = ctx.disclosures()
        current.undo.append(lambda _: disclosures.discard(drop_id))
        read = _extract(ctx, contract, source, full_refresh=options.full_refresh)
        key = _pseudonym_key(ctx, contract)
        minimise = Minimiser(
            contract,
            pseudonym_key=key,
            today=started.date(),
            objecting_ids=_objecting(ctx, contract),
        )
        rules = len(quality.rules)
        subjects = disclosures.hashes()  # filled batch by batch, as the rows go out
        # A third thread hashes each batch's subjects (DataFusion, mostly off the GIL) and,
        # once the source is read, records them (not yet as sent) while the last windows are
        # validated and encrypted: one worker, so the recording follows the last hashing.
        recorder = ThreadPoolExecutor(1, thread_name_prefix="exchange-record")
        subjecting = _Subjecting(recorder, subjects)
        recording: list[Future[Recorded]] = []

        def record() -> None:
            subjecting.wait()  # every batch's subjects are hashed (or their error is raised)
            recording.append(
                recorder.submit(
                    _record_disclosures, disclosures, contract, run_id, drop_id, subjects
                )
            )

        try:
            written = _encrypt(contract, read, minimise, subjecting, quality, staging, record)
            recorded = recording[0].result()  # what the recording raised is raised here
        except BaseException as exc:
            recorder.shutdown()  # a recording under way ends before the stage undoes it
            if not isinstance(exc, Exception):  # an interrupt: the stage undoes only errors
                disclosures.discard(drop_id)
            raise
        finally:
            recorder.shutdown()
            subjects.close()  # its temporary file of hashes, if the drop had that many subjects
        tally = minimise.tally
        rows = {
            "read": tally.read,
            "excluded": dict(tally.excluded),
            "objections_overridden": tally.objections_overridden,
            "sent": tally.sent,
        }
        head_seq, head_hash = ctx.ledger.head()
        sender = signing.key_id(signing_key.public_key())
        checkpoint = ctx.ledger.checkpoint(signing_key, ctx.settings.checkpoint_origin(sender))
        document = manifest.to_bytes(
            manifest.build_manifest(
                contract,
                drop_id=drop_id,
                run_id=run_id,
                created_at=ctx.clock(),
                rows=rows,
                payload=written,
                sender_key_id=sender,
                ledger=witness.manifest_ledger(
                    ctx.ledger,
                    contract_id=contract.id,
                    recipient=contract.recipient.organisation,
                    drop_id=drop_id,
                    run_id=run_id,
                    head=(head_seq, head_hash),
                    checkpoint=checkpoint,
                ),
                pseudonym_key_id=transforms.key_id(key) if key else None,
                extra=options.extra,
                since=read.changed.since if read.changed else None,
            )
        )
        write_private(staging / manifest.MANIFEST_NAME, document)
        write_private(staging / manifest.SIGNATURE_NAME, signing.sign(signing_key, document))
        write_private(staging / manifest.SSH_SIGNATURE_NAME, sshsig.sign(signing_key, document))
        changed = read.changed
        newest = changed.newest.isoformat() if changed and changed.newest else None
        prepared = Prepared(
            run_id=run_id,
            drop_id=drop_id,
            contract_id=contract.id,
            rows_read=tally.read,
            rows_sent=tally.sent,
            excluded=dict(tally.excluded),
            objections_overridden=tally.objections_overridden,
            payload_sha256=written.sha256,
            watermark=newest if options.advance_watermark else None,
            rows_unchanged=changed.unchanged if changed else 0,
            since=changed.since.isoformat() if changed and changed.since else None,
        )
        body = {
            "drop_id": drop_id,
            "source": settled(read.provenance),
            "triggered_by": options.triggered_by or _os_user(),
            "source_columns_not_read": read.unread,
            "rows": rows,
            "disclosures": recorded.as_dict(),
            **_incremental(changed, prepared, options.full_refresh),
            "validation": {"outcome": "passed", "rules": rules},
            "payload": {"sha256": written.sha256, "size": written.size, "format": written.format},
            "manifest_sha256": hashlib.sha256(document).hexdigest(),
            "started_at": events.when(started),
        }
        ctx.ledger.append("run.prepared", body, run_id=run_id, contract_id=contract.id)
    return prepared


def _fresh_staging(
    ctx: Context, current: Stage, contract: Contract, run_id: str, drop_id: str
) -> Path:
    """An empty private staging folder for the drop, removed again if the stage fails."""
    staging = staging_for(ctx.settings, drop_id)
    shutil.rmtree(staging, ignore_errors=True)  # a retried run starts its staging afresh
    private_dir(staging)

    def undo(exc: BaseException) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, QualityFailed):
            _quarantine_report(ctx, contract, run_id, drop_id, exc)

    current.undo.append(undo)
    return staging


def _extract(
    ctx: Context, contract: Contract, source_arg: str | Path | Source | None, *, full_refresh: bool
) -> Extract:
    """Open the source (only the contract's columns), behind the incremental filter if any."""
    source, provenance = resolve(ctx.settings, ctx.secrets, contract, source_arg)
    changed = None
    if contract.incremental_column:
        since = None if full_refresh else watermark(ctx.ledger, contract)
        source = changed = ChangedSince(source, contract.incremental_column, since)
    types = source_types(contract)
    return Extract(source, provenance, changed, types, check_columns(source, list(types)))


def _pseudonym_key(ctx: Context, contract: Contract) -> bytes | None:
    """The agreement's pseudonymisation key. Raises SecretMissing if missing or short."""
    if not contract.pseudonymisation_key:
        return None
    key = ctx.secrets.secret(contract.pseudonymisation_key)
    if len(key) < transforms.MIN_KEY_BYTES:
        raise SecretMissing(
            f"secret {contract.pseudonymisation_key!r} is shorter than "
            f"{transforms.MIN_KEY_BYTES} bytes: generate a new random key"
        )
    return key


def _objecting(ctx: Context, contract: Contract) -> set[str] | None:
    """The ids on the agreement's objection list. Raises SecretMissing if it cannot be read."""
    if not contract.objections.list:
        return None
    # A named list that cannot be read stops the run: never send as if nobody objected.
    name = contract.objections.list
    try:  # "-sig": a byte-order mark (Notepad, Excel) is not part of the first id
        text = ctx.secrets.secret(name).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SecretMissing(f"objection list {name!r} is not UTF-8 text") from None
    ids = {line.strip() for line in text.splitlines() if line.strip()}
    # An invisible character (a zero-width space, a second byte-order mark) would make an id
    # match nobody, and the person's rows would be sent: refused, and no id is shown.
    if any(unicodedata.category(c) in ("Cc", "Cf") for i in ids for c in i):
        raise SecretMissing(
            f"objection list {name!r} holds an id with an invisible or control character: "
            "write each id alone on its line, in plain text"
        )
    return ids


def _encrypt(
    contract: Contract,
    read: Extract,
    minimise: Minimiser,
    subjecting: _Subjecting,
    quality: QualityGate,
    staging: Path,
    read_all: Callable[[], None],
) -> manifest.Payload:
    """Minimise, guard and validate each batch, and stream it encrypted into the staging folder;
    `read_all` is called on the producer thread once the last batch is read.

    The lines of work overlap: a background thread reads, minimises and guards each batch and
    takes its uniqueness hashes; the recorder thread hashes its subjects; Great Expectations
    validates each window (here, or in the gate's worker process); this thread encodes and
    encrypts a window's batches once its verdict is in (the very batches it was given, in
    order). A bounded queue and at most two windows held keep memory flat. Nothing is encoded,
    encrypted or written before its window's verdict."""
    schema = pa.schema([pa.field(f.name, arrow_type(f.logical_type)) for f in contract.fields])
    fmt = contract.endpoint.format

    def minimised() -> Iterator[_Minimised]:
        for batch in gathered(read.source.batches(read.types)):
            out = minimise(batch)
            guard.check(out.schema, contract)  # before anything is encoded or written
            subjecting.add(minimise.last_subjects)
            out = out.cast(schema)
            yield _Minimised(out, quality.key_hashes(out))
        read_all()

    def validated(items: Iterator[_Minimised]) -> Iterator[payload.Chunk]:
        encoder = payload.Encoder(fmt, schema)
        given: deque[pa.RecordBatch] = deque()  # the gate holds them anyway: no extra memory

        def passed(batches: list[pa.RecordBatch]) -> Iterator[payload.Chunk]:
            for batch in batches:  # the very batches given, in order, once their window passed
                if not given or given.popleft() is not batch:
                    raise RuntimeError("the quality gate released batches out of order")
                yield encoder.encode(batch)

        yield encoder.header()
        for item in items:
            given.append(item.batch)
            yield from passed(quality.add(item.batch, item.keys))
        yield from passed(quality.finish())
        if given:
            raise RuntimeError("the quality gate kept back batches of a run that passed")
        yield encoder.finish()

    name = manifest.payload_name(fmt)
    with (
        background(
            minimised, depth=QUEUE_BATCHES, weigh=_item_bytes, max_bytes=QUEUE_BYTES
        ) as items,
        open_private(staging / name) as handle,
    ):
        sink = HashingWriter(handle)
        age.encrypt_chunks(validated(items), sink, contract.recipient_keys)
    return manifest.Payload(
        name=name,
        format=fmt,
        size=sink.size,
        sha256=sink.sha256,
        cipher=age.NAME,
        recipients=contract.recipient_keys,
    )


def gathered(
    batches: Iterable[pa.RecordBatch], rows: int = GATHER_ROWS, size: int = GATHER_BYTES
) -> Iterator[pa.RecordBatch]:
    """The batches, consecutive ones joined until a batch has `rows` rows or `size` bytes
    (only batches of one schema are joined)."""
    waiting: list[pa.RecordBatch] = []
    count = nbytes = 0
    for batch in batches:
        if waiting and not batch.schema.equals(waiting[0].schema):
            yield _joined(waiting)
            waiting, count, nbytes = [], 0, 0
        waiting.append(batch)
        count += batch.num_rows
        nbytes += batch.nbytes
        if count >= rows or nbytes >= size:
            yield _joined(waiting)
            waiting, count, nbytes = [], 0, 0
    if waiting:
        yield _joined(waiting)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


@dataclass(frozen=True)
class _Minimised:
    """A batch as the producer hands it over: minimised, and its uniqueness hashes."""

    batch: pa.RecordBatch
    keys: dict[tuple[str, ...], np.ndarray]


def _item_bytes(item: _Minimised) -> int:
    return int(item.batch.nbytes) + sum(h.nbytes for h in item.keys.values())


class _Subjecting:
    """Hands each batch's subject ids to the recorder thread to be hashed into the drop's
    `SubjectHashes`, at most `SUBJECT_BATCHES_AHEAD` batches ahead; an error in the hashing is
    raised in the producer at its next batch (or by `wait`)."""

    def __init__(self, recorder: ThreadPoolExecutor, subjects: SubjectHashes) -> None:
        self._recorder = recorder
        self._subjects = subjects
        self._pending: deque[Future[None]] = deque()

    def add(self, ids: pa.Array | pa.ChunkedArray) -> None:
        while self._pending and (
            self._pending[0].done() or len(self._pending) >= SUBJECT_BATCHES_AHEAD
        ):
            self._pending.popleft().result()
        self._pending.append(self._recorder.submit(self._subjects.add, ids))

    def wait(self) -> None:
        """Until every batch handed over is hashed."""
        while self._pending:
            self._pending.popleft().result()


def _record_disclosures(
    disclosures: Disclosures,
    contract: Contract,
    run_id: str,
    drop_id: str,
    subjects: SubjectHashes,
) -> Recorded:
    """A keyed hash of each subject in the drop, in the disclosure ledger (not yet sent)."""
    return disclosures.record(
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


def _incremental(
    changed: ChangedSince | None, prepared: Prepared, full_refresh: bool
) -> dict[str, Any]:
    """The run.prepared entry's `incremental` part, for an incremental agreement."""
    if changed is None:
        return {}
    return {
        "incremental": {
            "since": changed.since.isoformat() if changed.since else None,
            "watermark": prepared.watermark,
            "rows_unchanged": changed.unchanged,
            "full_refresh": full_refresh,
        }
    }


def _os_user() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        return "os:unknown"


def _quarantine_report(
    ctx: Context, contract: Contract, run_id: str, drop_id: str, exc: QualityFailed
) -> None:
    """Why the batch was quarantined, for the data team (rule names and counts, no values)."""
    report = {
        "run_id": run_id,
        "contract": contract.id,
        "failures": list(exc.failures),
        "at": events.when(ctx.clock()),
    }
    path = private_dir(ctx.settings.quarantine) / f"{drop_id}.json"
    write_private(path, json.dumps(report, indent=2).encode(), overwrite=True)
