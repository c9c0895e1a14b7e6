"""For `receive` tests and benchmarks/receive_progress.py: a drop of any size, signed by a real
sender key and made in flat memory (the CSV written batch by batch, encrypted as a stream), and
a way to run a command with a terminal as its standard error."""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyrage
from test_receive_hostile import DROP_ID, Parties, make_parties, manifest_for, sign_manifest

from exchange import manifest

BATCH = 500_000


def write_csv(path: Path, rows: int) -> None:
    """The manifest's two fields (person_ref, attendance_rate) for `rows` people."""
    with pacsv.CSVWriter(
        path, pa.schema([("person_ref", pa.string()), ("attendance_rate", pa.float64())])
    ) as writer:
        for start in range(0, rows, BATCH):
            numbers = pa.array(np.arange(start, min(start + BATCH, rows)))
            refs = pc.binary_join_element_wise("P", pc.cast(numbers, pa.string()), "")
            rates = pc.divide(pc.cast(numbers, pa.float64()), float(max(rows, 1)))
            writer.write_batch(pa.record_batch([refs, rates], ["person_ref", "attendance_rate"]))


def large_drop(folder: Path, rows: int) -> tuple[Parties, Path]:
    """Fresh keys under `folder`/keys and a CSV drop of `rows` rows under `folder`/drops."""
    parties = make_parties(folder / "keys")
    drop = folder / "drops" / DROP_ID
    drop.mkdir(parents=True)
    plain = folder / "plain.csv"
    write_csv(plain, rows)
    payload = drop / manifest.payload_name("csv")
    recipient = pyrage.x25519.Recipient.from_str(parties.recipient)
    with plain.open("rb") as reader, payload.open("wb") as writer:
        pyrage.encrypt_io(reader, writer, [recipient])
    plain.unlink()
    digest = hashlib.sha256()
    with payload.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    body = manifest_for(parties, b"", fmt="csv", rows=rows)
    body["payload"].update(size=payload.stat().st_size, sha256=digest.hexdigest())
    sign_manifest(parties, drop, manifest.to_bytes(body))
    return parties, drop


def under_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run `args` with a pseudo-terminal as its standard error; the exit code and all it wrote."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)
    written = bytearray()
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        written += chunk
    os.close(master)
    return proc.wait(timeout=120), written.decode("utf-8", "replace")
