"""Peak memory of a whole exchange at two input sizes: it must not grow with the input.

    python benchmarks/memory_peak.py [--rows 200000 2000000]

Each size runs `exchange run` in its own process against a real partner sshd, and reports that
process's peak resident set size (ru_maxrss) beside the source file's size; and, sampled from
/proc while it runs (`_process_tree.py`), the peak of its validation worker process, of the
largest process of the run, and the largest sums of the run's processes' RSS and PSS at one
instant (PSS: a page the processes share, such as a library both load, counted once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _workbench
from _process_tree import TreeWatch
from _workbench import workbench

CHILD = """
import resource, sys
from exchange.cli import main
code = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    _workbench.SAMPLE = _workbench.roomy_sample(root, max(args.rows))
    bench = workbench(root)
    try:
        print(
            f"{'rows':>10} {'source MB':>10} {'rows sent':>10} {'main MB':>8} {'worker MB':>10} "
            f"{'largest MB':>11} {'tree MB':>8} {'tree PSS MB':>12}"
        )
        peaks, trees = [], []
        for rows in args.rows:
            source = bench.source(rows)
            env = {**os.environ, **bench.env}
            command = [sys.executable, "-c", CHILD, "run", str(bench.contract), "--source"]
            child = subprocess.Popen(
                [*command, str(source)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            with TreeWatch(child.pid) as watch:
                out, err = child.communicate()
            if child.returncode:
                raise SystemExit(f"exchange run failed: {err.decode()[-2000:]}")
            peak_kb = int(err.decode().split("PEAK_KB")[1].split()[0])
            sent = out.decode().split("sent ")[1].split(";")[0]
            main_mb = peak_kb / 1024
            worker_mb = watch.peaks.by_role.get("validation worker", 0.0)
            largest = max([main_mb, *watch.peaks.by_role.values()])
            peaks.append(largest)
            trees.append(watch.peaks.tree_mb)
            source_mb = source.stat().st_size / 1e6
            print(
                f"{rows:>10,} {source_mb:>10,.0f} {sent:>10} {main_mb:>8,.0f} {worker_mb:>10,.0f} "
                f"{largest:>11,.0f} {watch.peaks.tree_mb:>8,.0f} {watch.peaks.tree_pss_mb:>12,.0f}",
                flush=True,
            )
        print(
            "main: the run's process (ru_maxrss); worker: its validation worker; largest: the "
            "largest single process; tree: the largest sums of the run's processes' RSS and PSS "
            "at one instant (sampled every 0.2 s)"
        )
        if len(peaks) > 1:
            growth = args.rows[-1] / args.rows[0]
            print(
                f"\ninput grew {growth:.0f}x; the largest process's peak grew "
                f"{peaks[-1] / peaks[0]:.2f}x, the processes' together {trees[-1] / trees[0]:.2f}x"
            )
    finally:
        bench.server.stop()
        shutil.rmtree(bench.root, ignore_errors=True)


if __name__ == "__main__":
    main()
