"""The gateway's behaviour end to end in milliseconds, against the in-memory partner server.

Every stage runs for real (contract check, minimise, guard, validate, encrypt, sign, ledger);
only the partner's server is `MemoryTransport`, with faults injected where a test says. The
real-sshd tests (test_delivery_faults, test_acks, test_exchange_cli) keep the SFTP edge honest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from conftest import FOLDER, Workspace

from exchange import acks, keys
from exchange.audit import Disclosures, Ledger
from exchange.audit.disclosures import SubjectHashes
from exchange.crypto import signing
from exchange.crypto.signing import load_private_key
from exchange.errors import (
    ConnectionLost,
    HostKeyRejected,
    LedgerError,
    NotRunnable,
    QualityFailed,
    TransferError,
)
from exchange.gateway import Gateway, drop_id_for
from exchange.manifest import MANIFEST_NAME
from exchange.pipeline import prepare
from exchange.quality import QualityGate
from exchange.receive import receive
from exchange.transport import open_transport
from exchange.transport.memory import Fault, MemoryServer, MemoryTransport

ACKS = "acks/attendance"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def server() -> MemoryServer:
    partner = MemoryServer()
    partner.makedirs(FOLDER)
    partner.makedirs(ACKS)
    return partner


def gateway(workspace: Workspace, transport: MemoryTransport) -> Gateway:
    """A gateway whose `sftp` servers are the in-memory one."""
    return Gateway(workspace.settings, transports={"sftp": lambda endpoint, secrets: transport})


def events(workspace: Workspace) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, e.data) for e in Ledger(workspace.settings.audit_url).entries()]


def named(workspace: Workspace, event: str) -> list[dict[str, Any]]:
    return [body for name, body in events(workspace) if name == event]


def drops(server: MemoryServer) -> list[str]:
    return server.names(FOLDER)


def download(server: MemoryServer, remote: str, into: Path) -> Path:
    """Copy a delivered drop out of the memory server, as a partner's sftp client would."""
    into.mkdir(parents=True)
    for name in server.names(remote):
        (into / name).write_bytes(server.read(f"{remote}/{name}"))
    return into


# -- delivery ------------------------------------------------------------------------------------


