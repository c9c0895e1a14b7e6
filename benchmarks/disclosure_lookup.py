"""Disclosure ledger at scale: insert rate as the table grows, then "who has my data?" latency.

    python benchmarks/disclosure_lookup.py                    # 100 x 100,000 = 10M, SQLite
    python benchmarks/disclosure_lookup.py --transfers 10     # 1M
    python benchmarks/disclosure_lookup.py --url postgresql+psycopg://user@host/db
    python benchmarks/disclosure_lookup.py --transfers 1 --subjects 10000000 \
        --population 30000000 --taken    # one 10M drop, hashed first, as a run records it

The layout before the per-drop one (one table keyed by subject) is measured the same way from a
copy of the commit before it, this script given to it::

    git worktree add /tmp/disc-base 62cdf81~1
    PYTHONPATH=/tmp/disc-base python benchmarks/disclosure_lookup.py

Each transfer sends a random sample of a population of subject ids (10-digit numbers), so a
person appears in several transfers, as in real partnerships. Reports the insert rate (keyed
hashing included) for each million disclosures as the table grows, and the first million's
against the last's; in the per-drop layout the bulk merges are timed apart (they run before a
drop is recorded, at most once per `MERGE_AFTER` drops). Then the database size per disclosure,
and the p50/p99/max latency of `lookup` for random members of the population (a lookup returns
every transfer that carried the person). The load average is printed beside the figures: the
machine may be shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from exchange.audit import Disclosure, Disclosures
from exchange.audit.disclosures import SubjectHashes

FIRST_ID = 9_990_000_000
MILLION = 1_000_000


def facts(n: int, at: dt.datetime) -> Disclosure:
    return Disclosure(
        drop_id=f"bench-{n:05d}",
        contract_id=f"contract-{n % 7}",
        contract_version="1.0.0",
        recipient=f"Partner {n % 5}",
        purposes=("safeguarding",),
        legal_basis="Children Act 2004 s.10; UK GDPR 6(1)(e)",
        fields=("person_ref", "attendance_rate", "exclusions"),
        sent_at=at,
    )


def size_of(url: str, engine: sa.Engine) -> tuple[int, int]:
    """Bytes the disclosure tables take, and the SQLite write-ahead log's (0 on PostgreSQL)."""
    if engine.dialect.name == "sqlite":
        database = Path(sa.engine.make_url(url).database or "")
        log = database.with_name(database.name + "-wal")
        wal = log.stat().st_size if log.exists() else 0
        with engine.connect() as conn:  # the log's pages into the file, so its size counts them
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return database.stat().st_size, wal
    names = ("disclosures", "disclosure_blocks", "disclosures_merged", "transfers")
    tables = [t for t in names if sa.inspect(engine).has_table(t)]
    sizes = " + ".join(f"pg_total_relation_size('{t}')" for t in tables)
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT {sizes}").scalar_one()), 0


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=100_000, help="per transfer")
    parser.add_argument("--population", type=int, default=2_000_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--url", help="database URL (default: a SQLite file, removed at the end)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--taken",
        action="store_true",
        help="hash the subjects before the timing, as a run does as it reads (SubjectHashes): "
        "what is timed is then what a run waits for once its source is read",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="disclosures-") as scratch:  # a few hundred MB
        measure(args, args.url or f"sqlite:///{Path(scratch) / 'audit.db'}")


def measure(args: argparse.Namespace, url: str) -> None:
    """Insert the transfers into the store at `url`, then time the lookups."""
    store = Disclosures(url, secrets.token_bytes(32))
    per_drop = hasattr(store, "merge")  # the layout this code has
    rng = np.random.default_rng(args.seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    layout = "per-drop layout" if per_drop else "one table keyed by subject"
    print(f"{store.engine.dialect.name}, {layout}: {args.transfers} transfers x {args.subjects:,}")
    print(f"  start: {load()}", flush=True)

    total, inserting, merging = 0, 0.0, 0.0
    merges: list[tuple[int, float]] = []  # (drops merged, seconds)
    rates: list[float] = []  # disclosures per second of inserting, per million
    mark, mark_total, mark_time = MILLION, 0, 0.0
    for n in range(args.transfers):
        chosen = rng.choice(args.population, size=args.subjects, replace=False) + FIRST_ID
        if per_drop:  # what `record` would do first, timed apart
            t0 = time.perf_counter()
            moved = store.merge()
            if moved:
                merges.append((moved, time.perf_counter() - t0))
                merging += merges[-1][1]
        subjects: pa.Array | SubjectHashes = pa.array(chosen)
        if args.taken:
            subjects = store.hashes()
            subjects.add(pa.array(chosen))
        t0 = time.perf_counter()
        recorded = store.record(facts(n, start + dt.timedelta(days=n)), subjects)
        inserting += time.perf_counter() - t0
        total += recorded.subjects
        while total >= mark:
            if inserting > mark_time:  # one figure for a drop of several millions
                rate = (total - mark_total) / (inserting - mark_time)
                rates.append(rate)
                merged = sum(s for _, s in merges)
                print(
                    f"  {mark // MILLION:3d}M: {rate:>9,.0f}/s inserting up to this million; "
                    f"{len(merges)} merges so far, {merged:,.1f} s",
                    flush=True,
                )
            mark, mark_total, mark_time = mark + MILLION, total, inserting
    size, wal = size_of(url, store.engine)
    print(
        f"inserted {total:,} disclosures: {inserting:,.1f} s inserting ({total / inserting:,.0f}/s)"
        f" + {merging:,.1f} s merging = {total / (inserting + merging):,.0f}/s overall; "
        f"{size / 2**20:,.0f} MiB, {size / max(total, 1):.1f} bytes per disclosure"
        + (f" (the write-ahead log had grown to {wal / 2**20:,.0f} MiB)" if wal else "")
    )
    if rates:
        print(
            f"first million {rates[0]:,.0f}/s, last million {rates[-1]:,.0f}/s "
            f"(last/first {rates[-1] / rates[0]:.2f})"
        )
    if merges:
        longest = max(merges, key=lambda m: m[1])
        print(
            f"{len(merges)} bulk merges, {merging:,.1f} s in all; the longest moved "
            f"{longest[0]} drops in {longest[1]:,.1f} s"
        )
    print(f"  after inserting: {load()}", flush=True)

    people = rng.choice(args.population, size=args.lookups, replace=False) + FIRST_ID
    store.lookup(int(people[0]))  # warm the connection pool
    times, found = [], 0
    for person in people:
        t0 = time.perf_counter()
        found += len(store.lookup(int(person)))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    recent = ""
    if per_drop:
        with store.engine.connect() as conn:
            inspector = sa.inspect(conn)
            counts = [
                conn.exec_driver_sql(
                    f"SELECT count(DISTINCT transfer_id) FROM {table}"  # noqa: S608 (no input)
                ).scalar_one()
                if inspector.has_table(table)
                else 0
                for table in ("disclosures", "disclosure_blocks")
            ]
            recent = (
                f"; {counts[0]} drops probed by row and {counts[1]} by block, the rest by subject"
            )
    print(
        f"{args.lookups} lookups at {total:,} disclosures: p50 {statistics.median(times):.2f} ms, "
        f"p99 {p99:.2f} ms, max {times[-1]:.2f} ms; {found / args.lookups:.1f} transfers per "
        f"person on average{recent}"
    )
    print(f"  end: {load()}")
    store.close()


if __name__ == "__main__":
    main()
