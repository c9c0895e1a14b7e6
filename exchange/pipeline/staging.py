"""The staging store: where a run's drop waits as ciphertext, found from the run and verified.

Its folder is derived from the contract and run (never from task state, which Airflow users
can edit), and before anything of it leaves the gateway it must hold exactly a manifest, its
two signatures (raw Ed25519 and OpenSSH SSHSIG) and the payload, the manifest signed by the
gateway's own key in both, naming this contract
version, run and drop, matching the ledger's record of this run's prepare, and giving the
payload's exact size and SHA-256.

With a shared store (EXCHANGE_STAGING, `pipeline.store`) the drop is still prepared into the
local folder; `publish` then copies the verified drop to the store and removes the local copy,
and `fetch` brings it back into the same run-derived local folder on the delivering worker,
where it is verified again before anything of it is sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shutil
import stat
from pathlib import Path
from typing import Any

from exchange import manifest
from exchange.contract import Contract
from exchange.crypto import signing, sshsig
from exchange.errors import CryptoError, NotRunnable
from exchange.files import private_dir
from exchange.pipeline.context import Context
from exchange.pipeline.naming import drop_id_for
from exchange.pipeline.results import Prepared
from exchange.pipeline.source import file_sha256
from exchange.pipeline.store import StagingStore, StagingUnavailable, purge_local
from exchange.settings import Settings


def staging_for(settings: Settings, drop_id: str) -> Path:
    """Where a drop is staged. Raises NotRunnable if the staging folder is a symbolic link."""
    root = private_dir(settings.staging)
    if root.is_symlink():
        raise NotRunnable(f"staging folder {root} is a symbolic link", reason="unsafe-path")
    return root / drop_id


def store_for(settings: Settings) -> StagingStore | None:
    """The shared staging store EXCHANGE_STAGING names; None for the local folder alone."""
    return StagingStore.open(settings.staging_url) if settings.staging_url else None


def _names(contract: Contract) -> set[str]:
    """The only objects a staged drop may hold."""
    payload = manifest.payload_name(contract.endpoint.format)
    return {manifest.MANIFEST_NAME, manifest.SIGNATURE_NAME, manifest.SSH_SIGNATURE_NAME, payload}


def publish(ctx: Context, contract: Contract, run_id: str) -> bool:
    """Verify the run's local staged drop and move it to the shared store, if one is set.

    False (and nothing done) without a store. Raises NotRunnable (staging-invalid),
    StagingUnavailable (the local copy is then kept, and nothing of it left in the store)."""
    store = store_for(ctx.settings)
    if store is None:
        return False
    prepared = staged(ctx, contract, run_id)  # only a drop that verifies leaves this worker
    folder = staging_for(ctx.settings, prepared.drop_id)
    try:
        store.publish(contract.id, prepared.drop_id, folder, _names(contract))
    except BaseException:
        with contextlib.suppress(StagingUnavailable):  # never leave half a drop behind
            store.remove(contract.id, prepared.drop_id)
        raise
    shutil.rmtree(folder, ignore_errors=True)  # the store holds it now
    return True


def fetch(ctx: Context, contract: Contract, run_id: str) -> bool:
    """Bring the run's drop from the shared store into its local folder, fresh.

    False if no store is set or it holds no drop for this run (then a drop staged locally, by
    a run prepared and delivered in one process, is used). Raises NotRunnable, StagingUnavailable.
    """
    store = store_for(ctx.settings)
    if store is None:
        return False
    drop_id = drop_id_for(contract.id, run_id)
    if not store.names(contract.id, drop_id):
        return False
    folder = staging_for(ctx.settings, drop_id)
    shutil.rmtree(folder, ignore_errors=True)  # whatever an earlier attempt left is not used
    private_dir(folder)
    payload = manifest.payload_name(contract.endpoint.format)

    def payload_size() -> int:
        """The payload's size from the fetched manifest, once its signatures verify."""
        _, body = _signed_manifest(ctx, folder, _Refusal(drop_id))
        stated = body["payload"]
        if stated.get("name") != payload or not isinstance(stated.get("size"), int):
            raise _Refusal(drop_id)("belongs to another run, contract version or format")
        return int(stated["size"])

    try:
        store.fetch(contract.id, drop_id, folder, _names(contract), payload, payload_size)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return True


def discard(ctx: Context, contract: Contract, drop_id: str) -> None:
    """Delete a delivered drop: its local folder and its objects in the shared store."""
    shutil.rmtree(staging_for(ctx.settings, drop_id), ignore_errors=True)
    store = store_for(ctx.settings)
    if store is not None:
        # The drop has arrived: a store that fails to delete now must not fail the delivery;
        # its copy (ciphertext) expires with the abandoned drops.
        with contextlib.suppress(StagingUnavailable):
            store.remove(contract.id, drop_id)


