"""Data teams' commands: `run`, `doctor`, `acks collect`, `drops expire`, `rectify`, `synth`."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from exchange.cli._common import BAD_INPUT, OK, REFUSED, error, say, subject_id, warn_unsearched
from exchange.lazy import arrow_without_pandas, collector_paused
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.cli._common import Subcommands
    from exchange.pipeline.dryrun import DryRun
    from exchange.pipeline.results import RunResult


def cmd_run(args: argparse.Namespace) -> int:
    """Run one exchange without Airflow (or, with --dry-run, try it and send nothing).

    Raises InvalidRequest for --dry-run with --run-id: a dry run records nothing, so it has no
    run to name, and silently ignoring the id would let a user believe run X was retried."""
    if args.dry_run:
        if args.run_id is not None:
            from exchange.errors import InvalidRequest

            raise InvalidRequest(
                f"--run-id {args.run_id!r} with --dry-run: a dry run sends and records "
                "nothing, so it has no run id; leave out --run-id to try the contract, or "
                "--dry-run to retry that run"
            )
        return cmd_dry_run(args)
    settings = Settings.from_env()
    if settings.validation_worker:
        # First, before the gateway's own imports: the worker's child imports Great
        # Expectations on the other core while this process checks the contract and reads.
        from validators.worker import start_early

        start_early()
        arrow_without_pandas()  # pandas is the worker's: 30 MB less here
    with collector_paused():  # what these import lives to the end of the run
        from exchange.cli import _failed
        from exchange.doctor import NotReady
        from exchange.errors import TransferError
        from exchange.gateway import Gateway
        from exchange.pipeline.naming import new_run_id
        from exchange.pipeline.run import run_exchange

        gateway = Gateway(settings)
    run_id = args.run_id or new_run_id(gateway.clock())  # known here, to name in a retry
    try:
        with progress() as show:  # gone before any message below is printed
            result = run_exchange(
                gateway.context,
                args.contract,
                args.source,
                run_id=run_id,
                full_refresh=args.full_refresh,
                preflight=True,
                progress=show,
            )
    except NotReady as exc:  # every missing prerequisite at once, not one per attempt
        for finding in exc.findings:
            print(f"missing: {finding}", file=sys.stderr)
        error(exc.label, f"{len(exc.findings)} prerequisite(s) missing; nothing was read or sent")
        return exc.exit_code
    except TransferError as exc:  # the drop is staged: the same run id delivers it, once
        code = _failed(exc)
        error("retry with", retry_command(args, run_id))
        return code
    excluded = ", ".join(f"{n} {why}" for why, n in result.excluded.items()) or "none"
    if result.objections_overridden:
        excluded += f" ({result.objections_overridden} objections overridden by the legal basis)"
    verb = "was already delivered to" if result.already_delivered else "delivered to"
    say(
        f"run {result.run_id}: read {result.rows_read} rows{unchanged_note(result)}, "
        f"excluded {excluded}, sent {result.rows_sent}; drop {result.drop_id} {verb} "
        f"{result.remote_path}"
    )
    return OK


@contextmanager
def progress(stream: TextIO | None = None) -> Iterator[Callable[[str], None]]:
    """A one-line status of long work on a terminal, cleared when done; silent otherwise.

    Drawn with rich when it is installed (it comes with the pinned set); without it, or when
    the output is not a terminal (a pipe, a log, Airflow), nothing is shown."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield _quiet
        return
    try:
        from rich.console import Console
    except ImportError:
        yield _quiet
        return
    console = Console(file=stream, force_terminal=True)
    with console.status("exchange: starting", spinner="line") as status:
        yield lambda text: status.update(text)


def _quiet(_: str) -> None:
    """Progress that shows nothing."""


def cmd_dry_run(args: argparse.Namespace) -> int:
    """Minimise, guard and validate the source as the contract says; send and record nothing."""
    from exchange.pipeline.dryrun import dry_run

    with progress() as show:
        result = dry_run(Settings.from_env(), args.contract, args.source, progress=show)
    for line in dry_run_report(result):
        say(line)
    if result.passed:
        say(f"would pass: a real run would send {result.rows_sent} rows")
        return OK
    why = result.refusal or (
        f"{len(result.failures) + bool(result.row_count)} quality rule(s) would fail"
    )
    error("refused", f"a real run would be refused: {why}; nothing was sent")
    return REFUSED


