"""The `exchange` command: one entry point, subcommands by role.

One module per role builds its commands: `officers` (contract ...), `data` (run, doctor, acks,
drops, rectify, synth), `partners` (receive), `auditors` (audit ...) and `keys`. Each command
imports what it needs when it runs, so `exchange --help` loads none of the heavy libraries.

Exit codes are carried by the exception types (`exchange.errors`): 0 done; 1 unexpected failure;
2 bad input (contract, source, request); 3 refused by policy (not runnable, guard, quality);
4 delivery failed; 5 verification failed. `contract diff` answers 0 identical, 10 editorial,
11 needs re-approval.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from exchange.cli import auditors, data, keys, officers, partners
from exchange.cli._common import (
    BAD_INPUT,
    DELIVERY_FAILED,
    FAILED,
    NOT_VERIFIED,
    OK,
    REFUSED,
    error,
)
from exchange.cli.officers import DIFF_EXIT_CODES
from exchange.errors import ContractError, ExchangeError, Retryable
from exchange.settings import release_memory_promptly

if TYPE_CHECKING:
    from exchange.cli._common import Subcommands

__all__ = [
    "BAD_INPUT",
    "DELIVERY_FAILED",
    "DIFF_EXIT_CODES",
    "FAILED",
    "NOT_VERIFIED",
    "OK",
    "REFUSED",
    "command",
    "main",
    "parser",
]

# The top-level commands, in the order `exchange --help` lists them.
COMMANDS: tuple[Callable[[Subcommands], None], ...] = (
    officers.add_contract,
    data.add_run,
    data.add_doctor,
    partners.add_receive,
    auditors.add_audit,
    data.add_acks,
    data.add_drops,
    data.add_rectify,
    keys.add_keys,
    data.add_synth,
)


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    top = argparse.ArgumentParser(prog="exchange", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; print one clear line on failure and return its exit code."""
    release_memory_promptly()  # before a command imports pyarrow
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ExchangeError as exc:
        return _failed(exc)
    except (FileExistsError, FileNotFoundError) as exc:
        error("file", f"{exc.strerror}: {exc.filename}")
        return BAD_INPUT


def command() -> NoReturn:
    """The `exchange` console command: `main`, then exit with its code.

    Before the interpreter ends, every object still alive is moved out of reach of its last
    garbage collection (`gc.freeze`): the process is ending, and collecting what Great
    Expectations and pandas leave behind (many classes in reference cycles) took about a second
    after every command that validated data (BENCHMARKS.md, eighth round). Exit handlers still
    run (one closes the audit database's connections: `exchange.audit.storage`) and the
    standard streams are flushed; only that final sweep is skipped. Not in `main`, which tests
    call many times in one process."""
    code = main()
    gc.freeze()
    sys.exit(code)


def _failed(exc: ExchangeError) -> int:
    """Say what failed, in the words and with the exit code its type carries."""
    if isinstance(exc, ContractError):  # every problem, then their count
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        error(exc.label, f"{len(exc.problems)} problem(s)")
    else:
        transient = " (transient)" if isinstance(exc, Retryable) else ""
        error(exc.label + transient, str(exc))
    return exc.exit_code
