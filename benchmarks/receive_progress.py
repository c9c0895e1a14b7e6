"""What the progress display of `exchange receive` costs (target: under 1% of the run).

    python benchmarks/receive_progress.py [--rows 5000000] [--repeat 5]

Makes one CSV drop of `--rows` rows signed by a fresh sender key, then receives it with
`exchange receive` as a partner types it, alternately with a terminal as standard error (the
progress line drawn in place) and with a pipe (no progress), into a fresh folder each time so
machine noise hits both. Prints the median wall and CPU time of each and their ratio.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
        print(f"progress / none: wall {wall:.3f}x, CPU {cpu:.3f}x (target: under 1.01x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
