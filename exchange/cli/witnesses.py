"""`exchange audit witnesses` (partners' cosignatures of the ledger) and `exchange audit bundle`
(one file an auditor checks offline). Registered by `exchange.cli.auditors.add_audit`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.cli._common import OK, say
from exchange.settings import Settings

if TYPE_CHECKING:
    import argparse as _argparse


def cmd_audit_witnesses(args: argparse.Namespace) -> int:
    """Per partner key, the largest tree size it has cosigned and when."""
    from exchange.audit import Ledger, witness

    ledger = Ledger(args.url or Settings.from_env().audit_url, create=False)
    try:
        found = witness.largest_cosigned(ledger.entries())
    finally:
        ledger.close()
    if args.json:
        rows = [c.__dict__ for c in found]
        sys.stdout.write(json.dumps({"witnesses": rows}, indent=2) + "\n")
        return OK
    if not found:
        say("no partner has cosigned a checkpoint yet (acknowledgements collected: none cosigned)")
        return OK
    say(f"{'agreement':<36} {'witness (partner key)':<40} {'size':>8}  cosigned at")
    for c in found:
        say(f"{c.contract_id:<36} {c.witness:<40} {c.size:>8}  {c.at}")
    return OK


def cmd_audit_bundle(args: argparse.Namespace) -> int:
    """Write one file with everything needed to check an agreement's history offline."""
    import datetime as dt

    from exchange.audit.bundle import write_bundle
    from exchange.errors import InvalidRequest

    try:
        since = dt.date.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise InvalidRequest(f"--since {args.since!r} is not a date: use YYYY-MM-DD") from None
    document = write_bundle(Settings.from_env(), args.agreement, args.out, since=since)
    say(
        f"wrote {args.out} (0600): {len(document['entries'])} ledger entries of "
        f"{args.agreement} with inclusion proofs against a checkpoint of "
        f"{document['checkpoint'].split(chr(10))[1]} entries, {len(document['cosigned'])} "
        f"cosigned checkpoints, {len(document['contracts'])} contract versions; check it with: "
        f"python3 scripts/verify_bundle.py {args.out} --gateway-key GATEWAY.pub"
    )
    return OK


def add_witness_commands(audit: _argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `witnesses` and `bundle` to `exchange audit`."""
    witnesses = audit.add_parser(
        "witnesses", help="per partner, the largest ledger size it cosigned and when"
    )
    witnesses.add_argument("--url", help="ledger URL (default: EXCHANGE_AUDIT_URL)")
    witnesses.add_argument("--json", action="store_true", help="print JSON")
    witnesses.set_defaults(func=cmd_audit_witnesses)

    bundle = audit.add_parser(
        "bundle", help="one file to check an agreement's history offline (scripts/verify_bundle.py)"
    )
    bundle.add_argument("--agreement", required=True, help="the contract id")
    bundle.add_argument("--since", help="only entries from this day, YYYY-MM-DD")
    bundle.add_argument("--out", type=Path, required=True, help="the file to write (0600)")
    bundle.set_defaults(func=cmd_audit_bundle)
