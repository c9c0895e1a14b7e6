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
from exchange.errors import ContractError, ExchangeError, InvalidRequest
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
    from exchange.quality_rules import compile_rules

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

    if args.new is None:  # one version given: compare it with its last approved version
        old_label, old = _approved_base(args.old)
        new_label, new = read_revision(args.old)
    else:
        old_label, old = read_revision(args.old)
        new_label, new = read_revision(args.new)
    changes = diff_documents(old, new)
    for change in changes:
        say(_change_line(change))
    verdict = classify(changes)
    if verdict == "identical" and canonical_sha256(old) != canonical_sha256(new):
        say("same terms, but the fields are in another order (the payload's column order)")
        verdict = "needs-re-approval"
    say(f"{old_label} -> {new_label}: {verdict} ({len(changes)} change(s))")
    return DIFF_EXIT_CODES[verdict]


def _change_line(change: Any) -> str:
    tag = "needs re-approval" if change.reapproval else "editorial"
    return f"[{tag}] {change.kind} at {change.path}: {change.summary}"


def _approved_base(spec: str) -> tuple[str, dict[str, Any]]:
    """The last approved version of the contract file `spec`, from the copy approve keeps."""
    from exchange.approval import approval_path, last_approval
    from exchange.contract.load import read_document

    path = Path(spec)
    if not path.is_file():
        raise InvalidRequest(
            f"{spec} is not a contract file: give two versions, OLD and NEW (files or REV:path)"
        )
    contract_id = str(read_document(path).get("id"))
    trust, why = _trust_or_why()
    last = last_approval(path, contract_id, trust)
    if last is None:
        raise InvalidRequest(
            f"{path} has no approval beside it ({approval_path(path).name}) to compare with: "
            f"give the old version too, e.g. exchange contract diff HEAD:{spec} {spec}"
        )
    if not last.verified:
        raise InvalidRequest(
            f"the approval beside {path} does not verify against the trusted approvers ({why}): "
            "it is no base to compare with; give the old version too, e.g. "
            f"exchange contract diff HEAD:{spec} {spec}"
        )
    if last.copy is None:
        raise InvalidRequest(
            f"the approved version of {contract_id} ({last.sha256[:16]}) was not kept (it was "
            "approved before approve kept copies, or the copy was changed): give the old "
            f"version too, e.g. exchange contract diff HEAD:{spec} {spec}"
        )
    assert last.copy is not None
    return f"approved {last.version} ({last.copy}, by {last.approver})", read_document(last.copy)


def _trust_or_why() -> tuple[Any, str]:
    """The trusted approvers if they can be read here, else None and why not."""
    from exchange.trust import load_trust

    try:
        settings = Settings.from_env()
        trust = load_trust(settings.approvers, contracts=settings.contracts)
    except ExchangeError as exc:
        return None, str(exc)
    return trust, "not signed by a trusted approver's key"


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

    key = args.gateway_key
    if key is None:
        signing_key = Settings.from_env().signing_key
        default = signing_key.with_name(signing_key.name + ".pub")
        key = default if default.is_file() else None
    entries = build_register(args.folder, args.out, today=dt.date.today(), gateway_key=key)
    invalid = sum(1 for e in entries if e.get("status") == "invalid")
    say(f"{len(entries)} agreement(s), {invalid} invalid: {args.out / 'index.html'}")
    if key is None:
        say("the gateway's public key is not published: give --gateway-key gateway.key.pub")
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
    """Show what is being signed, ask to confirm, then sign an approval of a contract."""
    from exchange.contract import load_contract
    from exchange.quality_rules import compile_rules

    contract = load_contract(args.contract)
    compile_rules(contract)  # a contract whose rules cannot be enforced cannot be approved
    review_by = dt.date.fromisoformat(args.review_by) if args.review_by else None
    governance = _governance()
    now = dt.datetime.now(dt.UTC)
    governance.review_date(contract, now=now, review_by=review_by)  # a draft fails here
    key = _officer_key(args)
    signer = governance.signer(key)  # an untrusted key fails before anything is shown
    preview = governance.preview(contract, now=now, review_by=review_by)
    for line in _preview_lines(preview, signer.label):
        say(line)
    _confirm(args)
    path = governance.approve(contract, key, now=now, review_by=review_by)
    state = governance.check(contract, now.date())
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


