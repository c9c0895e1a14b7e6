"""The `exchange` command: one entry point, subcommands by role.

Exit codes: 0 done; 1 unexpected failure; 2 bad input (contract, source, usage);
3 refused by policy (not runnable, guard, quality); 4 delivery failed; 5 verification failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.approval import ApprovalError
from exchange.errors import (
    ContractError,
    CryptoError,
    DropRejected,
    ExchangeError,
    LedgerError,
    Refused,
    Retryable,
    SourceError,
    TransferError,
)
from exchange.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from exchange.audit import Ledger

OK, FAILED, BAD_INPUT, REFUSED, DELIVERY_FAILED, NOT_VERIFIED = 0, 1, 2, 3, 4, 5


def _say(message: str) -> None:
    print(message, flush=True)


def _error(kind: str, message: str) -> None:
    print(f"exchange: {kind}: {message}", file=sys.stderr, flush=True)


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
            _say(f"{path}: OK")
    return status


def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes | None:
    """A key passphrase from the named environment variable, or asked for at the terminal."""
    if getattr(args, "passphrase_env", None):
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise CryptoError(f"environment variable {args.passphrase_env} is empty or unset")
        return value.encode()
    if getattr(args, "ask_passphrase", False):
        first = getpass.getpass("Passphrase: ")
        if confirm and getpass.getpass("Passphrase again: ") != first:
            raise CryptoError("the passphrases do not match")
        return first.encode()
    return None


def _officer_key(args: argparse.Namespace) -> Ed25519PrivateKey:
    from exchange.crypto.signing import load_private_key

    passphrase = _passphrase(args)
    if passphrase is None and b"ENCRYPTED" in args.key.read_bytes() and sys.stdin.isatty():
        passphrase = getpass.getpass(f"Passphrase for {args.key.name}: ").encode()
    return load_private_key(args.key, passphrase)


def cmd_diff(args: argparse.Namespace) -> int:
    """Say what changed between two versions of a contract, and whether it needs re-approval."""
    from exchange.contract import canonical_sha256
    from exchange.contract.diff import EXIT_CODES, classify, diff_documents, read_revision

    old_label, old = read_revision(args.old)
    new_label, new = read_revision(args.new)
    changes = diff_documents(old, new)
    for change in changes:
        tag = "needs re-approval" if change.reapproval else "editorial"
        _say(f"[{tag}] {change.kind} at {change.path}: {change.summary}")
    verdict = classify(changes)
    if verdict == "identical" and canonical_sha256(old) != canonical_sha256(new):
        _say("same terms, but the fields are in another order (the payload's column order)")
        verdict = "needs-re-approval"
    _say(f"{old_label} -> {new_label}: {verdict} ({len(changes)} change(s))")
    return EXIT_CODES[verdict]


def cmd_render(args: argparse.Namespace) -> int:
    """Write an agreement's human-readable summary (HTML and Markdown)."""
    import datetime as dt

    from exchange.contract import load_contract
    from exchange.register import write_agreement

    html, markdown = write_agreement(load_contract(args.contract), args.out, today=dt.date.today())
    _say(f"{html}\n{markdown}")
    return OK


def cmd_register(args: argparse.Namespace) -> int:
    """Publish the register of all agreements in a folder."""
    import datetime as dt

    from exchange.register import build_register

    entries = build_register(args.folder, args.out, today=dt.date.today())
    invalid = sum(1 for e in entries if e.get("status") == "invalid")
    _say(f"{len(entries)} agreement(s), {invalid} invalid: {args.out / 'index.html'}")
    return OK


def _governance() -> Any:
    from exchange.approval import Governance

    return Governance.from_settings(Settings.from_env())


