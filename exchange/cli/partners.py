"""Partners' commands: `receive` (verify and decrypt a drop, optionally acknowledge it) and
`ack send` (sign and upload the acknowledgement of a drop received before)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from exchange.cli._common import BAD_INPUT, FAILED, OK, error, passphrase, passphrase_options, say
from exchange.errors import CryptoError
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.cli._common import Subcommands
    from exchange.receive import Step


def cmd_receive(args: argparse.Namespace) -> int:
    """Verify and decrypt a drop (partner side)."""
    from exchange.manifest import describe_extract
    from exchange.receive import receive

    outbox = None
    if args.ack_connection:
        if not (args.ack_folder and args.ack_key):
            raise CryptoError("--ack-connection needs --ack-folder and --ack-key")
        outbox = _outbox(args.ack_connection, args.ack_folder)
    try:
        with progress(sys.stderr) as show:  # erased before the lines below are printed
            got = receive(
                args.drop,
                identity=args.identity,
                sender_key=args.sender_key,
                out_dir=args.out,
                ack_key=args.ack_key,
                ack_key_passphrase=passphrase(args) if args.ack_key else None,
                ack_outbox=outbox,
                again=args.again,
                overwrite=args.overwrite,
                progress=show,
            )
    except OSError as exc:  # the output folder (not the drop): unwritable, full, a planted link
        error("file", f"{exc.strerror or exc}: {Path(exc.filename or args.out).name}")
        return BAD_INPUT
    say(
        f"drop {got.drop_id} verified (signature, checksum, {got.rows} rows) under contract "
        f"{got.contract_id}; data written to {got.output}"
    )
    say(f"it is {describe_extract(got.manifest)}")
    if got.log_held is None:
        say(f"the sender's audit log: first checkpoint kept ({got.log_size} entries) as a witness")
    elif got.log_size <= got.log_held:
        say(
            f"the sender's audit log: its checkpoint of {got.log_size} entries is one you had "
            f"verified (you hold {got.log_held})"
        )
    else:
        say(
            f"the sender's audit log: its checkpoint of {got.log_size} entries is proven to "
            f"extend the {got.log_held} you witnessed before"
        )
    return OK


@contextmanager
def progress(stream: TextIO) -> Iterator[Callable[[Step], None] | None]:
    """The receive's stage, amount done and throughput, drawn in place on a terminal.

    None when `stream` is not a terminal (a pipe, a log, a scheduler) or rich is missing:
    then nothing is drawn and the receive pays nothing; the summary lines say what was done."""
    if not stream.isatty():
        yield None
        return
    try:
        from exchange.cli._receive_progress import receive_progress
    except ImportError:
        yield None
        return
    with receive_progress(stream) as show:
        yield show


def _outbox(connection: str, folder: str) -> Any:
    """The sender's acknowledgement folder, over the named SFTP connection."""
    from exchange.acks import AckOutbox
    from exchange.secrets import LocalSecrets
    from exchange.transport import SftpTransport

    secrets = LocalSecrets.from_settings(Settings.from_env())
    return AckOutbox(SftpTransport(secrets.sftp_connection(connection)), folder)


def cmd_ack_send(args: argparse.Namespace) -> int:
    """Sign the acknowledgement of a received drop and upload it to the sender's folder."""
    from exchange.receive import acknowledge

    done = acknowledge(
        args.drop,
        sender_key=args.sender_key,
        out_dir=args.out,
        ack_key=args.key,
        ack_key_passphrase=passphrase(args),
        outbox=_outbox(args.connection, args.folder),
    )
    how = "sent again as signed before" if done.reused else "signed"
    say(
        f"acknowledgement of drop {done.drop_id} {how} ({done.ack_path}) and uploaded to "
        f"{done.remote}"
    )
    return OK


def cmd_partner_expire(args: argparse.Namespace) -> int:
    """Delete received drops past their retention; sign and send destruction receipts."""
    import datetime as dt

    from exchange.crypto.signing import load_private_key
    from exchange.destruction import expire
    from exchange.errors import InvalidRequest

    if bool(args.connection) != bool(args.folder):
        raise InvalidRequest("--connection and --folder go together (where receipts are sent)")
    try:
        now = dt.datetime.fromisoformat(args.at) if args.at else dt.datetime.now(dt.UTC)
    except ValueError:
        raise InvalidRequest(f"--at {args.at!r} is not an ISO 8601 time") from None
    if now.tzinfo is None:
        raise InvalidRequest("--at needs a time zone, e.g. 2027-01-01T00:00:00+00:00")
    key = load_private_key(args.key, passphrase(args))
    outbox = _outbox(args.connection, args.folder) if args.connection else None
    try:
        done = expire(
            args.out, key=key, outbox=outbox, now=now, on_skipped=lambda why: error("warning", why)
        )
    except OSError as exc:  # a receipt or the record could not be written in --out
        name = Path(exc.filename or args.out).name
        error("file", f"{exc.strerror or exc}: {name} in --out; make it writable and run again")
        return FAILED
    for item in done:
        where = f"sent to {item.remote}" if item.remote else "kept to send (no --connection)"
        what = "not fully destroyed (see the warning)" if item.failed else "destroyed"
        say(f"drop {item.drop_id} {what}; signed receipt {item.receipt.name} {where}")
    if not done:
        say("no received drop has reached the end of its retention")
    # A refusal is the safe outcome and exits 0; a file the system would not delete is not.
    return FAILED if any(item.failed for item in done) else OK


def add_receive(sub: Subcommands) -> None:
    """`exchange receive` and `exchange ack send`: the partner's commands."""
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
    passphrase_options(rec)
    rec.set_defaults(func=cmd_receive)

    ack = sub.add_parser("ack", help="acknowledge a received drop (partner side)")
    actions = ack.add_subparsers(dest="action", required=True)
    send = actions.add_parser(
        "send", help="sign the acknowledgement of a received drop and upload it to the sender"
    )
    send.add_argument("drop", type=Path, help="the drop folder, as received")
    send.add_argument("--sender-key", type=Path, required=True, help="the sender's public key")
    send.add_argument(
        "--out", type=Path, default=Path("."), help="the folder `receive` wrote the drop to"
    )
    send.add_argument("--key", type=Path, required=True, help="your Ed25519 acknowledgement key")
    send.add_argument("--connection", required=True, help="the SFTP connection to upload over")
    send.add_argument("--folder", required=True, help="the agreed acknowledgement folder")
    passphrase_options(send)
    send.set_defaults(func=cmd_ack_send)

    partner = sub.add_parser("partner", help="a partner's housekeeping (partner side)")
    chores = partner.add_subparsers(dest="action", required=True)
    expire = chores.add_parser(
        "expire",
        help="delete received drops past their retention and send signed destruction receipts",
    )
    expire.add_argument(
        "--out", type=Path, default=Path("."), help="the folder `receive` wrote the drops to"
    )
    expire.add_argument("--key", type=Path, required=True, help="your Ed25519 acknowledgement key")
    expire.add_argument("--connection", help="the SFTP connection to send receipts over")
    expire.add_argument("--folder", help="the agreed acknowledgement folder")
    expire.add_argument("--at", help="act as if it were this time (ISO 8601, with zone)")
    passphrase_options(expire)
    expire.set_defaults(func=cmd_partner_expire)
