"""`exchange audit witnesses` (partners' cosignatures of the ledger) and `exchange audit bundle`
(one file an auditor checks offline). Registered by `exchange.cli.auditors.add_audit`."""

from __future__ import annotations

import argparse
import json
import sys
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


def add_witness_commands(audit: _argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `witnesses` to `exchange audit`."""
    witnesses = audit.add_parser(
        "witnesses", help="per partner, the largest ledger size it cosigned and when"
    )
    witnesses.add_argument("--url", help="ledger URL (default: EXCHANGE_AUDIT_URL)")
    witnesses.add_argument("--json", action="store_true", help="print JSON")
    witnesses.set_defaults(func=cmd_audit_witnesses)
