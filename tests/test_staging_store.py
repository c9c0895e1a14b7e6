"""The shared staging store: prepare on one worker, deliver from another, through a real store.

The S3 store is moto's standalone server on loopback (a real HTTP S3 endpoint, reached through
s3fs as in production); the partner is the real sshd fixture. Each "worker" has its own
EXCHANGE_HOME, so only the store and the shared ledger connect them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FOLDER, Workspace, inbox_entries

from exchange.audit import Ledger
from exchange.errors import InvalidRequest, NotRunnable
from exchange.gateway import Gateway
from exchange.pipeline.naming import drop_id_for
from exchange.pipeline.store import StagingStore, StagingUnavailable, parse_url
from exchange.receive import receive
from exchange.sandbox import PartnerSftpServer
from exchange.settings import Settings

REPO = Path(__file__).resolve().parents[1]
BUCKET = "exchange-staging"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-value"}


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/var/staging", "s3://bucket/prefix or file:///shared/path"),
        ("gs://bucket/x", "s3://bucket/prefix or file:///shared/path"),
        ("s3://key:secret@bucket/x", "must not carry credentials"),
        ("s3://bucket/x?endpoint_url=http://h", "must not carry credentials"),
        ("s3:///x", "needs a bucket"),
        ("file://host/x", "absolute folder"),
        ("file:///", "absolute folder"),
    ],
)
def test_a_bad_staging_url_is_refused_without_echoing_it(url: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_url(url)
    assert words in str(caught.value)
    assert "secret" not in str(caught.value).replace("AWS_SECRET_ACCESS_KEY", "")


def test_staging_urls_name_their_root() -> None:
    assert parse_url("s3://bucket/a/b/") == ("s3", "bucket/a/b")
    assert parse_url("s3://bucket") == ("s3", "bucket")
    assert parse_url("file:///shared/staging/") == ("file", "/shared/staging")


def test_staging_settings_are_read_and_checked() -> None:
    settings = Settings.from_env({"EXCHANGE_STAGING": "s3://b/p", "HOME": "/tmp"})
    assert settings.staging_url == "s3://b/p" and settings.staging_max_age_hours == 168
    settings = Settings.from_env({"EXCHANGE_STAGING_MAX_AGE_HOURS": "2.5", "HOME": "/tmp"})
    assert settings.staging_url is None and settings.staging_max_age_hours == 2.5
    for bad in ("soon", "0", "-1", "1e9", "nan"):
        with pytest.raises(InvalidRequest, match="EXCHANGE_STAGING_MAX_AGE_HOURS"):
            Settings.from_env({"EXCHANGE_STAGING_MAX_AGE_HOURS": bad, "HOME": "/tmp"})


# -- a real S3 server on loopback ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, with the staging bucket."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        import boto3

        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", **_boto(CREDENTIALS)
        )
        client.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def _boto(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The store's endpoint and credentials in the environment, as a worker would have them."""
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def worker(workspace: Workspace, name: str, staging: str, tmp_path: Path) -> dict[str, str]:
    """One worker's settings: its own home, the shared ledger, keys, secrets and store."""
    home = tmp_path / name
    home.mkdir(mode=0o700)
    return {
        **workspace.env,
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_AUDIT_URL": f"sqlite:///{tmp_path / 'shared-ledger.db'}",
        "EXCHANGE_SIGNING_KEY": str(Path(workspace.env["EXCHANGE_HOME"]) / "keys/gateway.key"),
        "EXCHANGE_STAGING": staging,
    }


PREPARE = """
import json, sys
from exchange.gateway import Gateway
gateway = Gateway.from_env()
contract = gateway.check(sys.argv[1], run_id=sys.argv[2])
prepared = gateway.prepare(contract, None, run_id=sys.argv[2])
print(json.dumps({"drop_id": prepared.drop_id, "rows_sent": prepared.rows_sent}))
"""