def cmd_approve(args: argparse.Namespace) -> int:
    """Sign an approval of a contract."""
    import datetime as dt

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
    _say(
        f"approved {contract.id} {contract.version} by {state.approver}; review by "
        f"{state.review_by}\napproval: {path}"
    )
    return OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """Stop an agreement at once, under whatever file name it is copied to."""
    import datetime as dt

    from exchange.contract import load_contract

    contract = load_contract(args.contract)
    entry, copy = _governance().suspend(
        contract, _officer_key(args), reason=args.reason, now=dt.datetime.now(dt.UTC)
    )
    _say(
        f"suspended {contract.id}: no run will start until a trusted officer resumes it "
        f"(ledger entry {entry.seq})" + (f"\ncommit the signed copy: {copy}" if copy else "")
    )
    return OK


def cmd_resume(args: argparse.Namespace) -> int:
    """Lift a suspension with a signed resume."""
    import datetime as dt

    from exchange.contract import load_contract

    contract = load_contract(args.contract)
    who = _governance().resume(contract, _officer_key(args), now=dt.datetime.now(dt.UTC))
    _say(f"resumed {contract.id} by {who.label}; it runs again if its approval is valid")
    return OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run one exchange without Airflow."""
    from exchange.gateway import Gateway

    gateway = Gateway.from_env()
    result = gateway.run(
        args.contract, args.source, run_id=args.run_id, full_refresh=args.full_refresh
    )
    excluded = ", ".join(f"{n} {why}" for why, n in result.excluded.items()) or "none"
    if result.objections_overridden:
        excluded += f" ({result.objections_overridden} objections overridden by the legal basis)"
    verb = "was already delivered to" if result.already_delivered else "delivered to"
    _say(
        f"run {result.run_id}: read {result.rows_read} rows, excluded {excluded}, "
        f"sent {result.rows_sent}; drop {result.drop_id} {verb} {result.remote_path}"
    )
    return OK


def cmd_receive(args: argparse.Namespace) -> int:
    """Verify and decrypt a drop (partner side)."""
    from exchange.receive import receive

    outbox = None
    if args.ack_connection:
        if not (args.ack_folder and args.ack_key):
            raise CryptoError("--ack-connection needs --ack-folder and --ack-key")
        from exchange.acks import AckOutbox
        from exchange.secrets import LocalSecrets
        from exchange.transport import SftpTransport

        connection = LocalSecrets(Settings.from_env().secrets_file).sftp_connection(
            args.ack_connection
        )
        outbox = AckOutbox(SftpTransport(connection), args.ack_folder)
    try:
        got = receive(
            args.drop,
            identity=args.identity,
            sender_key=args.sender_key,
            out_dir=args.out,
            ack_key=args.ack_key,
            ack_key_passphrase=_passphrase(args) if args.ack_key else None,
            ack_outbox=outbox,
            again=args.again,
            overwrite=args.overwrite,
        )
    except OSError as exc:  # the output folder (not the drop): unwritable, full, a planted link
        _error("file", f"{exc.strerror or exc}: {Path(exc.filename or args.out).name}")
        return BAD_INPUT
    _say(
        f"drop {got.drop_id} verified (signature, checksum, {got.rows} rows) under contract "
        f"{got.contract_id}; data written to {got.output}"
    )
    return OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recompute the ledger's hash chain and check it against every checkpoint: stored, handed
    out (kept outside the database) and held by others."""
    from exchange.settings import Settings

    settings = Settings.from_env()
    ledger = _audit_ledger(settings, args)
    public = _gateway_public_key(args, settings)
    held = [path.read_text("utf-8") for path in args.held or []]
    result = ledger.verify(
        args.from_seq,
        args.to_seq,
        public_key=public,
        origin=_audit_origin(args, settings, public),
        held=held,
    )
    if not result.ok:
        from exchange.incidents import Incident, notifiers_from_env, raise_incident

        if args.record_incident:
            incident = Incident("ledger-broken", result.message)
            raise_incident(ledger, incident, notifiers_from_env())
        _error("ledger broken", result.message)
        return NOT_VERIFIED
    _say(f"OK: {result.message}")
    if public is None:
        _error("warning", "no public key: checkpoint signatures were NOT checked (--public-key)")
    if ledger.anchor is None:
        _error("warning", "no checkpoints kept outside the database were found to check against")
    return OK


