"""What every role's commands share: output, exit codes and key passphrases."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.errors import (
    ContractError,
    CryptoError,
    ExchangeError,
    LedgerError,
    Refused,
    TransferError,
)

# The exit codes, as the exception types carry them (exchange.errors); `contract diff`'s verdicts
# are apart from these (exchange.cli.officers.DIFF_EXIT_CODES).
OK = 0
FAILED = ExchangeError.exit_code
BAD_INPUT = ContractError.exit_code
REFUSED = Refused.exit_code
DELIVERY_FAILED = TransferError.exit_code
NOT_VERIFIED = LedgerError.exit_code


def say(message: str) -> None:
    """Print a line of the command's result."""
    print(message, flush=True)


def error(kind: str, message: str) -> None:
    """Print one `exchange: KIND: message` line on standard error."""
    print(f"exchange: {kind}: {message}", file=sys.stderr, flush=True)


def passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes | None:
    """A key passphrase from the named environment variable, or asked for at the terminal."""
    if getattr(args, "passphrase_env", None):
        # The one variable read outside exchange.settings: its name is the user's, not ours.
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


def passphrase_options(command: argparse.ArgumentParser) -> None:
    """Add --ask-passphrase | --passphrase-env VAR to a command."""
    group = command.add_mutually_exclusive_group()
    group.add_argument("--ask-passphrase", action="store_true", help="prompt for a passphrase")
    group.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from $VAR")


if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def subject_id(args: argparse.Namespace) -> str | None:
    """The subject id from --id-file (a file, or - for standard input), or the positional
    argument with a warning; None (after saying why) when neither or both are given."""
    if (args.subject is None) == (args.id_file is None):
        error("usage", "give the subject id with --id-file FILE (or - for standard input)")
        return None
    if args.subject is not None:
        error(
            "warning",
            "a subject id on the command line is visible in ps and shell history; "
            "use --id-file - and type or pipe it instead",
        )
        return str(args.subject)
    text = sys.stdin.read() if str(args.id_file) == "-" else Path(args.id_file).read_text("utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        error("usage", f"--id-file must hold exactly one subject id, not {len(lines)} lines")
        return None
    return lines[0]


def warn_unsearched(unsearched: Sequence[tuple[str, str]], *, what: str) -> None:
    """Warn that delivered drops recorded under a disclosure key not configured here (drop,
    key id) were not searched, so `what` may leave out recipients."""
    if not unsearched:
        return
    keys = sorted({kid for _, kid in unsearched})
    error(
        "warning",
        f"{len(unsearched)} delivered drop(s) were recorded under disclosure key(s) "
        f"{', '.join(keys)}, not configured here, and were not searched: {what} may leave out "
        f"recipients. Configure the key as disclosure-key-old to search them (first: "
        f"{unsearched[0][0]}).",
    )
