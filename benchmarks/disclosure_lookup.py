"""Disclosure ledger at scale: insert rate, then "who has my data?" lookup latency.

    python benchmarks/disclosure_lookup.py                    # 100 x 100,000 = 10M, SQLite
    python benchmarks/disclosure_lookup.py --transfers 10     # 1M
    python benchmarks/disclosure_lookup.py --url postgresql+psycopg://user@host/db

Each transfer sends a random sample of a population of subject ids (10-digit numbers), so a
person appears in several transfers, as in real partnerships. Reports the insert rate (keyed
hashing included), the database size per disclosure, and the p50/p99 latency of `lookup` for
random members of the population (a lookup returns every transfer that carried the person).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from exchange.audit import Disclosure, Disclosures

FIRST_ID = 9_990_000_000


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


def size_of(url: str, engine: sa.Engine) -> int:
    """Bytes the disclosure tables take (SQLite: the files; PostgreSQL: the relations)."""
    if engine.dialect.name == "sqlite":
        database = sa.engine.make_url(url).database or ""
        return sum(p.stat().st_size for p in Path(database).parent.glob(Path(database).name + "*"))
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT pg_total_relation_size('disclosures') + pg_total_relation_size('transfers')"
            ).scalar_one()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=100_000, help="per transfer")
    parser.add_argument("--population", type=int, default=2_000_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--url", help="database URL (default: a new SQLite file)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='disclosures-')) / 'audit.db'}"
    store = Disclosures(url, secrets.token_bytes(32))
    rng = np.random.default_rng(args.seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    print(f"{store.engine.dialect.name}: {args.transfers} transfers x {args.subjects:,} subjects")

    total, began, last = 0, time.perf_counter(), time.perf_counter()
    for n in range(args.transfers):
        chosen = rng.choice(args.population, size=args.subjects, replace=False) + FIRST_ID
        recorded = store.record(facts(n, start + dt.timedelta(days=n)), pa.array(chosen))
        total += recorded.subjects
        if (n + 1) % max(1, args.transfers // 10) == 0:
            now = time.perf_counter()
            print(
                f"  {n + 1:4d} transfers, {total:>11,} disclosures, "
                f"{total / (now - began):>9,.0f}/s overall, "
                f"{args.subjects * max(1, args.transfers // 10) / (now - last):>9,.0f}/s lately",
                flush=True,
            )
            last = now
    elapsed = time.perf_counter() - began
    size = size_of(url, store.engine)
    print(
        f"inserted {total:,} disclosures in {elapsed:,.1f} s: {total / elapsed:,.0f}/s; "
        f"{size / 2**20:,.0f} MiB, {size / max(total, 1):.1f} bytes per disclosure"
    )

    people = rng.choice(args.population, size=args.lookups, replace=False) + FIRST_ID
    store.lookup(int(people[0]))  # warm the connection pool
    times, found = [], 0
    for person in people:
        t0 = time.perf_counter()
        found += len(store.lookup(int(person)))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"{args.lookups} lookups: p50 {statistics.median(times):.2f} ms, p99 {p99:.2f} ms, "
        f"max {times[-1]:.2f} ms; {found / args.lookups:.1f} transfers per person on average"
    )
    store.close()


if __name__ == "__main__":
    main()
