"""Auditors' commands: `audit verify | checkpoint | export | verify-export | subject | report`."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.cli._common import (
    BAD_INPUT,
    NOT_VERIFIED,
    OK,
    error,
    say,
    subject_id,
    warn_unsearched,
)
from exchange.errors import ExchangeError, InvalidRequest, LedgerError
from exchange.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from exchange.audit import Ledger
    from exchange.cli._common import Subcommands

NO_KEY_WARNING = "no public key: checkpoint signatures were NOT checked (--public-key)"


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recompute the ledger's hash chain and check it against every checkpoint: stored, handed
    out (kept outside the database) and held by others."""
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
    where = ledger_name(getattr(args, "url", None) or settings.audit_url)
    if not result.ok:
        from exchange.incidents import Incident, notifiers_from_settings, raise_incident

        wrong = _wrong_key(ledger, public, result.broken_at)
        if wrong is not None:
            # Signatures aside, are the entries intact? Tampering is reported as tampering.
            unchecked = ledger.verify(args.from_seq, args.to_seq, held=held)
            if unchecked.ok:
                error("wrong public key?", f"{wrong} (ledger {where})")
                return NOT_VERIFIED
            result = unchecked
        if args.record_incident:
            incident = Incident("ledger-broken", result.message)
            raise_incident(ledger, incident, notifiers_from_settings(settings))
        error("ledger broken", f"{result.message} (ledger {where})")
        return NOT_VERIFIED
    say(f"OK: {result.message} (ledger {where})")
    if public is None:
        error("warning", NO_KEY_WARNING)
    if ledger.anchor is None:
        error("warning", "no checkpoints kept outside the database were found to check against")
    return OK


def ledger_name(url: str) -> str:
    """The ledger as a person can find it: a SQLite file's path, else its URL with any password
    masked."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return "at an unreadable URL"
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return str(Path(parsed.database).absolute())
    return parsed.render_as_string(hide_password=True)


def _wrong_key(
    ledger: Ledger, public: Ed25519PublicKey | None, broken_at: int | None
) -> str | None:
    """What to say when the checkpoints are signed, but none by the key given: the key is
    likely not the gateway's (no entry failed). None when the failure is the ledger's."""
    from exchange.audit.verify import signed_by_another_key
    from exchange.crypto.signing import key_id

    if public is None or broken_at is not None:
        return None
    theirs = signed_by_another_key(ledger.store, ledger.anchor, public)
    if theirs is None:
        return None
    named = f"The signing key's id is {theirs}" if theirs else "The checkpoints name another key"
    return (
        f"checkpoint signatures do not verify under the key given ({key_id(public)}): is it "
        f"the gateway's public key? {named} (the gateway's public key is the .pub file beside "
        "its signing key, EXCHANGE_SIGNING_KEY). If the key given is the gateway's, the "
        "checkpoints were replaced: treat the ledger as broken"
    )


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
    say(
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
        error("export broken", result.message)
        return NOT_VERIFIED
    say(f"OK: {result.message}")
    return OK


def cmd_audit_subject(args: argparse.Namespace) -> int:
    """Every disclosure about one person, as an answer fit to send them: to whom (and their
    contact), why, under which law, which fields, when, how long they keep it, and what became
    of an objection.

    The rows answered from are checked against the audit ledger first, and the lookup itself
    is audited (a keyed hash of the id, who asked and why; never the id)."""
    from exchange import subject_access

    reason = (args.reason or "").strip()
    if not reason:  # refused before the id is read: a lookup is processing of personal data
        error(
            "usage",
            "--reason is required: a subject lookup is recorded with who asked and why; give "
            "the request's reference, e.g. --reason SAR-2026-017",
        )
        return BAD_INPUT
    subject = subject_id(args)
    if subject is None:
        return BAD_INPUT
    settings = Settings.from_env()
    public = _gateway_public_key(args, settings)
    who = _audit_who()
    today = dt.date.today()
    lookup = subject_access.look_up(
        settings,
        subject,
        _audit_ledger(settings),
        # Who the answer is for may be another person than who ran it: keep both.
        requested_by=f"{args.requested_by} (run by {who})" if args.requested_by else who,
        reason=reason,
        public_key=public,
        origin=_audit_origin(args, settings, public),
        governance=_quiet_governance(settings),
        today=today,
    )
    answers = lookup.answers
    if public is None:
        error("warning", NO_KEY_WARNING)
    warn_unsearched(lookup.unsearched, what="this answer")
    record = (
        f"checked against the audit ledger: {lookup.verified}; this lookup is ledger entry "
        f"{lookup.seq}"
    )
    if args.format == "json":
        sys.stdout.write(json.dumps(answers, indent=2, default=str) + "\n")
        error("note", record)
        return OK
    sys.stdout.write(subject_access.to_text(answers, today=today))
    footer = f"(For the file, not the letter: these records were {record}.)"
    say("\n" + textwrap.fill(footer, subject_access.WIDTH, break_long_words=False))
    return OK


def _quiet_governance(settings: Settings) -> Any:
    """The trust anchor for agreements' summaries; None when it cannot be read (the summary
    then says the approval cannot be checked, which a subject access answer does not show)."""
    from exchange.approval import Governance

    try:
        return Governance.from_settings(settings)
    except ExchangeError:
        return None


def _audit_who() -> str:
    """Who is asking, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (a container)
        return f"uid {os.getuid()}"


REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".csv": "csv", ".json": "json"}


def cmd_audit_report(args: argparse.Namespace) -> int:
    """The period's drops, refusals, failures, acknowledgements, overridden objections and
    governance per agreement, with the ledger verified, its head and its latest checkpoint."""
    from exchange import reporting

    settings = Settings.from_env()
    until = _day(args.until, "--until") if args.until else dt.date.today()
    since = _day(args.since, "--since") if args.since else until - dt.timedelta(days=30)
    if since > until:
        raise InvalidRequest(f"--since {since} is after --until {until}: swap them")
    ledger = _audit_ledger(settings, args)
    public = _gateway_public_key(args, settings)
    head = ledger.head()  # the report reads up to here, so its figures and head agree
    verified = ledger.verify(public_key=public, origin=_audit_origin(args, settings, public))
    problem = "" if verified.ok else (_wrong_key(ledger, public, verified.broken_at) or "")
    if problem:  # signatures aside, are the entries intact? Tampering is reported as such
        unchecked = ledger.verify()
        if not unchecked.ok:
            verified, problem = unchecked, ""
    entries = ledger.entries(until=head[0]) if head[0] else iter(())
    report = reporting.build(entries, since, until, args.agreement)
    where = ledger_name(getattr(args, "url", None) or settings.audit_url)
    reporting.attest(
        report,
        ledger,
        verified,
        where=where,
        head=head,
        public_key=public,
        made_by=_audit_who(),
        problem=problem,
    )
    fmt = "json" if args.json else args.format
    if fmt is None:
        fmt = REPORT_SUFFIXES.get(args.out.suffix.lower(), "text") if args.out else "text"
    render = {
        "text": reporting.to_text,
        "html": reporting.to_html,
        "csv": reporting.to_csv,
        "json": reporting.to_json,
    }
    text = render[fmt](report)
    if args.out:
        args.out.write_text(text, "utf-8")
        say(
            f"{len(report.transfers)} transfer(s), {len(report.problems)} refusal(s) or "
            f"failure(s), {len(report.incidents)} incident(s) from {since} to {until}: {args.out}"
        )
    else:
        sys.stdout.write(text)
    if not report.evidence["verification"]["ok"]:
        error(
            "ledger broken" if not problem else "wrong public key?",
            f"{report.evidence['verification']['message']} (ledger {where}): the report says "
            "so; do not rely on its figures until this is explained",
        )
        return NOT_VERIFIED
    if public is None:
        error("warning", NO_KEY_WARNING)
    return OK


def _day(text: str, option: str) -> dt.date:
    """A YYYY-MM-DD date given to an option; InvalidRequest naming it otherwise."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{option} {text!r} is not a date: write YYYY-MM-DD") from None


def add_audit(sub: Subcommands) -> None:
    """`exchange audit ...`."""
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

    report = audit.add_parser(
        "report", help="evidence of a period: drops, refusals, acks, overrides, governance"
    )
    report.add_argument("--since", help="first day, YYYY-MM-DD (default: 30 days before --until)")
    report.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
    report.add_argument("--agreement", help="only this contract id")
    report.add_argument(
        "--format",
        choices=("text", "html", "csv", "json"),
        help="default: from --out's suffix (.html, .csv, .json), else text",
    )
    report.add_argument("--json", action="store_true", help="the same as --format json")
    report.add_argument("--out", type=Path, help="file to write (default: standard output)")
    report.add_argument("--url", help="ledger URL (default: EXCHANGE_AUDIT_URL)")
    report.add_argument(
        "--public-key", type=Path, help="the gateway's public key (checks checkpoint signatures)"
    )
    report.add_argument("--origin", help="the log's expected checkpoint origin (default: ours)")
    report.add_argument(
        "--checkpoints",
        type=Path,
        help="folder of checkpoints handed out (default: EXCHANGE_HOME/checkpoints)",
    )
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
    subject.add_argument(
        "--reason",
        help="required: why, the request's reference (recorded in the audit ledger)",
    )
    subject.add_argument(
        "--requested-by",
        help="who the lookup is for, if not you (recorded with your login name)",
    )
    subject.add_argument("--public-key", type=Path, help="the gateway's public key")
    subject.add_argument("--origin", help="the log's expected checkpoint origin")
    subject.add_argument("--format", choices=("text", "json"), default="text")
    subject.set_defaults(func=cmd_audit_subject)

    from exchange.cli.witnesses import add_witness_commands  # witnesses, bundle (issue 15)

    add_witness_commands(audit)