def test_a_run_delivers_one_whole_drop_the_partner_can_read(
    workspace: Workspace, server: MemoryServer, tmp_path: Path
) -> None:
    result = gateway(workspace, MemoryTransport(server)).run(
        workspace.contract, workspace.source(120), run_id="r1"
    )
    assert drops(server) == [result.drop_id] and not result.already_delivered
    assert result.remote_path == f"{FOLDER}/{result.drop_id}"
    assert server.names(result.remote_path) == [
        "data.csv.age",
        "manifest.json",
        "manifest.json.sig",
        "manifest.json.sshsig",
    ]
    got = receive(
        download(server, result.remote_path, tmp_path / "drop"),
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=tmp_path / "in",
    )
    assert got.rows == result.rows_sent > 0
    assert [e for e, _ in events(workspace)] == [
        "contract.checked",
        "run.prepared",
        "transfer.sent",
    ]
    (sent,) = named(workspace, "transfer.sent")
    assert sent["attempts"] == 1 and sent["rows"]["sent"] == result.rows_sent
    manifest = server.read(f"{result.remote_path}/{MANIFEST_NAME}")
    assert sent["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert not workspace.settings.staging.joinpath(result.drop_id).exists()  # purged


class Warming(MemoryTransport):
    """Tells when a run opens its block for a connection ahead, delivers, and leaves it."""

    def __init__(self, server: MemoryServer, workspace: Workspace) -> None:
        super().__init__(server)
        self.seen: list[str] = []
        self.workspace = workspace

    @contextmanager
    def warmed(self) -> Iterator[None]:
        self.seen.append("warmed")
        try:
            yield
        finally:
            self.seen.append("left")

    def deliver(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(f"deliver after {[e for e, _ in events(self.workspace)][-1]}")
        return super().deliver(*args, **kwargs)


def test_a_run_connects_ahead_while_it_prepares_and_delivers_inside(
    workspace: Workspace, server: MemoryServer
) -> None:
    transport = Warming(server, workspace)
    gateway(workspace, transport).run(workspace.contract, workspace.source(40), run_id="w")
    assert transport.seen == ["warmed", "deliver after run.prepared", "left"]
    refused = Warming(server, workspace)
    workspace.write_contract(
        lambda doc: doc["schema"][0]["quality"][0].update(mustBeBetween=[10**6, 10**7])
    )
    with pytest.raises(QualityFailed):
        gateway(workspace, refused).run(workspace.contract, workspace.source(20), run_id="x")
    assert refused.seen == ["warmed", "left"]


def test_a_transport_that_cannot_be_made_is_still_audited_by_the_deliver_stage(
    workspace: Workspace,
) -> None:
    """Asked for ahead of the prepare stage too, a factory's failure (a malformed connection
    secret, say) is met and recorded where it was before: in the deliver stage."""

    def broken(endpoint: Any, secrets: Any) -> MemoryTransport:
        raise ValueError("malformed connection")

    gw = Gateway(workspace.settings, transports={"sftp": broken})
    with pytest.raises(ValueError, match="malformed connection"):
        gw.run(workspace.contract, workspace.source(20), run_id="t")
    names = [e for e, _ in events(workspace)]
    assert names[:3] == ["contract.checked", "run.prepared", "run.failed"]
    assert named(workspace, "run.failed")[0]["stage"] == "deliver"


def test_rerunning_a_delivered_run_sends_nothing_again(
    workspace: Workspace, server: MemoryServer
) -> None:
    transport = MemoryTransport(server)
    first = gateway(workspace, transport).run(workspace.contract, workspace.source(30), run_id="r")
    again = gateway(workspace, transport).run(workspace.contract, workspace.source(30), run_id="r")
    assert again.already_delivered and again.drop_id == first.drop_id
    assert drops(server) == [first.drop_id] and transport.connections == 1
    assert len(named(workspace, "transfer.sent")) == 1


def test_a_drop_that_arrived_before_its_outcome_was_lost_is_reported_delivered_once(
    workspace: Workspace, server: MemoryServer
) -> None:
    gw = gateway(workspace, MemoryTransport(server))
    contract = gw.check(workspace.contract, run_id="lost")
    prepared = gw.prepare(contract, str(workspace.source(30)), run_id="lost")
    for path in gw.staging_for(prepared.drop_id).iterdir():  # it arrived; the reply did not
        server.put(f"{FOLDER}/{prepared.drop_id}/{path.name}", path.read_bytes())
    delivery = gw.deliver(contract, "lost")
    assert delivery.already_delivered and drops(server) == [prepared.drop_id]
    assert named(workspace, "transfer.sent")[0]["already_delivered"] is True


def test_a_planted_folder_of_the_drops_name_is_refused_not_reported_delivered(
    workspace: Workspace, server: MemoryServer
) -> None:
    gw = gateway(workspace, MemoryTransport(server))
    contract = gw.check(workspace.contract, run_id="planted")
    prepared = gw.prepare(contract, str(workspace.source(30)), run_id="planted")
    server.put(f"{FOLDER}/{prepared.drop_id}/{MANIFEST_NAME}", b'{"forged": true}')
    with pytest.raises(TransferError, match="refusing to report it delivered"):
        gw.deliver(contract, "planted")
    (failed,) = named(workspace, "transfer.failed")
    assert failed["outcome"] == "failed" and failed["retryable"] is False
    assert named(workspace, "incident")[-1]["kind"] == "delivery-failed"
    assert named(workspace, "transfer.sent") == []


# -- faults --------------------------------------------------------------------------------------


def test_a_connection_lost_on_the_first_attempt_is_retried_and_delivered_once(
    workspace: Workspace, server: MemoryServer
) -> None:
    transport = MemoryTransport(server, [Fault.connection_lost(on=1)])
    result = gateway(workspace, transport).run(workspace.contract, workspace.source(40))
    assert drops(server) == [result.drop_id]  # the partial upload of attempt 1 was replaced
    (attempt,) = named(workspace, "transfer.attempt")
    assert attempt["error"] == "ConnectionLost" and attempt["retryable"] is True
    assert named(workspace, "transfer.sent")[0]["attempts"] == 2
    assert transport.waits == [1.0]  # full jitter at rng 0.5 of a 2 s base


def test_a_connection_lost_every_time_fails_retryably_and_keeps_the_staged_drop(
    workspace: Workspace, server: MemoryServer
) -> None:
    gw = gateway(workspace, MemoryTransport(server, [Fault.connection_lost(on=None)]))
    contract = gw.check(workspace.contract, run_id="down")
    prepared = gw.prepare(contract, str(workspace.source(40)), run_id="down")
    with pytest.raises(ConnectionLost):
        gw.deliver(contract, "down")
    (failed,) = named(workspace, "transfer.failed")
    assert failed["retryable"] is True and failed["attempts"] == 4
    assert prepared.drop_id not in drops(server)
    # The Airflow retry of the task: the same staged drop, delivered once the link holds.
    delivery = gateway(workspace, MemoryTransport(server)).deliver(contract, "down")
    assert delivery.remote_path == f"{FOLDER}/{prepared.drop_id}"
    assert drops(server) == [prepared.drop_id]


def test_a_changed_host_key_is_a_security_event_and_never_retried(
    workspace: Workspace, server: MemoryServer
) -> None:
    transport = MemoryTransport(server, [Fault.host_key_rejected()])
    with pytest.raises(HostKeyRejected):
        gateway(workspace, transport).run(workspace.contract, workspace.source(20))
    assert transport.connections == 1 and drops(server) == []
    (failed,) = named(workspace, "transfer.failed")
    assert failed["security_event"] is True and failed["outcome"] == "refused"
    assert named(workspace, "incident")[-1]["kind"] == "host-key-changed"


def test_a_refused_login_is_not_retried(workspace: Workspace, server: MemoryServer) -> None:
    transport = MemoryTransport(server, [Fault.login_refused()])
    with pytest.raises(TransferError, match="refused"):
        gateway(workspace, transport).run(workspace.contract, workspace.source(20))
    assert transport.connections == 1


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_behind(
    workspace: Workspace, server: MemoryServer
) -> None:
    server.capacity = 1000
    transport = MemoryTransport(server)
    with pytest.raises(TransferError, match="disk may be full"):
        gateway(workspace, transport).run(workspace.contract, workspace.source(200))
    assert drops(server) == [] and transport.connections == 1


def test_a_short_write_is_caught_by_the_size_check(
    workspace: Workspace, server: MemoryServer
) -> None:
    server.keep_bytes = 10
    with pytest.raises(TransferError, match="arrived with 10 bytes"):
        gateway(workspace, MemoryTransport(server)).run(workspace.contract, workspace.source(20))
    assert drops(server) == []


def test_a_missing_partner_folder_is_not_created(workspace: Workspace) -> None:
    empty = MemoryServer()
    with pytest.raises(TransferError, match="does not exist"):
        gateway(workspace, MemoryTransport(empty)).run(workspace.contract, workspace.source(20))
    assert not empty.exists(FOLDER)


def test_a_bug_during_upload_is_audited_by_type_only(
    workspace: Workspace, server: MemoryServer
) -> None:
    def bug(path: str, size: int) -> None:
        raise ZeroDivisionError("a value from a row")

    server.on_write = bug
    with pytest.raises(ZeroDivisionError):
        gateway(workspace, MemoryTransport(server)).run(workspace.contract, workspace.source(20))
    (failed,) = named(workspace, "run.failed")
    assert failed == {
        "stage": "deliver",
        "outcome": "failed",
        "reason": "unexpected-error",
        "error": "ZeroDivisionError",
    }
    assert "a value from a row" not in json.dumps(events(workspace))


# -- refusals ------------------------------------------------------------------------------------


def test_a_suspension_between_prepare_and_deliver_sends_nothing(
    workspace: Workspace, server: MemoryServer
) -> None:
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    contract = gw.check(workspace.contract, run_id="s")
    gw.prepare(contract, str(workspace.source(20)), run_id="s")
    officer = load_private_key(workspace.officer_key)
    workspace.governance().suspend(contract, officer, reason="incident", now=NOW)
    with pytest.raises(NotRunnable, match="suspended"):
        gw.deliver(contract, "s")
    assert transport.connections == 0 and drops(server) == []
    (refused,) = named(workspace, "run.refused")
    assert refused["stage"] == "deliver"


def test_an_unapproved_contract_never_reaches_the_partner(
    workspace: Workspace, server: MemoryServer
) -> None:
    workspace.write_contract(approve=False)
    transport = MemoryTransport(server)
    with pytest.raises(NotRunnable):
        gateway(workspace, transport).run(workspace.contract, workspace.source(20))
    assert transport.connections == 0
    assert named(workspace, "run.refused")[0]["stage"] == "check"


def test_a_quality_failure_is_quarantined_cleaned_up_and_audited(
    workspace: Workspace, server: MemoryServer
) -> None:
    def impossible(doc: dict[str, Any]) -> None:
        doc["schema"][0]["quality"][0]["mustBeBetween"] = [10**6, 10**7]

    workspace.write_contract(impossible)
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    with pytest.raises(QualityFailed):
        gw.run(workspace.contract, workspace.source(20), run_id="q")
    drop_id = drop_id_for("school-attendance-to-early-help", "q")
    assert (workspace.settings.quarantine / f"{drop_id}.json").is_file()
    assert named(workspace, "run.refused")[-1]["reason"] == "quality"
    assert not gw.staging_for(drop_id).exists()
    assert transport.connections == 0 and drops(server) == []


def slow_recording(
    monkeypatch: pytest.MonkeyPatch, seconds: float, threads: list[str]
) -> list[bool]:
    """The drop's disclosures recorded `seconds` late, noting the thread that records them;
    the list gets, for each discard, whether the recording had finished by then."""
    record, discard = prepare._record_disclosures, Disclosures.discard
    done = threading.Event()
    finished: list[bool] = []

    def late(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        time.sleep(seconds)
        try:
            return record(*args)
        finally:
            done.set()

    def noted(self: Disclosures, drop_id: str) -> int:
        finished.append(done.is_set())
        return discard(self, drop_id)

    monkeypatch.setattr(prepare, "_record_disclosures", late)
    monkeypatch.setattr(Disclosures, "discard", noted)
    return finished


def test_disclosures_are_recorded_beside_the_last_windows_and_kept(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    slow_recording(monkeypatch, 0.3, threads)
    workspace.write_contract()
    gw = gateway(workspace, MemoryTransport(server))
    gw.run(workspace.contract, workspace.source(20), run_id="r")
    assert len(threads) == 1 and threads[0].startswith("exchange-record")
    recorded = gw.disclosures().transfer(drop_id_for("school-attendance-to-early-help", "r"))
    assert recorded is not None and recorded[1] > 0


def test_a_quality_failure_after_the_source_is_read_leaves_no_disclosure_record(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's row count fails once every row is read, while its subjects are still being
    recorded: the stage waits for the recording, then discards it (a discard before the
    recording ends would find nothing, and the record would stay)."""

    def impossible(doc: dict[str, Any]) -> None:
        doc["schema"][0]["quality"][0]["mustBeBetween"] = [10**6, 10**7]

    threads: list[str] = []
    finished = slow_recording(monkeypatch, 2.5, threads)
    workspace.write_contract(impossible)
    gw = gateway(workspace, MemoryTransport(server))
    with pytest.raises(QualityFailed):
        gw.run(workspace.contract, workspace.source(20), run_id="q")
    assert threads  # the subjects were being recorded when the run failed
    assert finished == [True]  # the stage waited for the recording, then discarded it
    assert gw.disclosures().transfer(drop_id_for("school-attendance-to-early-help", "q")) is None


def test_an_interrupt_after_the_source_is_read_leaves_no_disclosure_record(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the last window is validated: the stage undoes only errors, so prepare
    itself waits for the recording and discards it."""

    def interrupted(self: QualityGate) -> Any:
        raise KeyboardInterrupt

    threads: list[str] = []
    finished = slow_recording(monkeypatch, 0.5, threads)
    monkeypatch.setattr(QualityGate, "finish", interrupted)
    workspace.write_contract()
    gw = gateway(workspace, MemoryTransport(server))
    with pytest.raises(KeyboardInterrupt):
        gw.run(workspace.contract, workspace.source(20), run_id="i")
    assert threads and finished == [True]
    assert gw.disclosures().transfer(drop_id_for("school-attendance-to-early-help", "i")) is None


def test_a_recording_that_fails_fails_the_run_and_sends_nothing(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise LedgerError("the disclosure ledger is read-only")

    monkeypatch.setattr(prepare, "_record_disclosures", broken)
    workspace.write_contract()
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    with pytest.raises(LedgerError, match="read-only"):
        gw.run(workspace.contract, workspace.source(20), run_id="f")
    assert not gw.staging_for(drop_id_for("school-attendance-to-early-help", "f")).exists()
    assert transport.connections == 0 and drops(server) == []


def test_subjects_are_hashed_on_the_recorder_thread(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = SubjectHashes.add

    def noted(self: SubjectHashes, ids: Any) -> None:
        threads.append(threading.current_thread().name)
        real(self, ids)

    monkeypatch.setattr(SubjectHashes, "add", noted)
    workspace.write_contract()
    gw = gateway(workspace, MemoryTransport(server))
    result = gw.run(workspace.contract, workspace.source(20), run_id="h")
    assert threads and all(name.startswith("exchange-record") for name in threads)
    recorded = gw.disclosures().transfer(drop_id_for("school-attendance-to-early-help", "h"))
    assert recorded is not None and recorded[1] == result.rows_sent > 0  # one subject a row


@pytest.mark.parametrize("rows", [20, 30_000])
def test_a_subject_hashing_error_fails_the_run_and_records_nothing(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """The first batch's hashing fails: raised when the producer hands over its next batch
    (30,000 rows: several CSV blocks, not joined) or, for a single batch, when it has read all."""

    def broken(self: SubjectHashes, ids: Any) -> None:
        raise LedgerError("subject ids must be strings or integers")

    monkeypatch.setattr(SubjectHashes, "add", broken)
    monkeypatch.setattr(prepare, "gathered", lambda batches: iter(batches))
    workspace.write_contract()
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    with pytest.raises(LedgerError, match="strings or integers"):
        gw.run(workspace.contract, workspace.source(rows), run_id="e")
    drop_id = drop_id_for("school-attendance-to-early-help", "e")
    assert gw.disclosures().transfer(drop_id) is None
    assert not gw.staging_for(drop_id).exists()
    assert transport.connections == 0 and drops(server) == []


def test_subject_batches_wait_for_the_recorder_a_bounded_number_ahead() -> None:
    gate = threading.Event()
    hashed: list[int] = []

    class Slow:
        def add(self, ids: Any) -> None:
            gate.wait(5)
            hashed.append(len(ids))

    ahead = prepare.SUBJECT_BATCHES_AHEAD
    with ThreadPoolExecutor(1) as recorder:
        subjecting = prepare._Subjecting(recorder, Slow())  # type: ignore[arg-type]
        for _ in range(ahead):
            subjecting.add(pa.array(["a", "b"]))
        one_more = threading.Thread(target=subjecting.add, args=(pa.array(["c"]),))
        one_more.start()
        one_more.join(0.3)
        assert one_more.is_alive()  # it waits for the oldest batch to be hashed
        assert len(subjecting._pending) == ahead - 1 and hashed == []  # the oldest is awaited
        gate.set()
        one_more.join(5)
        subjecting.wait()
    assert hashed == [2] * ahead + [1]


def test_a_failed_hashing_is_raised_by_the_next_hand_over() -> None:
    def broken(ids: Any) -> None:
        raise LedgerError("no")

    with ThreadPoolExecutor(1) as recorder:
        subjecting = prepare._Subjecting(recorder, SimpleNamespace(add=broken))  # type: ignore[arg-type]
        subjecting.add(pa.array(["a"]))
        recorder.submit(lambda: None).result()  # the first hashing has run (and failed)
        with pytest.raises(LedgerError):
            subjecting.add(pa.array(["b"]))


def test_rows_the_gate_keeps_back_fail_the_run(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = QualityGate.finish

    def forgetful(self: QualityGate) -> list[Any]:
        real(self)
        return []  # the last window's rows never come back

    monkeypatch.setattr(QualityGate, "finish", forgetful)
    workspace.write_contract()
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    with pytest.raises(RuntimeError, match="kept back batches"):
        gw.run(workspace.contract, workspace.source(20), run_id="k")
    assert transport.connections == 0 and drops(server) == []


@pytest.mark.parametrize("rows", [20, 30_000])
def test_a_batch_the_gate_gives_back_out_of_order_fails_the_run(
    workspace: Workspace, server: MemoryServer, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """The last window's batches come back rotated (several batches) or one twice (one)."""
    real = QualityGate.finish
    monkeypatch.setattr(prepare, "gathered", lambda batches: iter(batches))

    def shuffled(self: QualityGate) -> list[Any]:
        released = real(self)
        return [released[-1], *released[:-1]] if len(released) > 1 else [*released, *released]

    monkeypatch.setattr(QualityGate, "finish", shuffled)
    workspace.write_contract()
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    with pytest.raises(RuntimeError, match="out of order"):
        gw.run(workspace.contract, workspace.source(rows), run_id="o")
    assert transport.connections == 0 and drops(server) == []


def test_an_unknown_server_type_has_no_transport(workspace: Workspace) -> None:
    endpoint = SimpleNamespace(type="s3", connection="x", host_keys=())
    with pytest.raises(NotRunnable, match="no transport for server type 's3'"):
        open_transport(endpoint, workspace.gateway().secrets)  # type: ignore[arg-type]


# -- acknowledgements ------------------------------------------------------------------------------


@pytest.fixture
def signer(workspace: Workspace, tmp_path: Path) -> keys.KeyPair:
    """The partner's acknowledgement key, published in the contract."""
    pair = keys.generate("signing", tmp_path / "partner-ack.key", comment="Early Help")

    def acknowledged(doc: dict[str, Any]) -> None:
        terms = {"folder": ACKS, "partnerKeys": [pair.public], "deadlineHours": 24}
        doc["customProperties"].append({"property": "acknowledgements", "value": terms})

    workspace.write_contract(acknowledged)
    return pair


def acknowledge(server: MemoryServer, drop_id: str, key_path: Path, **changes: Any) -> None:
    """The partner's `receive` signing an acknowledgement into its folder (or a forger)."""
    manifest_bytes = server.read(f"{FOLDER}/{drop_id}/{MANIFEST_NAME}")
    manifest = json.loads(manifest_bytes)
    key = signing.load_private_key(key_path)
    body = acks.build(
        manifest,
        hashlib.sha256(manifest_bytes).hexdigest(),
        rows=manifest["rows"]["sent"],
        received_at=NOW.isoformat(timespec="seconds"),
        key_id=signing.key_id(key.public_key()),
    )
    body.update(changes)
    server.put(f"{ACKS}/{acks.ack_name(drop_id)}", acks.sign(body, key))


def test_a_verified_ack_is_recorded_once(
    workspace: Workspace, server: MemoryServer, signer: keys.KeyPair
) -> None:
    gw = gateway(workspace, MemoryTransport(server))
    result = gw.run(workspace.contract, workspace.source(50))
    contract = gw.check(workspace.contract, run_id="acks")
    assert gw.collect_acks(contract) == (0, 0)  # nothing yet, and not late
    acknowledge(server, result.drop_id, signer.private_path)
    assert gw.collect_acks(contract) == (1, 0)
    assert gw.collect_acks(contract) == (0, 0)  # recorded once
    (ack,) = named(workspace, "ack.received")
    assert ack["drop_id"] == result.drop_id and ack["rows_match"] is True


def test_forged_acks_are_rejected_as_security_events(
    workspace: Workspace, server: MemoryServer, signer: keys.KeyPair, tmp_path: Path
) -> None:
    gw = gateway(workspace, MemoryTransport(server))
    first = gw.run(workspace.contract, workspace.source(50, seed=1))
    second = gw.run(workspace.contract, workspace.source(50, seed=2))
    mallory = keys.generate("signing", tmp_path / "mallory.key")
    acknowledge(server, first.drop_id, mallory.private_path)  # a key the partner never published
    acknowledge(server, second.drop_id, signer.private_path, manifest_sha256="0" * 64)
    server.put(f"{ACKS}/..ack.json", b"{}")  # a hostile name
    contract = gw.check(workspace.contract, run_id="acks")
    assert gw.collect_acks(contract) == (0, 0)
    rejected = named(workspace, "ack.rejected")
    assert len(rejected) == 2 and all(r["security_event"] for r in rejected)
    reasons = " ".join(r["reason"] for r in rejected)
    assert "has not published" in reasons and "not the one sent" in reasons
    assert named(workspace, "ack.received") == []


def test_an_overdue_drop_raises_one_incident(
    workspace: Workspace, server: MemoryServer, signer: keys.KeyPair
) -> None:
    gw = gateway(workspace, MemoryTransport(server))
    gw.run(workspace.contract, workspace.source(50))
    contract = gw.check(workspace.contract, run_id="acks")
    gw.clock = lambda: NOW + dt.timedelta(hours=25)
    assert gw.collect_acks(contract) == (0, 1)
    assert gw.collect_acks(contract) == (0, 0)
    assert named(workspace, "incident")[-1]["kind"] == "unacknowledged-drop"


def test_a_connection_lost_while_collecting_is_audited(
    workspace: Workspace, server: MemoryServer, signer: keys.KeyPair
) -> None:
    transport = MemoryTransport(server, [Fault.connection_lost(on=None, step="list")])
    gw = gateway(workspace, transport)
    contract = gw.check(workspace.contract, run_id="acks")
    with pytest.raises(ConnectionLost):
        gw.collect_acks(contract)
    (failed,) = named(workspace, "run.failed")
    assert failed["stage"] == "acks" and failed["error"] == "ConnectionLost"


# -- retention -----------------------------------------------------------------------------------


def test_expired_drops_of_ours_are_removed_and_audited(
    workspace: Workspace, server: MemoryServer
) -> None:
    def managed(doc: dict[str, Any]) -> None:
        doc["customProperties"].append({"property": "senderManagesInbox", "value": True})
        for sla in doc["slaProperties"]:
            if sla["property"] == "retention":
                sla.update(value=30, unit="d")

    workspace.write_contract(managed)
    gw = gateway(workspace, MemoryTransport(server))
    contract = gw.check(workspace.contract, run_id="ret")

    def drop(name: str, days: int, contract_id: str = contract.id) -> None:
        made = (NOW - dt.timedelta(days=days)).isoformat(timespec="seconds")
        body = {"drop_id": name, "created_at": made, "contract": {"id": contract_id}}
        server.put(f"{FOLDER}/{name}/{MANIFEST_NAME}", json.dumps(body).encode())

    drop(f"{contract.id}-old", 40)
    drop(f"{contract.id}-new", 10)
    drop("other-old", 40, contract_id="other")
    server.makedirs(f"{FOLDER}/not-a-drop")
    server.makedirs(f"{FOLDER}/.stale.partial", modified=(NOW - dt.timedelta(days=40)).timestamp())
    removed = gw.expire_drops(contract)
    assert removed == [".stale.partial", f"{contract.id}-old"]
    assert drops(server) == sorted([f"{contract.id}-new", "not-a-drop", "other-old"])
    assert [b["drop_id"] for b in named(workspace, "retention.removed")] == removed


def test_expiry_is_refused_where_the_sender_does_not_manage_the_inbox(
    workspace: Workspace, server: MemoryServer
) -> None:
    transport = MemoryTransport(server)
    gw = gateway(workspace, transport)
    contract = gw.check(workspace.contract, run_id="ret")
    with pytest.raises(NotRunnable, match="manage the inbox"):
        gw.expire_drops(contract)
    assert transport.connections == 0
    assert named(workspace, "run.refused")[-1]["stage"] == "retention"
