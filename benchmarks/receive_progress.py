"""What the progress display of `exchange receive` costs (target: under 1% of the run).

    python benchmarks/receive_progress.py [--rows 5000000] [--repeat 5]

Makes one CSV drop of `--rows` rows signed by a fresh sender key, then:

1. receives it in this process with the progress line drawn on a pseudo-terminal, timing the
   CPU spent inside the display (drawing, and the callbacks) against the whole receive's CPU,
   plus what importing rich costs: the display's own share, free of machine noise;
2. runs `exchange receive` as a partner types it, alternately with a terminal as standard error
   (progress drawn) and with a pipe (none), into a fresh folder each time so machine noise hits
   both, and prints the median wall and CPU time of each. On a busy machine, runs vary by more
   than 1%, so these medians are context; the share in (1) is the figure.
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import receive_args
from large_drop import large_drop, under_a_terminal

EXCHANGE = Path(sys.executable).with_name("exchange")


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], int]) -> tuple[float, float]:
    """Wall and CPU seconds of one receive; it must succeed."""
    cpu, start = child_cpu(), time.perf_counter()
    code = run()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"exchange receive failed with exit code {code}")
    return wall, child_cpu() - cpu


def display_share(parties: Any, drop: Path, out: Path) -> tuple[float, float, float]:
    """CPU seconds: importing rich for the display, inside the display, the whole receive."""
    began = time.process_time()
    from exchange.cli._receive_progress import receive_progress

    imported = time.process_time() - began
    from exchange.receive import Step, receive

    master, slave = pty.openpty()
    reader = subprocess.Popen(
        ["cat"], stdin=master, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    spent = 0.0
    try:
        with os.fdopen(slave, "w") as terminal:
            began = time.process_time()
            with receive_progress(terminal) as show:

                def timed(step: Step) -> None:
                    nonlocal spent
                    start = time.process_time()
                    show(step)
                    spent += time.process_time() - start

                spent += time.process_time() - began  # drawing the first line
                receive(
                    drop,
                    identity=parties.identity,
                    sender_key=parties.sender_public,
                    out_dir=out,
                    progress=timed,
                )
                ending = time.process_time()
            spent += time.process_time() - ending  # the last redraw and the erasing
            whole = time.process_time() - began
    finally:
        reader.kill()
        os.close(master)
    return imported, spent, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-bench-receive-"))
    try:
        parties, drop = large_drop(root, args.rows)
        size = (drop / "data.csv.age").stat().st_size
        print(f"drop: {args.rows:,} rows, {size / 1e6:.1f} MB encrypted")
        shares, imports = [], []
        for i in range(args.repeat):
            imported, spent, whole = display_share(parties, drop, root / f"out-inside-{i}")
            shares.append(spent / whole)
            imports.append(imported)
            shutil.rmtree(root / f"out-inside-{i}")
        print(
            f"display: {statistics.median(shares):.2%} of the receive's CPU (median of "
            f"{args.repeat}; target: under 1%); importing rich once: {imports[0] * 1000:.0f} ms CPU"
        )
        figures: dict[str, list[tuple[float, float]]] = {"terminal": [], "pipe": []}
        for i in range(args.repeat):
            for how in ("terminal", "pipe"):
                out = root / f"out-{how}-{i}"
                words = receive_args(drop, parties.identity, parties.sender_public, out)
                command = [str(EXCHANGE), *words]
                if how == "terminal":
                    figures[how].append(timed(lambda c=command: under_a_terminal(c)[0]))
                else:
                    figures[how].append(
                        timed(lambda c=command: subprocess.run(c, capture_output=True).returncode)
                    )
                shutil.rmtree(out)
        medians = {
            how: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
            for how, runs in figures.items()
        }
        for how, (wall, cpu) in medians.items():
            print(f"{how:>8}: wall {wall:6.2f} s, CPU {cpu:6.2f} s (median of {args.repeat})")
        wall = medians["terminal"][0] / medians["pipe"][0]
        cpu = medians["terminal"][1] / medians["pipe"][1]
        print(f"exchange receive, terminal / pipe: wall {wall:.3f}x, CPU {cpu:.3f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
