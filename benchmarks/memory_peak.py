"""Peak memory of a whole exchange at two input sizes: it must not grow with the input.

    python benchmarks/memory_peak.py [--rows 200000 2000000]

Each size runs `exchange run` in its own process against a real partner sshd, and reports that
process's peak resident set size (ru_maxrss) beside the source file's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

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
    bench = workbench()
    try:
        print(f"{'rows':>10} {'source MB':>10} {'rows sent':>10} {'peak RSS MB':>12}")
        peaks = []
        for rows in args.rows:
            source = bench.source(rows)
            env = {**os.environ, **bench.env}
            done = subprocess.run(
                [sys.executable, "-c", CHILD, "run", str(bench.contract), "--source", str(source)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            peak_kb = int(done.stderr.split("PEAK_KB")[1].split()[0])
            sent = done.stdout.split("sent ")[1].split(";")[0]
            peaks.append(peak_kb / 1024)
            source_mb = source.stat().st_size / 1e6
            print(f"{rows:>10,} {source_mb:>10,.0f} {sent:>10} {peak_kb / 1024:>12,.0f}")
        if len(peaks) > 1:
            growth = args.rows[-1] / args.rows[0]
            print(f"\ninput grew {growth:.0f}x; peak memory grew {peaks[-1] / peaks[0]:.2f}x")
    finally:
        bench.server.stop()
        shutil.rmtree(bench.root, ignore_errors=True)


if __name__ == "__main__":
    main()
