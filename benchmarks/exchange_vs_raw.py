"""`exchange run` beside the raw chain on the same file, paired A B A B: wall, CPU, peak RSS.

    python benchmarks/exchange_vs_raw.py                 # 1,000,000 rows, 2 pairs
    python benchmarks/exchange_vs_raw.py --rows 200000 --pairs 3

The source is the synthetic 16-column council extract (exchange.synth, fixed seed: quoted text
with commas, quotes and line breaks inside fields). Both sides deliver to the same loopback sshd:

  A, gateway: the `exchange run` command as an operator types it (a new process: its imports,
     contract checks, minimise, validation by Great Expectations, encryption, disclosure
     ledger, signing and SFTP upload), with a fresh gateway state folder each time.
  B, raw chain: pyarrow streams the same columns to CSV | the `age` command | OpenSSH `sftp`.

Before each run the partner's inbox is emptied and the disk synced (not timed), so neither side
pays for writing back the drops of the runs before it (at 10M rows, 700 MB each). Each side
runs as a child process tree measured by wait4: wall time, user + system CPU, and
the peak RSS of the largest single process. The tree is also sampled from /proc while it runs
(`_process_tree.py`): each process's own peak (the gateway's main process and its validation
worker), and the largest sums of the tree's RSS and of its PSS (a page shared by the two
processes, such as a library both load, counted once) seen at one instant. Medians and
ratios (A / B) are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import _workbench
from _process_tree import TreePeaks, TreeWatch
from _workbench import FOLDER, Bench, workbench

from exchange.contract import load_contract
from exchange.minimise import source_types

HERE = Path(__file__).resolve().parent
EXCHANGE = Path(sys.executable).with_name("exchange")


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float  # the largest single process (wait4)
    tree: TreePeaks  # sampled: each process's peak, and the tree's sum at one instant

    @property
    def tree_mb(self) -> float:
        return self.tree.tree_mb

    @property
    def tree_pss_mb(self) -> float:
        return self.tree.tree_pss_mb


def measured(command: list[str], env: dict[str, str]) -> Sample:
    """Run a command to completion; its wall time, CPU (with children) and peak RSS."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    with TreeWatch(child.pid) as watch:
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{command[0]} failed with exit code {child.returncode}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, watch.peaks)


def settled(bench: Bench) -> None:
    """The partner's inbox emptied of earlier runs' drops, and every write on disk."""
    inbox = bench.server.root / FOLDER
    for entry in inbox.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    os.sync()


def gateway_run(bench: Bench, pristine: Path, source: Path) -> Sample:
    """One `exchange run` from a fresh copy of the gateway's state (keys, empty ledger)."""
    home = Path(bench.env["EXCHANGE_HOME"])
    shutil.rmtree(home)
    shutil.copytree(pristine, home)
    env = {**os.environ, **bench.env}
    settled(bench)
    return measured([str(EXCHANGE), "run", str(bench.contract), "--source", str(source)], env)


def raw_run(bench: Bench, source: Path, columns: list[str], recipient: str) -> Sample:
    """pyarrow (the same columns) | age | OpenSSH sftp, as one shell pipeline."""
    server = bench.server
    cipher = bench.root / "raw.csv.age"
    remote = f"{FOLDER}/raw-{uuid.uuid4().hex}.csv.age"
    script = (
        "set -euo pipefail; "
        f"{sys.executable} {HERE / '_raw_chain.py'} {source} {','.join(columns)} "
        f"| age -r {recipient} -o {cipher}; "
        f"echo 'put {cipher} {remote}' | sftp -q -b - -i {server.client_key_path} "
        f"-o UserKnownHostsFile={server.known_hosts_path} -o IdentitiesOnly=yes "
        f"-P {server.port} {server.username}@{server.host} >/dev/null"
    )
    settled(bench)
    return measured(["bash", "-c", script], dict(os.environ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    _workbench.SAMPLE = _workbench.roomy_sample(root, args.rows)  # 10M rows are not refused
    bench = workbench(root)
    try:
        run(bench, args.rows, args.pairs)
    finally:
        bench.server.stop()
        shutil.rmtree(bench.root, ignore_errors=True)


def run(bench: Bench, rows: int, pairs: int) -> None:
    print(f"generating {rows:,} rows of the 16-column extract ...", flush=True)
    source = bench.source(rows)
    contract = load_contract(bench.contract)
    columns = list(source_types(contract))
    pristine = bench.root / "gateway-pristine"
    shutil.copytree(bench.env["EXCHANGE_HOME"], pristine)
    print(
        f"{rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB CSV; "
        f"{len(columns)} of 16 columns read; {pairs} pairs, A = exchange run, B = raw chain",
        flush=True,
    )
    gateway: list[Sample] = []
    raw: list[Sample] = []
    for n in range(pairs):
        for label, runs, go in (
            ("A", gateway, lambda: gateway_run(bench, pristine, source)),
            ("B", raw, lambda: raw_run(bench, source, columns, contract.recipient_keys[0])),
        ):
            sample = go()
            runs.append(sample)
            parts = ", ".join(f"{role} {mb:.0f}" for role, mb in sample.tree.by_role.items())
            print(
                f"  pair {n + 1} {label}: wall {sample.wall:6.2f} s  cpu {sample.cpu:6.2f} s  "
                f"peak RSS {sample.rss_mb:6.0f} MB  (tree at once {sample.tree_mb:.0f} MB, "
                f"PSS {sample.tree_pss_mb:.0f} MB; each process's peak MB: {parts})",
                flush=True,
            )
    print(f"\nmedians at {rows:,} rows        wall s    CPU s   peak RSS MB   tree MB  tree PSS MB")
    medians = {}
    keys = ("wall", "cpu", "rss_mb", "tree_mb", "tree_pss_mb")
    for label, runs in (("exchange run", gateway), ("raw chain", raw)):
        m = [statistics.median(getattr(s, k) for s in runs) for k in keys]
        medians[label] = m
        print(f"{label:28} {m[0]:8.2f} {m[1]:8.2f} {m[2]:12.0f} {m[3]:9.0f} {m[4]:12.0f}")
    a, b = medians["exchange run"], medians["raw chain"]
    print(
        f"{'ratio (A / B)':28} {a[0] / b[0]:7.2f}x {a[1] / b[1]:7.2f}x {a[2] / b[2]:11.2f}x "
        f"{a[3] / b[3]:8.2f}x {a[4] / b[4]:11.2f}x"
    )
    print(
        "peak RSS: the largest single process (wait4); tree: the largest sums of the process "
        "tree's RSS and PSS at one instant (sampled every 0.2 s; PSS counts a page shared by "
        "two processes once)"
    )


if __name__ == "__main__":
    main()