def _audit_ledger(settings: Settings, args: argparse.Namespace | None = None) -> Ledger:
    """The ledger (--url, else the configured one) with the checkpoints handed out beside it:
    --checkpoints, else EXCHANGE_HOME/checkpoints when it exists."""
    from exchange.audit import Ledger
    from exchange.audit.anchor import anchor_folder

    url = getattr(args, "url", None) or settings.audit_url
    folder = getattr(args, "checkpoints", None) or anchor_folder(settings.home)
    if getattr(args, "checkpoints", None) is not None and not folder.is_dir():
        raise LedgerError(f"no folder of handed-out checkpoints at {folder}")
    return Ledger(url, create=False, anchor=folder if folder.is_dir() else None)


def _audit_origin(
    args: argparse.Namespace, settings: Settings, public: Ed25519PublicKey | None
) -> str | None:
    """The log's expected origin: --origin, else the gateway's (pinned, so a checkpoint of
    another log signed with the same key is refused); None when it cannot be known."""
    from exchange.crypto.signing import key_id

    if getattr(args, "origin", None):
        return str(args.origin)
    if public is not None:
        return settings.checkpoint_origin(key_id(public))
    return settings.log_origin


def _gateway_public_key(args: argparse.Namespace, settings: Settings) -> Ed25519PublicKey | None:
    """The gateway's public key: --public-key, else the one beside the signing key, if any."""
    from exchange.crypto.signing import load_public_key

    path = args.public_key or Path(f"{settings.signing_key}.pub")
    return load_public_key(path) if args.public_key or path.exists() else None


def _signed_head(settings: Settings) -> tuple[Ledger, str]:
    """The ledger, after signing a checkpoint of its current head; and that checkpoint."""
    from exchange.audit import Ledger
    from exchange.audit.anchor import anchor_folder
    from exchange.crypto.signing import key_id, load_private_key

    key = load_private_key(settings.signing_key)
    ledger = Ledger(settings.audit_url, create=False, anchor=anchor_folder(settings.home))
    origin = settings.checkpoint_origin(key_id(key.public_key()))
    return ledger, ledger.checkpoint(key, origin).note


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    """Sign a checkpoint of the ledger's current head and print it."""
    sys.stdout.write(_signed_head(Settings.from_env())[1])
    return OK


def cmd_audit_export(args: argparse.Namespace) -> int:
    """Write a self-contained, verifiable copy of the ledger."""
    settings = Settings.from_env()
    ledger, _ = _signed_head(settings)  # the export ends at a signed head
    path = ledger.export(args.out, Path(f"{settings.signing_key}.pub").read_text())
    _say(
        f"exported the ledger to {path} (0600); verify it with: exchange audit verify-export "
        f"{path} --public-key GATEWAY.pub"
    )
    return OK


def cmd_audit_verify_export(args: argparse.Namespace) -> int:
    """Verify an exported ledger offline, with only the gateway's public key."""
    from exchange.audit import verify_export
    from exchange.crypto.signing import key_id, load_public_key

    held = [p.read_text() for p in args.held or []]
    origin = args.origin or Settings.from_env().checkpoint_origin(
        key_id(load_public_key(args.public_key))
    )
    result = verify_export(args.export, args.public_key, held=held, origin=origin)
    if not result.ok:
        _error("export broken", result.message)
        return NOT_VERIFIED
    _say(f"OK: {result.message}")
    return OK


