"""Great Expectations in a child process, so a run's windows are validated on another core.

Importing Great Expectations costs seconds of CPU and about 190 MB, and validating a window
holds the GIL: both slowed the process that reads, minimises and encrypts. A `Worker` runs
this module as a child (`python -P -m validators.worker` from `/`: nothing from the working
folder is importable, and its environment carries no secret), sends it the suite's rules,
then each window as an Arrow IPC stream on its stdin. The child answers each window with the
failed rules' positions and counts, never a value; its stderr is discarded, since a library's
traceback may quote a cell. One idle worker is kept per process for the next suite (a test
session or a process making several drops imports Great Expectations there once).

Frames to the child: one kind byte (R rules, W window, E end of suite), a little-endian u64
size, the payload (the rules are a pickle: the child trusts its parent, never the reverse).
Frames from the child: a u64 size and a JSON object ({"hello": package folder} once, then
{"ready": true, "early": whether Great Expectations was imported before the rules came} or
{"error": type name} per suite, then one verdict per window).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypeGuard

from exchange.lazy import collector_paused
from exchange.pipes import read_exactly, write_all
from exchange.settings import ALLOCATOR_SETTINGS, release_memory_promptly
from validators.rules import Failure, Rule

_SIZE = struct.Struct("<Q")
_RULES, _WINDOW, _END = b"R", b"W", b"E"
# A worker that has not answered by then is treated as stuck: the run stops (never passes).
# Generous: the first answer includes importing Great Expectations on a loaded machine.
ANSWER_SECONDS = 900.0
_HELLO_SECONDS = 60.0
# What the child may see of the environment: enough to run Python and find its packages, and
# an operator's own settings of the allocator.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME", *ALLOCATOR_SETTINGS)


class WorkerUnavailable(Exception):
    """The worker could not be started here; validate in this process instead."""


class WorkerFailed(RuntimeError):
    """The worker died, stalled or answered out of turn: the run must stop, never pass."""


def package_folder() -> str:
    """The folder this `validators` package was imported from."""
    return str(Path(__file__).resolve().parent)


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The few variables the worker needs; absolute PYTHONPATH entries only (cwd is `/`)."""
    environ = dict(os.environ) if environ is None else environ
    env = {name: environ[name] for name in _PASSED_ENV if name in environ}
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["GX_ANALYTICS_ENABLED"] = "false"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Each window's frame and Great Expectations' masks are freed once it is answered: handed
    # back at once, the child holds 30-45 MB less between windows (BENCHMARKS.md, twelfth round).
    release_memory_promptly(env)
    return env