def dry_run_report(result: DryRun) -> list[str]:
    """The dry run's findings: counts, unknown columns, failing rules and where (no values)."""
    lines = [
        f"dry run of {result.contract.id} on {result.source}: nothing was sent, written or "
        "recorded, and no approval or secret was needed"
    ]
    lines += [f"note: {note}" for note in result.notes]
    excluded = ", ".join(f"{n} {why}" for why, n in result.excluded.items()) or "none"
    if result.objections_overridden:
        excluded += f" ({result.objections_overridden} objections overridden by the legal basis)"
    lines.append(
        f"read {result.rows_read} rows, would send {result.rows_sent}, excluded {excluded}"
    )
    unknown = ", ".join(result.unknown_columns) or "none"
    lines.append(f"source columns the contract does not know (not read): {unknown}")
    if result.refusal:
        lines.append(f"stopped: {result.refusal}")
        return lines
    for outcome in result.failures:
        where = result.where(outcome)
        lines.append(f"would fail: {outcome.describe()}" + (f"; {where}" if where else ""))
    if result.row_count:
        lines.append(f"would fail: {result.row_count}")
    if result.passed:
        lines.append("quality: every rule passed")
    return lines


def cmd_doctor(args: argparse.Namespace) -> int:
    """List every missing prerequisite of a run, each with its full path and its fix."""
    from exchange.doctor import NotReady, doctor

    settings = Settings.from_env()
    findings = doctor(settings, args.contract, source_arg=args.source, connect=args.connect)
    checked = f"contract {args.contract}" if args.contract else "the gateway"
    if not findings:
        dialled = ", and the partner's server answered" if args.connect else ""
        say(f"ready: every prerequisite of {checked} is in place{dialled}")
        return OK
    for finding in findings:
        say(f"missing: {finding}")
    error("not ready", f"{len(findings)} prerequisite(s) of {checked} missing")
    return NotReady.exit_code


def retry_command(args: argparse.Namespace, run_id: str) -> str:
    """The command that retries this run (re-running a run id never duplicates a drop).

    A postgresql:// URL may hold a password, so it is never printed: "--source URL" stands in."""
    words = ["exchange", "run", shlex.quote(str(args.contract))]
    if args.source:
        source = str(args.source)
        words += ["--source", "URL" if "://" in source else shlex.quote(source)]
    words += ["--run-id", shlex.quote(run_id)]
    if args.full_refresh:
        words.append("--full-refresh")
    return " ".join(words) + " (re-running a run id never duplicates a drop)"


def unchanged_note(result: RunResult) -> str:
    """For an incremental run: how many rows were left out as unchanged, and since when."""
    if not result.rows_unchanged and not result.since:
        return ""
    since = f" since {result.since}, the last delivered run's watermark" if result.since else ""
    return f" ({result.rows_unchanged:,} unchanged{since})"


def cmd_acks_collect(args: argparse.Namespace) -> int:
    """Collect the partner's signed acknowledgements; flag drops past their deadline."""
    from exchange.contract import load_contract
    from exchange.gateway import Gateway

    received, overdue = Gateway(Settings.from_env()).collect_acks(load_contract(args.contract))
    say(f"{received} acknowledgement(s) recorded; {overdue} drop(s) overdue")
    return REFUSED if overdue else OK


def cmd_drops_expire(args: argparse.Namespace) -> int:
    """Remove drops past the agreement's retention from the partner's inbox."""
    from exchange.contract import load_contract
    from exchange.gateway import Gateway

    removed = Gateway(Settings.from_env()).expire_drops(load_contract(args.contract))
    say(f"{len(removed)} drop(s) past retention removed" + "".join(f"\n  {d}" for d in removed))
    return OK


def cmd_rectify(args: argparse.Namespace) -> int:
    """Notify every recipient of a person's data that some of it was inaccurate."""
    from exchange.gateway import Gateway

    subject = subject_id(args)
    if subject is None:
        return BAD_INPUT
    settings = Settings.from_env()
    contracts = args.contracts or settings.contracts
    gateway = Gateway(settings)
    sent = gateway.rectify(
        subject,
        fields=args.field,
        reason=args.reason,
        contracts_dir=contracts,
        source=args.source,
    )
    for contract_id, recipient, drop_id in sent:
        say(f"correction notice {drop_id} sent to {recipient} under {contract_id}")
    warn_unsearched(gateway.disclosures().unsearchable(), what="these notices")
    return OK