def cmd_audit_subject(args: argparse.Namespace) -> int:
    """Every disclosure about one person: when, which agreement, to whom, why, which fields.

    The rows answered from are checked against the audit ledger first, and the lookup itself
    is audited (a keyed hash of the id, who asked and why; never the id)."""
    from exchange.audit.disclosures import key_id, lookup_hash
    from exchange.gateway import Gateway

    subject = _audit_subject_id(args)
    if subject is None:
        return BAD_INPUT
    settings = Settings.from_env()
    disclosures = Gateway(settings).disclosures()
    ledger = _audit_ledger(settings)
    public = _gateway_public_key(args, settings)
    asked = {
        "subject_hash": lookup_hash(disclosures.key, subject),
        "key_id": key_id(disclosures.key),
        "requested_by": _audit_who(),
        "reason": args.reason,
    }
    try:
        found, verified = disclosures.verified_lookup(
            subject, ledger, public_key=public, origin=_audit_origin(args, settings, public)
        )
    except LedgerError as exc:
        ledger.append("subject.looked_up", {**asked, "outcome": "refused", "problem": str(exc)})
        raise
    ledger.append("subject.looked_up", {**asked, "outcome": "answered", "drops": len(found)})
    if public is None:
        _error("warning", "no public key: checkpoint signatures were NOT checked (--public-key)")
    if args.format == "json":
        rows = [
            {**dataclasses.asdict(d), "sent_at": d.sent_at.isoformat() if d.sent_at else None}
            for d in found
        ]
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return OK
    if not found:
        _say("no recorded disclosure about this subject")
    for d in found:
        when = d.sent_at.isoformat(timespec="seconds") if d.sent_at else "not delivered"
        _say(
            f"{when}  {d.contract_id} {d.contract_version} -> {d.recipient}; purposes: "
            f"{', '.join(d.purposes)}; basis: {d.legal_basis}; fields: {', '.join(d.fields)}; "
            f"drop {d.drop_id}"
        )
    _say(f"checked against the audit ledger: {verified.message}")
    return OK