class Worker:
    """One child process validating windows for one suite at a time, answering in order."""

    def __init__(self) -> None:
        """Start the child. Raises WorkerUnavailable if it cannot be started."""
        if not sys.executable:  # an embedded interpreter: nothing to start
            raise WorkerUnavailable("no Python executable to start")
        try:
            # -P and cwd "/": `-m` would otherwise put the working folder first on sys.path,
            # and a planted validators/worker.py there would be handed every row.
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-m", "validators.worker"],
                cwd="/",
                env=child_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise WorkerUnavailable(f"cannot start: {type(exc).__name__}") from None
        self.pid = os.getpid()  # the process that owns the pipes
        assert self._process.stdin is not None and self._process.stdout is not None
        self._in = self._process.stdin.fileno()
        self._out = self._process.stdout.fileno()
        for fd in (self._in, self._out):
            os.set_blocking(fd, False)  # so a deadline holds mid-write too
        self._greeted = False
        self._rules: tuple[Rule, ...] = ()
        self._owed = 0  # suites sent whose "ready" (or error) is not read yet
        self._windows = 0  # windows sent for the current suite
        self._answered = 0
        self.broken = False
        self.imported_early = False  # whether Great Expectations was loaded before the rules

    # --- the parent's side ------------------------------------------------------------------

    def load(self, name: str, rules: Sequence[Rule]) -> None:
        """Send the suite's rules; the child imports Great Expectations and builds the suite."""
        self._rules = tuple(rules)
        self._owed += 1
        self._windows = self._answered = 0
        self._send(_RULES, pickle.dumps((name, self._rules)), _HELLO_SECONDS)

    def greet(self) -> None:
        """Read the child's first word. Raises WorkerUnavailable if it never started or runs
        other code than this process (another `validators` package on its path)."""
        if self._greeted:
            return
        try:
            hello = self._receive(_HELLO_SECONDS, "its start")
        except WorkerFailed as exc:
            self.close(kill=True)
            raise WorkerUnavailable(str(exc)) from None
        if hello.get("hello") != package_folder():
            self.close(kill=True)
            raise WorkerUnavailable("it imports another copy of the validators package")
        self._greeted = True

    def submit(self, batches: Sequence[Any]) -> None:
        """Send one window (Arrow record batches of one schema) to be validated: as an Arrow
        IPC stream written straight into the pipe, so no copy of the window is made here."""
        import pyarrow as pa

        measured = pa.MockOutputStream()  # the stream's length, to announce it first
        _write_stream(measured, batches)
        self._windows += 1
        deadline = time.monotonic() + ANSWER_SECONDS
        sink = _PipeSink(self._in, deadline)
        try:
            write_all(self._in, _WINDOW + _SIZE.pack(measured.size()), deadline)
            _write_stream(sink, batches)
        except OSError as exc:
            self.close(kill=True)
            raise WorkerFailed(
                f"the validation worker stopped taking windows ({self._ended(exc)})"
            ) from None
        except BaseException:  # the frame is cut short: the child can only be stopped
            self.close(kill=True)
            raise
        if sink.written != measured.size():
            self.close(kill=True)
            raise WorkerFailed("a window's stream was not the length announced to the worker")

    def answered(self) -> bool:
        """Whether the oldest pending verdict can be read without waiting."""
        return bool(select.select([self._out], [], [], 0)[0])

    def verdict(self, rows: int) -> list[Failure]:
        """The failures of the oldest window sent (of `rows` rows), in rule order.

        Raises ValueError for a rule Great Expectations cannot compile (as in-process), and
        WorkerFailed if the worker died, stalled or answered out of turn."""
        number = self._answered + 1
        while self._owed:  # the suite's "ready", after those of suites ended before it loaded
            answer = self._receive(ANSWER_SECONDS, f"window {number}")
            self._owed -= 1
            if "error" in answer and (self._owed == 0 or answer["error"] != "ValueError"):
                self.close(kill=True)
                if answer["error"] == "ValueError" and isinstance(answer.get("message"), str):
                    raise ValueError(answer["message"])
                raise WorkerFailed(
                    f"the validation worker could not load the rules ({answer['error']})"
                )
            if "error" not in answer and answer.get("ready") is not True:
                self._confused(number)
            self.imported_early = answer.get("early") is True
        answer = self._receive(ANSWER_SECONDS, f"window {number}")
        if "error" in answer:
            self.close(kill=True)
            raise WorkerFailed(
                f"the validation worker failed on window {number} ({answer['error']})"
            )
        if answer.get("window") != number or answer.get("rows") != rows:
            self._confused(number)
        self._answered = number
        failures = []
        for entry in answer.get("failures", []):
            if not (
                isinstance(entry, list)
                and len(entry) == 3
                and all(isinstance(n, int) for n in entry)
                and 0 <= entry[0] < len(self._rules)
            ):
                self._confused(number)
            index, unexpected, elements = entry
            failures.append(Failure(self._rules[index], unexpected, elements))
        return failures

    def end(self) -> None:
        """Tell the child the suite is done (it keeps Great Expectations for the next one)."""
        self._send(_END, b"", _HELLO_SECONDS)
        self._rules = ()

    @property
    def idle(self) -> bool:
        """Every window sent has its verdict (the suite may still be loading)."""
        return not self.broken and self._answered == self._windows

    def close(self, *, kill: bool = False) -> None:
        """Stop the child: at the end of its input, or at once when `kill`."""
        self.broken = True
        if self.pid != os.getpid():
            return  # a forked copy: the pipes and the child are the parent's
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # unsent bytes to a child that died
                    pipe.close()
        if kill:
            self._process.kill()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _confused(self, number: int) -> None:
        self.close(kill=True)
        raise WorkerFailed(f"the validation worker answered out of turn at window {number}")

    def _send(self, kind: bytes, payload: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        view = memoryview(payload).cast("B")
        try:
            for part in (kind + _SIZE.pack(view.nbytes), view):
                write_all(self._in, part, deadline)
        except OSError as exc:
            self.close(kill=True)
            raise WorkerFailed(
                f"the validation worker stopped taking windows ({self._ended(exc)})"
            ) from None

    def _receive(self, seconds: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        try:
            head = read_exactly(self._out, _SIZE.size, deadline)
            body = read_exactly(self._out, _SIZE.unpack(head)[0], deadline) if head else None
        except OSError as exc:
            self.close(kill=True)
            raise WorkerFailed(
                f"the validation worker did not answer {what} ({self._ended(exc)})"
            ) from None
        if body is None:
            self.close(kill=True)
            raise WorkerFailed(
                f"the validation worker stopped before answering {what} ({self._ended(None)})"
            )
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.close(kill=True)
            raise WorkerFailed(f"the validation worker answered {what} with something unreadable")
        return answer

    def _ended(self, exc: OSError | None) -> str:
        """How the child ended, for a message: its exit code, signal, or the pipe's error."""
        if isinstance(exc, TimeoutError):
            return "no answer in time"
        try:
            code = self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return type(exc).__name__ if exc else "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class _PipeSink:
    """A file-like object pyarrow writes an IPC stream into: each buffer goes to the pipe by
    the deadline as it is written."""

    closed = False

    def __init__(self, fd: int, deadline: float) -> None:
        self._fd = fd
        self._deadline = deadline
        self.written = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        write_all(self._fd, view, self._deadline)
        self.written += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        pass


def _write_stream(sink: Any, batches: Sequence[Any]) -> None:
    import pyarrow as pa

    # Closed (its end marker written) only once every batch is in: a writer left by an error
    # or an interrupt writes nothing more, where a `with` would wait on the pipe to end it.
    writer = pa.ipc.new_stream(sink, batches[0].schema)
    for batch in batches:
        writer.write_batch(batch)
    writer.close()


# --- one idle worker per process, for the next suite ---------------------------------------

_IDLE: Worker | None = None
_IDLE_LOCK = threading.Lock()


def take() -> Worker:
    """An idle worker of this process, or a new one. Raises WorkerUnavailable."""
    global _IDLE
    with _IDLE_LOCK:
        worker, _IDLE = _IDLE, None
    if _usable(worker):
        return worker
    return Worker()


def _usable(worker: Worker | None) -> TypeGuard[Worker]:
    """Whether a kept worker can be used here: made by this process (not inherited by a fork)
    and not broken."""
    return worker is not None and worker.pid == os.getpid() and not worker.broken


def start_early() -> None:
    """Start a worker for the next gate of this process to take: its child imports Great
    Expectations (seconds of CPU) on another core while this process checks the contract and
    reads the first batches. Nothing if one is idle already, if Great Expectations is loaded
    here (the gate would not use it), or if none can be started (the gate then validates in
    this process); an unused one is stopped at exit."""
    global _IDLE
    if "great_expectations" in sys.modules:
        return  # the gate validates in this process, where it is loaded already
    with _IDLE_LOCK:
        if _usable(_IDLE):
            return
    try:
        worker = Worker()
    except WorkerUnavailable:
        return
    with _IDLE_LOCK:
        spare, _IDLE = _IDLE, worker
    if spare is not None:
        spare.close(kill=True)


def give_back(worker: Worker) -> None:
    """Keep a worker whose suite ended cleanly for the next one; stop any other."""
    global _IDLE
    if worker.broken or not worker.idle or worker.pid != os.getpid():
        worker.close(kill=True)
        return
    try:
        worker.end()
    except WorkerFailed:
        return
    with _IDLE_LOCK:
        spare, _IDLE = _IDLE, worker
    if spare is not None:
        spare.close()


def _close_idle() -> None:
    global _IDLE
    with _IDLE_LOCK:
        worker, _IDLE = _IDLE, None
    if worker is not None:
        worker.close(kill=True)  # idle, or still importing for a suite nobody will send


def _forget_idle() -> None:
    """In a forked child: the idle worker belongs to the parent; leave it alone."""
    global _IDLE
    _IDLE = None


atexit.register(_close_idle)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_idle)


# --- the child's side -----------------------------------------------------------------------


def _reply(sink: IO[bytes], answer: dict[str, Any]) -> None:
    body = json.dumps(answer).encode()
    sink.write(_SIZE.pack(len(body)) + body)
    sink.flush()


def _frame(source: IO[bytes]) -> tuple[bytes, bytes] | None:
    head = source.read(1 + _SIZE.size)
    if len(head) < 1 + _SIZE.size:
        return None
    size = _SIZE.unpack(head[1:])[0]
    payload = source.read(size) if size else b""
    if len(payload) != size:
        return None
    return head[:1], payload


# Set once the child's early import of Great Expectations has ended; whether it worked.
_IMPORTED = threading.Event()
_IMPORTED_EARLY: list[bool] = []

# Optional packages Great Expectations imports when they are installed, for data sources the
# worker never reads (SQL databases, S3). In the child they are absent, as if not installed (a
# setup GX supports: they are extras of its package): about a fifth of its import's CPU. The
# gateway's own process keeps them (its ledger is SQLAlchemy).
NOT_IN_WORKER = ("sqlalchemy", "boto3", "botocore")


def _leave_out(names: Sequence[str]) -> None:
    """Make each package that is not imported yet unimportable in this process."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def _import_suite() -> None:
    # What the import builds lives as long as the child: frozen, so the collections between
    # windows do not walk it again.
    try:
        with collector_paused(freeze=True):
            import validators.suite  # noqa: F401
    except Exception:  # imported again, and its error reported, when the rules come
        _IMPORTED_EARLY.append(False)
    else:
        _IMPORTED_EARLY.append(True)
    finally:
        _IMPORTED.set()


def _serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The worker's loop: load a suite, answer each window, until the end of input."""
    _reply(sink, {"hello": package_folder()})
    # Great Expectations is imported at once, before any rules come, so a worker started early
    # (as `exchange run` begins) has it loaded by the time the first window is gathered; on a
    # thread, so rules larger than the pipe's buffer are still read meanwhile (the rules' own
    # import below waits for it). What fails here fails again, and is reported, there.
    _leave_out(NOT_IN_WORKER)  # before any import of Great Expectations, on either thread
    threading.Thread(target=_import_suite, name="gx-import", daemon=True).start()
    validator: Any = None
    positions: dict[int, int] = {}
    window = 0
    while True:
        got = _frame(source)
        if got is None:
            return
        kind, payload = got
        del got  # so the window's bytes go with `payload`
        if kind == _RULES:
            name, rules = pickle.loads(payload)  # noqa: S301 - from the parent that started us
            window = 0
            try:
                from validators.suite import BatchValidator  # Great Expectations: seconds

                validator = BatchValidator(name, rules)
            except ValueError as exc:  # a rule GX cannot take: names the column, no values
                _reply(sink, {"error": "ValueError", "message": str(exc)})
                validator = None
                continue
            except Exception as exc:  # reported by its type only, then stop
                _reply(sink, {"error": type(exc).__name__})
                return
            positions = {id(rule): i for i, rule in enumerate(validator.rules)}
            _IMPORTED.wait()  # ended: the import above could only follow it
            _reply(sink, {"ready": True, "early": _IMPORTED_EARLY == [True]})
        elif kind == _WINDOW and validator is not None:
            window += 1
            try:
                import pyarrow as pa

                table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
                del payload
                frame = table.to_pandas()
                del table
                rows = len(frame)
                failures = validator.validate(frame)
                del frame
            except Exception as exc:  # its message may quote a value
                _reply(sink, {"error": type(exc).__name__})
                return
            found = [[positions[id(f.rule)], f.unexpected_count, f.element_count] for f in failures]
            _reply(sink, {"window": window, "rows": rows, "failures": found})
        elif kind == _END:
            validator, positions = None, {}
        else:
            return  # out of turn: stop, and the parent reports it


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):  # the parent has gone
        _serve(sys.stdin.buffer, sys.stdout.buffer)
