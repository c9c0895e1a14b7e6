"""IG officers' commands: contract lint, diff, render, register, approve, suspend, resume."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from exchange.cli._common import (
    BAD_INPUT,
    OK,
    passphrase,
    passphrase_options,
    say,
)
from exchange.errors import ContractError
from exchange.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from exchange.cli._common import Subcommands

# `contract diff` answers a question, so its verdicts are kept apart from the failure codes
# (1-5): a script tells "needs re-approval" from "the contract is invalid" by the code alone.
DIFF_EXIT_CODES: Final = {"identical": 0, "editorial": 10, "needs-re-approval": 11}


def cmd_lint(args: argparse.Namespace) -> int:
    """Check contract files and list every problem."""
    from exchange.contract import load_contract
    from exchange.quality import compile_rules

    status = OK
    for path in args.files:
        try:
            compile_rules(load_contract(path))
        except ContractError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            status = BAD_INPUT
        else:
            say(f"{path}: OK")
    return status


def cmd_diff(args: argparse.Namespace) -> int:
    """Say what changed between two versions of a contract, and whether it needs re-approval."""
    from exchange.contract import canonical_sha256
    from exchange.contract.diff import classify, diff_documents, read_revision

    old_label, old = read_revision(args.old)
    new_label, new = read_revision(args.new)
    changes = diff_documents(old, new)
    for change in changes:
        tag = "needs re-approval" if change.reapproval else "editorial"
        say(f"[{tag}] {change.kind} at {change.path}: {change.summary}")
    verdict = classify(changes)
    if verdict == "identical" and canonical_sha256(old) != canonical_sha256(new):
        say("same terms, but the fields are in another order (the payload's column order)")
        verdict = "needs-re-approval"
    say(f"{old_label} -> {new_label}: {verdict} ({len(changes)} change(s))")
    return DIFF_EXIT_CODES[verdict]


def cmd_render(args: argparse.Namespace) -> int:
    """Write an agreement's human-readable summary (HTML and Markdown)."""
    from exchange.contract import load_contract
    from exchange.register import write_agreement

    html, markdown = write_agreement(load_contract(args.contract), args.out, today=dt.date.today())
    say(f"{html}\n{markdown}")
    return OK


def cmd_register(args: argparse.Namespace) -> int:
    """Publish the register of all agreements in a folder."""
    from exchange.register import build_register

    entries = build_register(args.folder, args.out, today=dt.date.today())
    invalid = sum(1 for e in entries if e.get("status") == "invalid")
    say(f"{len(entries)} agreement(s), {invalid} invalid: {args.out / 'index.html'}")
    return OK


def _officer_key(args: argparse.Namespace) -> Ed25519PrivateKey:
    """The officer's signing key, asking for its passphrase at a terminal when it has one."""
    from exchange.crypto.signing import load_private_key

    secret = passphrase(args)
    if secret is None and b"ENCRYPTED" in args.key.read_bytes() and sys.stdin.isatty():
        secret = getpass.getpass(f"Passphrase for {args.key.name}: ").encode()
    return load_private_key(args.key, secret)


def _governance() -> Any:
    from exchange.approval import Governance

    return Governance.from_settings(Settings.from_env())


def cmd_approve(args: argparse.Namespace) -> int:
    """Sign an approval of a contract."""
    from exchange.contract import load_contract
    from exchange.quality import compile_rules

    contract = load_contract(args.contract)
    compile_rules(contract)  # a contract whose rules cannot be enforced cannot be approved
    review_by = dt.date.fromisoformat(args.review_by) if args.review_by else None
    governance = _governance()
    path = governance.approve(
        contract, _officer_key(args), now=dt.datetime.now(dt.UTC), review_by=review_by
    )
    state = governance.check(contract, dt.date.today())
    governance.ledger.append(
        "contract.approved",
        {
            "contract_sha256": contract.sha256,
            "version": contract.version,
            "approver": state.approver,
            "review_by": state.review_by,
        },
        contract_id=contract.id,
    )
    say(
        f"approved {contract.id} {contract.version} by {state.approver}; review by "
        f"{state.review_by}\napproval: {path}"
    )
    return OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """Stop an agreement at once, under whatever file name it is copied to."""
    from exchange.contract import load_contract

    contract = load_contract(args.contract)
    entry, copy = _governance().suspend(
        contract, _officer_key(args), reason=args.reason, now=dt.datetime.now(dt.UTC)
    )
    say(
        f"suspended {contract.id}: no run will start until a trusted officer resumes it "
        f"(ledger entry {entry.seq})" + (f"\ncommit the signed copy: {copy}" if copy else "")
    )
    return OK


def cmd_resume(args: argparse.Namespace) -> int:
    """Lift a suspension with a signed resume."""
    from exchange.contract import load_contract

    contract = load_contract(args.contract)
    who = _governance().resume(contract, _officer_key(args), now=dt.datetime.now(dt.UTC))
    say(f"resumed {contract.id} by {who.label}; it runs again if its approval is valid")
    return OK


def add_contract(sub: Subcommands) -> None:
    """`exchange contract ...`."""
    contract = sub.add_parser("contract", help="work with data contracts").add_subparsers(
        dest="action", required=True
    )
    lint = contract.add_parser("lint", help="check contracts; list every problem")
    lint.add_argument("files", nargs="+", type=Path)
    lint.set_defaults(func=cmd_lint)

    diff = contract.add_parser("diff", help="what changed, and does it need re-approval?")
    diff.add_argument("old", help="a contract file, or REV:path for a git revision")
    diff.add_argument("new", help="a contract file, or REV:path for a git revision")
    diff.set_defaults(func=cmd_diff)

    render = contract.add_parser("render", help="human-readable summary (HTML and Markdown)")
    render.add_argument("contract", type=Path)
    render.add_argument("--out", type=Path, default=Path("."), help="folder for the pages")
    render.set_defaults(func=cmd_render)

    register = contract.add_parser("register", help="publish the register of agreements")
    register.add_argument("folder", type=Path, help="the contracts folder")
    register.add_argument("--out", type=Path, required=True, help="folder for the register")
    register.set_defaults(func=cmd_register)

    approve = contract.add_parser("approve", help="sign an approval (IG officers)")
    approve.add_argument("contract", type=Path)
    approve.add_argument("--key", type=Path, required=True, help="your Ed25519 signing key")
    approve.add_argument("--review-by", help="review date, YYYY-MM-DD (at most two years ahead)")
    passphrase_options(approve)
    approve.set_defaults(func=cmd_approve)

    suspend = contract.add_parser("suspend", help="stop an agreement at once (IG officers)")
    suspend.add_argument("contract", type=Path)
    suspend.add_argument("--key", type=Path, required=True, help="your Ed25519 signing key")
    suspend.add_argument("--reason", required=True)
    passphrase_options(suspend)
    suspend.set_defaults(func=cmd_suspend)

    resume = contract.add_parser("resume", help="lift a suspension (IG officers)")
    resume.add_argument("contract", type=Path)
    resume.add_argument("--key", type=Path, required=True, help="your Ed25519 signing key")
    passphrase_options(resume)
    resume.set_defaults(func=cmd_resume)
