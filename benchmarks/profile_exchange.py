"""Profile one exchange in-process (cProfile) and print where the time went.

    python benchmarks/profile_exchange.py --rows 200000 [--top 30] [--out FILE.prof]

As in `exchange run`, Great Expectations validates in the gate's worker process by default,
so only the waits for its verdicts are here; `--in-process` imports it before profiling starts,
as where a Celery worker preloads it, and the gate then validates in this process, in the
profile. The other threads' work (reading and minimising; hashing and recording subjects) is
not in it.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import time

from _workbench import workbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", help="also save the raw profile here")
    parser.add_argument("--in-process", action="store_true", help="validate in this process")
    args = parser.parse_args()
    bench = workbench()
    try:
        source = bench.source(args.rows)
        if args.in_process:
            import validators.suite  # noqa: F401 - loaded: the gate validates in this process

        gateway = bench.gateway()
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        result = gateway.run(bench.contract, source)
        profile.disable()
        print(f"{args.rows:,} rows, {result.rows_sent:,} sent: {time.perf_counter() - start:.2f} s")
        stats = pstats.Stats(profile).sort_stats("cumulative")
        stats.print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        if args.out:
            stats.dump_stats(args.out)
    finally:
        bench.server.stop()
        shutil.rmtree(bench.root, ignore_errors=True)


if __name__ == "__main__":
    main()