def purge_expired(
    settings: Settings,
    now: dt.datetime,
    *,
    contract_id: str | None = None,
    keep: str | None = None,
) -> list[str]:
    """Delete staged drops of abandoned runs (older than EXCHANGE_STAGING_MAX_AGE_HOURS).

    Both the local staging folder and the shared store; `keep` spares the drop under way.
    Returns the drop ids removed. Raises StagingUnavailable."""
    max_age = dt.timedelta(hours=settings.staging_max_age_hours)
    removed = purge_local(settings.staging, max_age, now, contract_id=contract_id, keep=keep)
    store = store_for(settings)
    if store is not None:
        removed += store.purge_expired(max_age, now, contract_id=contract_id, keep=keep)
    return sorted(set(removed))


class _Refusal:
    """Builds the one refusal every failed check of a staged drop raises."""

    def __init__(self, drop_id: str) -> None:
        self.drop_id = drop_id

    def __call__(self, why: str) -> NotRunnable:
        return NotRunnable(
            f"staged drop {self.drop_id} {why}: prepare the run again", reason="staging-invalid"
        )


def staged(ctx: Context, contract: Contract, run_id: str) -> Prepared:
    """The drop this run staged, verified. Raises NotRunnable (reason staging-invalid)."""
    drop_id = drop_id_for(contract.id, run_id)
    folder = staging_for(ctx.settings, drop_id)
    refuse = _Refusal(drop_id)
    document, body = _signed_manifest(ctx, folder, refuse)
    payload = body["payload"]
    facts = body["contract"]
    expected_payload = manifest.payload_name(contract.endpoint.format)
    if (
        body["drop_id"] != drop_id
        or body["run_id"] != run_id
        or facts["id"] != contract.id
        or facts["sha256"] != contract.sha256
        or payload["name"] != expected_payload
    ):
        raise refuse("belongs to another run, contract version or format")
    _check_files(folder, expected_payload, payload, refuse)
    record = ctx.ledger.find("run.prepared", run_id=run_id, contract_id=contract.id)
    if record is None or record.data.get("manifest_sha256") != hashlib.sha256(document).hexdigest():
        raise refuse("is not the one this run recorded in the ledger")
    rows = body["rows"]
    incremental = record.data.get("incremental") or {}
    return Prepared(
        run_id=run_id,
        drop_id=drop_id,
        contract_id=contract.id,
        rows_read=int(rows.get("read", 0)),
        rows_sent=int(rows.get("sent", 0)),
        excluded=dict(rows.get("excluded") or {}),
        payload_sha256=str(payload["sha256"]),
        objections_overridden=int(rows.get("objections_overridden", 0)),
        watermark=incremental.get("watermark"),
        rows_unchanged=int(incremental.get("rows_unchanged", 0)),
        since=incremental.get("since"),
    )


def _signed_manifest(ctx: Context, folder: Path, refuse: _Refusal) -> tuple[bytes, dict[str, Any]]:
    """The staged manifest's bytes and body, its signature verified under the gateway's key."""
    try:
        info = folder.lstat()
    except FileNotFoundError:
        raise refuse("does not exist") from None
    if not stat.S_ISDIR(info.st_mode):
        raise refuse("is not a folder")
    try:
        document = (folder / manifest.MANIFEST_NAME).read_bytes()
        signature = (folder / manifest.SIGNATURE_NAME).read_bytes()
        ssh_signature = (folder / manifest.SSH_SIGNATURE_NAME).read_bytes()
    except OSError:
        raise refuse("has no manifest or signature") from None
    key = signing.load_private_key(ctx.settings.signing_key).public_key()
    try:
        signing.verify(key, document, signature)
        sshsig.verify(key, document, ssh_signature)
        body = manifest.from_bytes(document)
    except (CryptoError, ValueError):
        raise refuse("has a manifest that does not verify under the gateway's key") from None
    return document, body


def _check_files(folder: Path, payload_name: str, payload: Any, refuse: _Refusal) -> None:
    """Exactly the manifest, its signatures and a regular payload of the stated size and hash."""
    names = {p.name for p in folder.iterdir()}
    signatures = {manifest.SIGNATURE_NAME, manifest.SSH_SIGNATURE_NAME}
    if names != {manifest.MANIFEST_NAME, *signatures, payload_name}:
        raise refuse("holds other files than its manifest, signatures and payload")
    data = folder / payload_name
    if data.is_symlink() or not data.is_file():
        raise refuse("has a payload that is not a regular file")
    if data.stat().st_size != payload["size"] or file_sha256(data) != payload["sha256"]:
        raise refuse("has a payload whose size or SHA-256 differs from its manifest")