def _preview_lines(preview: Any, signer: str) -> list[str]:
    """What the officer is about to sign, and what changed since the last approved version."""
    contract, last = preview.contract, preview.last
    lines = [
        f"You are about to approve {contract.id}",
        f"  version:   {contract.version}",
        f"  digest:    sha256:{contract.sha256}",
        f"  file:      {contract.path}",
        f"  signed by: {signer}; review by {preview.review_by.isoformat()}",
    ]
    if last is None:
        lines.append(
            "No earlier approval beside it: review the whole agreement "
            f"(exchange contract render {contract.path})."
        )
    elif not last.verified:
        # A forged or unsigned approval file says nothing: never "renews" or "no changes".
        lines.append(
            "No verified approved version: the approval file beside it does not verify "
            "against the trusted approvers. Review the whole agreement "
            f"(exchange contract render {contract.path})."
        )
    else:
        lines.append(
            f"Last approved: version {last.version}, sha256:{last.sha256[:16]}..., by "
            f"{last.approver} at {last.at}"
        )
        if last.sha256 == contract.sha256:
            lines.append(
                "The content is the same as the last approved version: signing renews the approval."
            )
        elif preview.changes is None:
            lines.append(
                "The approved version was not kept, so the changes cannot be shown: "
                f"compare with git (exchange contract diff HEAD:{contract.path} "
                f"{contract.path})."
            )
        else:
            lines.append(
                f"Changes since then: {preview.verdict} ({len(preview.changes)} change(s))"
            )
            lines.extend(f"  {_change_line(change)}" for change in preview.changes)
    if preview.same_version:
        shown = ", ".join(d[:16] for d in preview.same_version)
        lines.append(
            f"warning: version {contract.version} was already approved with other content "
            f"({shown}): the content changed but `version` did not; set a new version so "
            "partners and auditors can tell the agreements apart"
        )
    return lines


def _confirm(args: argparse.Namespace) -> None:
    """Ask the officer to confirm at a terminal; --yes stands for the answer in a script."""
    from exchange.approval import ApprovalError

    if args.yes:
        return
    if not sys.stdin.isatty():
        raise ApprovalError(
            "nothing signed: approve asks for confirmation at a terminal; in a script, read "
            "the summary above and add --yes"
        )
    try:
        answer = input("Sign this approval? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in {"y", "yes"}:
        raise ApprovalError("nothing signed: you did not confirm")


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
    diff.add_argument(
        "old",
        help="a contract file, or REV:path for a git revision; given alone, the new version, "
        "compared with the copy its last approval kept",
    )
    diff.add_argument("new", nargs="?", help="a contract file, or REV:path for a git revision")
    diff.set_defaults(func=cmd_diff)

    render = contract.add_parser("render", help="human-readable summary (HTML and Markdown)")
    render.add_argument("contract", type=Path)
    render.add_argument("--out", type=Path, default=Path("."), help="folder for the pages")
    render.set_defaults(func=cmd_render)

    register = contract.add_parser("register", help="publish the register of agreements")
    register.add_argument("folder", type=Path, help="the contracts folder")
    register.add_argument("--out", type=Path, required=True, help="folder for the register")
    register.add_argument(
        "--gateway-key",
        type=Path,
        help="the gateway's public signing key to publish (default: EXCHANGE_SIGNING_KEY + .pub, "
        "if it exists)",
    )
    register.set_defaults(func=cmd_register)

    approve = contract.add_parser("approve", help="sign an approval (IG officers)")
    approve.add_argument("contract", type=Path)
    approve.add_argument("--key", type=Path, required=True, help="your Ed25519 signing key")
    approve.add_argument("--review-by", help="review date, YYYY-MM-DD (at most two years ahead)")
    approve.add_argument(
        "--yes", action="store_true", help="sign without asking (scripts); the summary is shown"
    )
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