def _audit_subject_id(args: argparse.Namespace) -> str | None:
    """The subject id from --id-file (a file, or - for standard input), or the positional
    argument with a warning; None (after saying why) when neither or both are given."""
    if (args.subject is None) == (args.id_file is None):
        _error("usage", "give the subject id with --id-file FILE (or - for standard input)")
        return None
    if args.subject is not None:
        _error(
            "warning",
            "a subject id on the command line is visible in ps and shell history; "
            "use --id-file - and type or pipe it instead",
        )
        return str(args.subject)
    text = sys.stdin.read() if str(args.id_file) == "-" else Path(args.id_file).read_text("utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        _error("usage", f"--id-file must hold exactly one subject id, not {len(lines)} lines")
        return None
    return lines[0]


def _audit_who() -> str:
    """Who is asking, as the operating system knows them."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (a container)
        return f"uid {os.getuid()}"


def cmd_audit_report(args: argparse.Namespace) -> int:
    """Write the period's transfers, refusals and incidents as HTML, CSV or JSON."""
    import datetime as dt

    from exchange import reporting
    from exchange.audit import Ledger
    from exchange.settings import Settings

    url = args.url or Settings.from_env().audit_url
    until = dt.date.fromisoformat(args.until) if args.until else dt.date.today()
    since = dt.date.fromisoformat(args.since) if args.since else until - dt.timedelta(days=30)
    report = reporting.build(Ledger(url, create=False).entries(), since, until, args.agreement)
    render = {"html": reporting.to_html, "csv": reporting.to_csv, "json": reporting.to_json}
    text = render[args.format](report)
    if args.out:
        args.out.write_text(text, "utf-8")
        _say(
            f"{len(report.transfers)} transfer(s), {len(report.problems)} refusal(s) or "
            f"failure(s), {len(report.incidents)} incident(s) from {since} to {until}: {args.out}"
        )
    else:
        sys.stdout.write(text)
    return OK


def cmd_acks_collect(args: argparse.Namespace) -> int:
    """Collect the partner's signed acknowledgements; flag drops past their deadline."""
    from exchange.contract import load_contract
    from exchange.gateway import Gateway

    received, overdue = Gateway(Settings.from_env()).collect_acks(load_contract(args.contract))
    _say(f"{received} acknowledgement(s) recorded; {overdue} drop(s) overdue")
    return REFUSED if overdue else OK


def cmd_drops_expire(args: argparse.Namespace) -> int:
    """Remove drops past the agreement's retention from the partner's inbox."""
    from exchange.contract import load_contract
    from exchange.gateway import Gateway

    removed = Gateway(Settings.from_env()).expire_drops(load_contract(args.contract))
    _say(f"{len(removed)} drop(s) past retention removed" + "".join(f"\n  {d}" for d in removed))
    return OK


def cmd_rectify(args: argparse.Namespace) -> int:
    """Notify every recipient of a person's data that some of it was inaccurate."""
    from exchange.gateway import Gateway

    settings = Settings.from_env()
    contracts = args.contracts or settings.contracts
    sent = Gateway(settings).rectify(
        args.subject,
        fields=args.field,
        reason=args.reason,
        contracts_dir=contracts,
        source=args.source,
    )
    for contract_id, recipient, drop_id in sent:
        _say(f"correction notice {drop_id} sent to {recipient} under {contract_id}")
    return OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Replace a pseudonymisation (or disclosure) key with a new random one; audited."""
    import secrets as random_source

    from exchange.audit import Ledger
    from exchange.gateway import DISCLOSURE_KEY
    from exchange.secrets import LocalSecrets
    from exchange.transforms import key_id

    settings = Settings.from_env()
    new = random_source.token_bytes(32)
    old = LocalSecrets(settings.secrets_file).rotate(args.secret, new)
    if args.secret == DISCLOSURE_KEY and old:
        # Disclosures recorded under the old key must stay answerable.
        LocalSecrets(settings.secrets_file).rotate(f"{DISCLOSURE_KEY}-old", old)
    if args.secret == DISCLOSURE_KEY:
        from exchange.audit.disclosures import key_id as fingerprint
    else:
        fingerprint = key_id
    body = {
        "secret": args.secret,
        "old_key_id": fingerprint(old) if old else None,
        "new_key_id": fingerprint(new),
        "reason": args.reason,
    }
    Ledger(settings.audit_url).append("key.rotated", body)
    _say(f"rotated {args.secret}: key id {body['old_key_id']} -> {body['new_key_id']}")
    return OK


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Generate a key pair."""
    from exchange.keys import generate

    passphrase = _passphrase(args, confirm=True)
    if passphrase is not None and args.kind == "age":
        raise CryptoError("age identities are not passphrase-protected here; keep the file 0600")
    pair = generate(
        args.kind, args.out, comment=args.comment or "", overwrite=args.force, passphrase=passphrase
    )
    _say(f"private key: {pair.private_path} (0600)\npublic key:  {pair.public_path}")
    _say(pair.public)
    return OK


def cmd_synth(args: argparse.Namespace) -> int:
    """Write synthetic source data."""
    from exchange import synth

    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        path = synth.write(args.out, args.rows, seed=args.seed)
    except ValueError as exc:
        _error("synth", str(exc))
        return BAD_INPUT
    _say(f"wrote {args.rows} synthetic rows to {path}")
    return OK


def _passphrase_options(command: argparse.ArgumentParser) -> None:
    group = command.add_mutually_exclusive_group()
    group.add_argument("--ask-passphrase", action="store_true", help="prompt for a passphrase")
    group.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from $VAR")


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    top = argparse.ArgumentParser(prog="exchange", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

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
    _passphrase_options(approve)
    approve.set_defaults(func=cmd_approve)

    suspend = contract.add_parser("suspend", help="stop an agreement at once (IG officers)")
    suspend.add_argument("contract", type=Path)
    suspend.add_argument("--key", type=Path, required=True, help="your Ed25519 signing key")
    suspend.add_argument("--reason", required=True)
    _passphrase_options(suspend)
    suspend.set_defaults(func=cmd_suspend)

    resume = contract.add_parser("resume", help="lift a suspension (IG officers)")
    resume.add_argument("contract", type=Path)
    resume.add_argument("--key", type=Path, required=True, help="your Ed25519 signing key")
    _passphrase_options(resume)
    resume.set_defaults(func=cmd_resume)

    run = sub.add_parser("run", help="run one exchange now, without Airflow")
    run.add_argument("contract", type=Path)
    run.add_argument(
        "--source",
        help="a CSV or Parquet file, a postgresql:// URL, or postgres:NAME (a connection in the "
        "secrets store); default: the file named by physicalName in EXCHANGE_SOURCE_DIR",
    )
    run.add_argument("--run-id", help="reuse a run id (re-running never duplicates a drop)")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="for an incremental contract, send every record, not only new or changed ones",
    )
    run.set_defaults(func=cmd_run)

    rec = sub.add_parser("receive", help="verify and decrypt a drop (partner side)")
    rec.add_argument("drop", type=Path, help="the drop folder")
    rec.add_argument("--identity", type=Path, required=True, help="your age identity file")
    rec.add_argument("--sender-key", type=Path, required=True, help="the sender's public key")
    rec.add_argument("--out", type=Path, default=Path("."), help="folder for the data")
    rec.add_argument("--ack-key", type=Path, help="your Ed25519 key: sign an acknowledgement")
    rec.add_argument("--ack-connection", help="connection to upload the acknowledgement over")
    rec.add_argument("--ack-folder", help="the agreed acknowledgement folder on that server")
    rec.add_argument("--again", action="store_true", help="accept a drop received before")
    rec.add_argument(
        "--overwrite", action="store_true", help="replace existing files of the output names"
    )
    _passphrase_options(rec)
    rec.set_defaults(func=cmd_receive)

    audit = sub.add_parser("audit", help="the audit ledger").add_subparsers(
        dest="action", required=True
    )
    verify = audit.add_parser("verify", help="recompute the hash chain")
    verify.add_argument("--url", help="ledger URL (default: EXCHANGE_AUDIT_URL)")
    verify.add_argument("--from", dest="from_seq", type=int, help="first entry to check")
    verify.add_argument("--to", dest="to_seq", type=int, help="last entry to check")
    verify.add_argument(
        "--public-key", type=Path, help="the gateway's public key (checks checkpoint signatures)"
    )
    verify.add_argument("--origin", help="the log's expected checkpoint origin (default: ours)")
    verify.add_argument(
        "--held", type=Path, nargs="*", help="checkpoint notes kept by partners or auditors"
    )
    verify.add_argument(
        "--checkpoints",
        type=Path,
        help="folder of checkpoints handed out (default: EXCHANGE_HOME/checkpoints)",
    )
    verify.add_argument(
        "--record-incident",
        action="store_true",
        help="on failure, append an incident to the ledger and notify (the gateway's own check)",
    )
    verify.set_defaults(func=cmd_audit_verify)

    report = audit.add_parser("report", help="transfers, refusals and incidents of a period")
    report.add_argument("--since", help="first day, YYYY-MM-DD (default: 30 days before --until)")
    report.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
    report.add_argument("--agreement", help="only this contract id")
    report.add_argument("--format", choices=("html", "csv", "json"), default="html")
    report.add_argument("--out", type=Path, help="file to write (default: standard output)")
    report.add_argument("--url", help="ledger URL (default: EXCHANGE_AUDIT_URL)")
    report.set_defaults(func=cmd_audit_report)

    checkpoint = audit.add_parser("checkpoint", help="sign and print the ledger's head")
    checkpoint.set_defaults(func=cmd_audit_checkpoint)

    export = audit.add_parser("export", help="a self-contained copy an auditor verifies offline")
    export.add_argument("out", type=Path)
    export.set_defaults(func=cmd_audit_export)

    offline = audit.add_parser("verify-export", help="verify an exported ledger, offline")
    offline.add_argument("export", type=Path)
    offline.add_argument("--public-key", type=Path, required=True, help="the gateway's key")
    offline.add_argument(
        "--held", type=Path, nargs="*", help="checkpoint notes kept by partners or auditors"
    )
    offline.add_argument(
        "--origin", help="the log's expected checkpoint origin (default: from the key's id)"
    )
    offline.set_defaults(func=cmd_audit_verify_export)

    subject = audit.add_parser("subject", help="who received data about this person, and why")
    subject.add_argument(
        "subject", nargs="?", help="the person's id (visible in ps and history: use --id-file)"
    )
    subject.add_argument(
        "--id-file", help="a file holding the person's id in the source, or - for standard input"
    )
    subject.add_argument("--reason", help="why (recorded in the audit ledger, with who asked)")
    subject.add_argument("--public-key", type=Path, help="the gateway's public key")
    subject.add_argument("--origin", help="the log's expected checkpoint origin")
    subject.add_argument("--format", choices=("text", "json"), default="text")
    subject.set_defaults(func=cmd_audit_subject)

    acks = sub.add_parser("acks", help="partners' acknowledgements").add_subparsers(
        dest="action", required=True
    )
    collect = acks.add_parser("collect", help="record signed acks; flag overdue drops")
    collect.add_argument("contract", type=Path)
    collect.set_defaults(func=cmd_acks_collect)

    drops = sub.add_parser("drops", help="drops in partners' inboxes").add_subparsers(
        dest="action", required=True
    )
    expire = drops.add_parser("expire", help="remove drops past the agreement's retention")
    expire.add_argument("contract", type=Path)
    expire.set_defaults(func=cmd_drops_expire)

    rectify = sub.add_parser("rectify", help="send correction notices to every recipient")
    rectify.add_argument("subject", help="the person's id in the source (the subject key)")
    rectify.add_argument("--field", action="append", required=True, help="a corrected field")
    rectify.add_argument("--reason", required=True)
    rectify.add_argument("--source", help="where the corrected row is (default: as for run)")
    rectify.add_argument("--contracts", type=Path, help="contracts folder (EXCHANGE_CONTRACTS)")
    rectify.set_defaults(func=cmd_rectify)

    keys = sub.add_parser("keys", help="key pairs").add_subparsers(dest="action", required=True)
    gen = keys.add_parser("generate", help="generate a key pair")
    gen.add_argument("--kind", choices=("signing", "age", "ssh"), required=True)
    gen.add_argument("--out", type=Path, required=True, help="private key path (.pub beside it)")
    gen.add_argument("--comment")
    gen.add_argument("--force", action="store_true", help="overwrite existing files")
    _passphrase_options(gen)
    gen.set_defaults(func=cmd_keys_generate)

    rotate = keys.add_parser("rotate", help="replace a secret key (pseudonymisation, disclosure)")
    rotate.add_argument("secret", help="the secret's name, e.g. a contract's pseudonymisationKey")
    rotate.add_argument("--reason", required=True, help="why (recorded in the audit ledger)")
    rotate.set_defaults(func=cmd_keys_rotate)

    syn = sub.add_parser("synth", help="write synthetic source data for demos and tests")
    syn.add_argument("out", type=Path)
    syn.add_argument("--rows", type=int, default=1000)
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=cmd_synth)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; print one clear line on failure and return its exit code."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ContractError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        _error("contract invalid", f"{len(exc.problems)} problem(s)")
        return BAD_INPUT
    except Refused as exc:
        _error("refused", str(exc))
        return REFUSED
    except SourceError as exc:
        _error("source", str(exc))
        return BAD_INPUT
    except TransferError as exc:
        kind = "delivery failed (transient)" if isinstance(exc, Retryable) else "delivery failed"
        _error(kind, str(exc))
        return DELIVERY_FAILED
    except (DropRejected, LedgerError) as exc:
        _error("not verified", str(exc))
        return NOT_VERIFIED
    except CryptoError as exc:
        _error("key", str(exc))
        return FAILED
    except ApprovalError as exc:
        _error("not done", str(exc))
        return BAD_INPUT
    except ExchangeError as exc:
        _error("failed", str(exc))
        return FAILED
    except (FileExistsError, FileNotFoundError) as exc:
        _error("file", f"{exc.strerror}: {exc.filename}")
        return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