def prepare_elsewhere(env: dict[str, str], workspace: Workspace, run_id: str) -> dict[str, object]:
    """Check and prepare the run in a separate process, as the `prepare` worker would."""
    done = subprocess.run(
        [sys.executable, "-c", PREPARE, str(workspace.contract), run_id],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for secret in CREDENTIALS.values():
        assert secret not in done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def two_workers(
    workspace: Workspace, partner: PartnerSftpServer, s3_env: dict[str, str], tmp_path: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """Worker A prepares, worker B delivers; the staging store is `s3://BUCKET/<test>`."""
    workspace.source(500)
    staging = f"s3://{BUCKET}/{tmp_path.name}"
    return (
        worker(workspace, "worker-a", staging, tmp_path),
        worker(workspace, "worker-b", staging, tmp_path),
    )


def test_a_drop_prepared_on_one_worker_is_delivered_from_another_through_s3(
    workspace: Workspace,
    partner: PartnerSftpServer,
    two_workers: tuple[dict[str, str], dict[str, str]],
    tmp_path: Path,
) -> None:
    env_a, env_b = two_workers
    prepared = prepare_elsewhere(env_a, workspace, "run-1")
    drop_id = str(prepared["drop_id"])
    # Worker A keeps nothing: the verified drop is in the store, and only there.
    assert list((Path(env_a["EXCHANGE_HOME"]) / "staging").iterdir()) == []
    gateway_b = Gateway(Settings.from_env(env_b))
    store = gateway_b.staging_store()
    assert store is not None
    assert sorted(store.names(workspace_contract_id(workspace), drop_id)) == [
        "data.csv.age",
        "manifest.json",
        "manifest.json.sig",
        "manifest.json.sshsig",
    ]
    contract = gateway_b.recheck(workspace.contract, run_id="run-1")
    delivery = gateway_b.deliver(contract, "run-1")
    assert inbox_entries(partner) == [drop_id]
    assert delivery.remote_path == f"{FOLDER}/{drop_id}"
    got = receive(
        partner.root / FOLDER / drop_id,
        identity=workspace.identity,
        sender_key=workspace.sender_key,
        out_dir=tmp_path / "received",
    )
    assert got.rows == prepared["rows_sent"] > 0
    # After delivery the store and both workers' staging folders are empty.
    assert store.drops() == {}
    assert list((Path(env_b["EXCHANGE_HOME"]) / "staging").iterdir()) == []
    events = [e.event for e in Ledger(env_b["EXCHANGE_AUDIT_URL"]).entries()]
    assert events == ["contract.checked", "run.prepared", "transfer.sent"]


def workspace_contract_id(workspace: Workspace) -> str:
    from exchange.contract import load_contract

    return load_contract(workspace.contract).id


@pytest.mark.parametrize("tamper", ["payload", "manifest", "extra object"])
def test_a_tampered_drop_in_the_store_is_refused_and_nothing_is_sent(
    workspace: Workspace,
    partner: PartnerSftpServer,
    two_workers: tuple[dict[str, str], dict[str, str]],
    tamper: str,
) -> None:
    env_a, env_b = two_workers
    drop_id = str(prepare_elsewhere(env_a, workspace, "run-t")["drop_id"])
    gateway_b = Gateway(Settings.from_env(env_b))
    store = gateway_b.staging_store()
    assert store is not None
    contract_id = workspace_contract_id(workspace)
    key = f"{store.root}/{contract_id}/{drop_id}"
    if tamper == "payload":  # same size, one byte changed
        data = bytearray(store.fs.cat_file(f"{key}/data.csv.age"))
        data[len(data) // 2] ^= 0x01
        store.fs.pipe_file(f"{key}/data.csv.age", bytes(data))
    elif tamper == "manifest":
        document = store.fs.cat_file(f"{key}/manifest.json").replace(b'"read"', b'"reed"')
        store.fs.pipe_file(f"{key}/manifest.json", document)
    else:
        store.fs.pipe_file(f"{key}/notes.txt", b"not part of a drop")
    contract = gateway_b.recheck(workspace.contract, run_id="run-t")
    with pytest.raises(NotRunnable) as caught:
        gateway_b.deliver(contract, "run-t")
    assert caught.value.reason == "staging-invalid"
    assert inbox_entries(partner) == []
    # The refused copy is not left on worker B; the store keeps it until it expires.
    assert not (Path(env_b["EXCHANGE_HOME"]) / "staging" / drop_id).exists()
    assert (contract_id, drop_id) in store.drops()
    last = list(Ledger(env_b["EXCHANGE_AUDIT_URL"]).entries())
    refused = [e for e in last if e.event == "run.refused"]
    assert refused and refused[-1].data["reason"] == "staging-invalid"


def test_an_abandoned_drop_expires_from_the_store_and_the_local_folder(
    workspace: Workspace,
    partner: PartnerSftpServer,
    two_workers: tuple[dict[str, str], dict[str, str]],
) -> None:
    env_a, env_b = two_workers
    abandoned = str(prepare_elsewhere(env_a, workspace, "run-old")["drop_id"])
    contract_id = workspace_contract_id(workspace)
    # An abandoned local folder on worker B, as a crashed delivery might leave.
    local = Path(env_b["EXCHANGE_HOME"]) / "staging" / drop_id_for(contract_id, "run-gone")
    local.mkdir(parents=True)
    (local / "manifest.json").write_bytes(b"{}")
    stranger = Path(env_b["EXCHANGE_HOME"]) / "staging" / "not-a-drop"
    stranger.mkdir()
    now = dt.datetime.now(dt.UTC)
    young = Gateway(Settings.from_env(env_b), clock=lambda: now + dt.timedelta(hours=167))
    assert young.purge_staging() == []
    old = Gateway(Settings.from_env(env_b), clock=lambda: now + dt.timedelta(hours=169))
    assert old.purge_staging() == sorted([abandoned, local.name])
    store = old.staging_store()
    assert store is not None and store.drops() == {}
    assert not local.exists() and stranger.is_dir()  # only drop-shaped folders are touched
    # Delivery purges this agreement's expired drops (never its own) before it starts.
    env_b_short = {**env_b, "EXCHANGE_STAGING_MAX_AGE_HOURS": "1"}
    stale = str(prepare_elsewhere(env_a, workspace, "run-stale")["drop_id"])
    fresh = str(prepare_elsewhere(env_a, workspace, "run-now")["drop_id"])
    later = Gateway(Settings.from_env(env_b_short), clock=lambda: now + dt.timedelta(hours=2))
    contract = later.recheck(workspace.contract, run_id="run-now")
    later.deliver(contract, "run-now")
    assert inbox_entries(partner) == [fresh]
    assert store.drops() == {}, stale


def test_an_unreachable_store_is_a_retryable_error_naming_the_store_not_its_secrets(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = StagingStore.open(f"s3://{BUCKET}/x")
    for reach in (store.check, lambda: store.names("c", "c-0123456789abcdef")):
        with pytest.raises(StagingUnavailable) as caught:
            reach()
        message = str(caught.value)
        assert f"s3://{BUCKET}/x" in message and "127.0.0.1" not in message
        assert all(secret not in message for secret in CREDENTIALS.values())


def test_a_reachable_store_checks_clean_and_a_missing_bucket_does_not(
    s3_env: dict[str, str],
) -> None:
    StagingStore.open(f"s3://{BUCKET}/not-yet-used").check()
    with pytest.raises(StagingUnavailable, match="s3://no-such-bucket/x"):
        StagingStore.open("s3://no-such-bucket/x").check()


# -- a shared filesystem ---------------------------------------------------------------------


def test_a_shared_folder_store_carries_the_drop_with_private_modes(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    workspace.source(200)
    shared = tmp_path / "shared"
    env_a = worker(workspace, "worker-a", f"file://{shared}", tmp_path)
    env_b = worker(workspace, "worker-b", f"file://{shared}", tmp_path)
    drop_id = str(prepare_elsewhere(env_a, workspace, "run-f")["drop_id"])
    contract_id = workspace_contract_id(workspace)
    folder = shared / contract_id / drop_id
    assert {p.name for p in folder.iterdir()} == {
        "data.csv.age",
        "manifest.json",
        "manifest.json.sig",
        "manifest.json.sshsig",
    }
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o600"}
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    gateway_b = Gateway(Settings.from_env(env_b))
    gateway_b.deliver(gateway_b.recheck(workspace.contract, run_id="run-f"), "run-f")
    assert inbox_entries(partner) == [drop_id]
    assert not folder.exists()


def test_a_run_in_one_process_with_a_store_configured_delivers_and_leaves_nothing(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """`exchange run` prepares and delivers in one process: the local drop goes straight out."""
    shared = tmp_path / "shared"
    env = worker(workspace, "one-machine", f"file://{shared}", tmp_path)
    gateway = Gateway(Settings.from_env(env))
    result = gateway.run(workspace.contract, workspace.source(100), run_id="run-cli")
    assert inbox_entries(partner) == [result.drop_id]
    assert list((Path(env["EXCHANGE_HOME"]) / "staging").iterdir()) == []
    assert not shared.exists() or gateway.staging_store().drops() == {}  # type: ignore[union-attr]


def test_only_a_drop_that_verifies_is_published_and_nothing_else_with_it(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    from exchange.contract import load_contract
    from exchange.pipeline import prepare, staging

    shared = tmp_path / "shared"
    env = worker(workspace, "worker-a", f"file://{shared}", tmp_path)
    gateway = Gateway(Settings.from_env(env))
    contract = gateway.check(workspace.contract, run_id="run-x")
    source = workspace.source(100)
    prepared = prepare.prepare_drop(gateway.context, contract, source, "run-x")  # not published
    local = gateway.staging_for(prepared.drop_id)
    (local / "plaintext.csv").write_text("id,name\n1,someone\n")
    with pytest.raises(NotRunnable, match="holds other files"):
        staging.publish(gateway.context, load_contract(workspace.contract), "run-x")
    assert not shared.exists() or gateway.staging_store().drops() == {}  # type: ignore[union-attr]
    (local / "plaintext.csv").unlink()
    assert staging.publish(gateway.context, contract, "run-x") is True
    assert set(gateway.staging_store().drops()) == {(contract.id, prepared.drop_id)}  # type: ignore[union-attr]
    assert not local.exists()  # published: the worker keeps no copy


# -- attacks on a shared folder (docs/security.md: shared staging store) -------------------


def _old_tree(folder: Path) -> Path:
    """A folder of the gateway's with a 30-day-old file in a subfolder, as a home holds keys."""
    (folder / "keys").mkdir(parents=True)
    key = folder / "keys" / "signing.key"
    key.write_text("not to be deleted")
    old = time.time() - 30 * 86400
    os.utime(key, (old, old))
    return key


def test_a_planted_contract_link_in_a_shared_folder_is_never_followed_by_deliver(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """Whoever can write the shared root swaps `<root>/<contract>` for a link to a folder of
    the gateway's: delivery's purge of expired drops must not delete through it."""
    workspace.source(50)
    shared = tmp_path / "shared"
    env_a = worker(workspace, "worker-a", f"file://{shared}", tmp_path)
    env_b = worker(workspace, "worker-b", f"file://{shared}", tmp_path)
    prepare_elsewhere(env_a, workspace, "run-l")
    contract_id = workspace_contract_id(workspace)
    (shared / contract_id).rename(tmp_path / "moved-away")
    victim = tmp_path / "gateway-home"
    key = _old_tree(victim)
    (shared / contract_id).symlink_to(victim)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
    gateway_b = Gateway(Settings.from_env(env_b), clock=lambda: later)
    contract = gateway_b.recheck(workspace.contract, run_id="run-l")
    with pytest.raises(NotRunnable, match="symbolic link, not a folder, or not owned") as caught:
        gateway_b.deliver(contract, "run-l")
    assert caught.value.reason == "staging-invalid"
    assert key.read_text() == "not to be deleted"
    assert inbox_entries(partner) == []
    store = gateway_b.staging_store()
    assert store is not None
    assert store.drops() == {} and store.purge_expired(dt.timedelta(hours=1), later) == []
    assert key.exists()


def test_a_shared_folder_owned_by_another_user_is_neither_listed_nor_deleted(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    shared = tmp_path / "shared"
    drop = shared / "c" / "c-0123456789abcdef"
    key = _old_tree(drop)
    os.utime(drop / "keys", (time.time() - 30 * 86400,) * 2)
    (drop / "x").write_text("old")
    os.utime(drop / "x", (time.time() - 30 * 86400,) * 2)
    os.chown(shared / "c", 1, 1)
    store = StagingStore.open(f"file://{shared}")
    now = dt.datetime.now(dt.UTC)
    assert store.purge_expired(dt.timedelta(hours=1), now, contract_id="c") == []
    store.remove("c", "c-0123456789abcdef")
    assert key.exists() and (drop / "x").exists()
    with pytest.raises(NotRunnable, match="c is a symbolic link, not a folder, or not owned"):
        store.names("c", "c-0123456789abcdef")


def test_publish_refuses_a_planted_object_link_and_writes_nothing_through_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    from exchange.pipeline import prepare, staging

    shared = tmp_path / "shared"
    env = worker(workspace, "worker-a", f"file://{shared}", tmp_path)
    gateway = Gateway(Settings.from_env(env))
    contract = gateway.check(workspace.contract, run_id="run-p")
    prepared = prepare.prepare_drop(gateway.context, contract, workspace.source(20), "run-p")
    target = tmp_path / "ledger-of-the-gateway"
    target.write_text("LEDGER")
    target.chmod(0o640)
    drop = shared / contract.id / prepared.drop_id
    drop.mkdir(parents=True)
    (drop / "manifest.json").symlink_to(target)
    with pytest.raises(NotRunnable, match=r"manifest\.json is a symbolic link"):
        staging.publish(gateway.context, contract, "run-p")
    assert target.read_text() == "LEDGER" and oct(target.stat().st_mode & 0o777) == "0o640"
    assert gateway.staging_for(prepared.drop_id).is_dir()  # the local drop is kept
    # A contract folder that is a link to a folder of the gateway's is not chmodded either.
    other = tmp_path / "other-home"
    other.mkdir(mode=0o755)
    shutil_rm(shared / contract.id)
    (shared / contract.id).symlink_to(other)
    with pytest.raises(NotRunnable, match="symbolic link"):
        staging.publish(gateway.context, contract, "run-p")
    assert oct(other.stat().st_mode & 0o777) == "0o755" and list(other.iterdir()) == []


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_a_staged_payload_larger_than_its_manifest_is_refused_before_it_is_copied(
    workspace: Workspace, partner: PartnerSftpServer, tmp_path: Path
) -> None:
    """A planted huge payload must not fill the delivering worker's disk: its listed size is
    compared with the signed manifest's before a byte of it is copied."""
    workspace.source(50)
    shared = tmp_path / "shared"
    env_a = worker(workspace, "worker-a", f"file://{shared}", tmp_path)
    env_b = worker(workspace, "worker-b", f"file://{shared}", tmp_path)
    drop_id = str(prepare_elsewhere(env_a, workspace, "run-h")["drop_id"])
    contract_id = workspace_contract_id(workspace)
    with (shared / contract_id / drop_id / "data.csv.age").open("ab") as payload:
        payload.truncate(64 << 20)  # sparse: 64 MiB listed, nothing really written
    gateway_b = Gateway(Settings.from_env(env_b))
    contract = gateway_b.recheck(workspace.contract, run_id="run-h")
    with pytest.raises(NotRunnable, match="payload whose size differs from its manifest"):
        gateway_b.deliver(contract, "run-h")
    assert inbox_entries(partner) == []
    assert not (Path(env_b["EXCHANGE_HOME"]) / "staging" / drop_id).exists()


def test_a_payload_growing_after_it_was_listed_is_copied_no_further_than_its_size(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    drop = shared / "c" / "c-0123456789abcdef"
    drop.mkdir(parents=True)
    (drop / "manifest.json").write_bytes(b"{}")
    (drop / "data.csv.age").write_bytes(b"x" * 100)
    local = tmp_path / "local"
    local.mkdir()
    store = StagingStore.open(f"file://{shared}")
    seen: list[set[str]] = []

    def payload_size() -> int:
        seen.append({p.name for p in local.iterdir()})  # the manifest came first, alone
        with (drop / "data.csv.age").open("ab") as grow:
            grow.write(b"y" * (3 << 20))
        return 100

    allowed = {"manifest.json", "data.csv.age"}
    with pytest.raises(NotRunnable, match="larger than listed or stated"):
        store.fetch("c", "c-0123456789abcdef", local, allowed, "data.csv.age", payload_size)
    assert seen == [{"manifest.json"}]
    assert (local / "data.csv.age").stat().st_size <= 100