def cmd_synth(args: argparse.Namespace) -> int:
    """Write synthetic source data."""
    from exchange import synth

    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.kind == "ed-attenders":
            path = synth.write_ed_attenders(args.out, args.rows, seed=args.seed)
        else:
            path = synth.write(args.out, args.rows, seed=args.seed)
    except ValueError as exc:
        error("synth", str(exc))
        return BAD_INPUT
    say(f"wrote {args.rows} synthetic rows to {path}")
    return OK


def add_run(sub: Subcommands) -> None:
    """`exchange run`."""
    run = sub.add_parser("run", help="run one exchange now, without Airflow")
    run.add_argument("contract", type=Path)
    run.add_argument(
        "--source",
        help="a CSV or Parquet file, a postgresql:// URL, or postgres:NAME (a connection in the "
        "secrets store); default: the file named by physicalName in EXCHANGE_SOURCE_DIR",
    )
    run.add_argument(
        "--run-id",
        help="reuse a run id (re-running never duplicates a drop); not with --dry-run",
    )
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="for an incremental contract, send every record, not only new or changed ones",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="read, minimise, guard and validate only: counts, unknown columns and failing rules "
        "with line numbers; needs no approval or secret, sends and records nothing",
    )
    run.set_defaults(func=cmd_run)


def add_doctor(sub: Subcommands) -> None:
    """`exchange doctor`."""
    doc = sub.add_parser(
        "doctor",
        help="list every missing prerequisite of a run at once, with the command that fixes it",
    )
    doc.add_argument("contract", nargs="?", help="a contract file or id (else the gateway only)")
    doc.add_argument("--source", help="the source a run would be given (as for run)")
    doc.add_argument(
        "--connect",
        action="store_true",
        help=(
            "also dial the partner's server: host key, login and drop folder (the ledger "
            "database and the staging store are reached without it)"
        ),
    )
    doc.set_defaults(func=cmd_doctor)


def add_acks(sub: Subcommands) -> None:
    """`exchange acks collect`."""
    acks = sub.add_parser("acks", help="partners' acknowledgements").add_subparsers(
        dest="action", required=True
    )
    collect = acks.add_parser("collect", help="record signed acks; flag overdue drops")
    collect.add_argument("contract", type=Path)
    collect.set_defaults(func=cmd_acks_collect)


def add_drops(sub: Subcommands) -> None:
    """`exchange drops expire`."""
    drops = sub.add_parser("drops", help="drops in partners' inboxes").add_subparsers(
        dest="action", required=True
    )
    expire = drops.add_parser("expire", help="remove drops past the agreement's retention")
    expire.add_argument("contract", type=Path)
    expire.set_defaults(func=cmd_drops_expire)


def add_rectify(sub: Subcommands) -> None:
    """`exchange rectify`."""
    rectify = sub.add_parser("rectify", help="send correction notices to every recipient")
    rectify.add_argument(
        "subject", nargs="?", help="the person's id (visible in ps and history: use --id-file)"
    )
    rectify.add_argument(
        "--id-file", help="a file holding the person's id in the source, or - for standard input"
    )
    rectify.add_argument("--field", action="append", required=True, help="a corrected field")
    rectify.add_argument("--reason", required=True)
    rectify.add_argument("--source", help="where the corrected row is (default: as for run)")
    rectify.add_argument("--contracts", type=Path, help="contracts folder (EXCHANGE_CONTRACTS)")
    rectify.set_defaults(func=cmd_rectify)


def add_synth(sub: Subcommands) -> None:
    """`exchange synth`."""
    syn = sub.add_parser("synth", help="write synthetic source data for demos and tests")
    syn.add_argument("out", type=Path)
    syn.add_argument("--rows", type=int, default=1000)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument(
        "--kind",
        choices=("school-attendance", "ed-attenders"),
        default="school-attendance",
        help="school-attendance (the first sample agreement) or ed-attenders (an NHS trust's "
        "emergency-department extract, for the second)",
    )
    syn.set_defaults(func=cmd_synth)
