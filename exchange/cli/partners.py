"""Partners' command: `receive` (verify and decrypt a drop, optionally acknowledge it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.cli._common import BAD_INPUT, OK, error, passphrase, passphrase_options, say
from exchange.errors import CryptoError
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.cli._common import Subcommands


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

        secrets = LocalSecrets.from_settings(Settings.from_env())
        outbox = AckOutbox(
            SftpTransport(secrets.sftp_connection(args.ack_connection)), args.ack_folder
        )
    try:
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
        )
    except OSError as exc:  # the output folder (not the drop): unwritable, full, a planted link
        error("file", f"{exc.strerror or exc}: {Path(exc.filename or args.out).name}")
        return BAD_INPUT
    say(
        f"drop {got.drop_id} verified (signature, checksum, {got.rows} rows) under contract "
        f"{got.contract_id}; data written to {got.output}"
    )
    return OK


def add_receive(sub: Subcommands) -> None:
    """`exchange receive`."""
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
