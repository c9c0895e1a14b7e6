"""The progress line of `exchange receive` on a terminal: stage, amount done, throughput.

Imported only when standard error is a terminal, so a receive in a pipe or a log never pays
for rich. Only stages, byte and row counts are shown: never a name or value from the data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from exchange.receive import Step

# A redraw costs 1-3 ms of CPU (measured here): once a second, and once as each stage starts,
# keeps the display under 1% of a receive's time (benchmarks/receive_progress.py). They are
# drawn from the receive's own updates, not by rich's timer thread, so nothing is redrawn
# while nothing moves.
MIN_INTERVAL = 1.0


class _Amount(ProgressColumn):
    """How much of the stage is done: bytes or rows, of the total when it is known."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if not unit:
            return Text("")
        done, total = int(task.completed), task.total
        if unit == "bytes":
            shown = filesize.decimal(done)
            if total is not None:
                shown += f" of {filesize.decimal(int(total))}"
        else:
            shown = f"{done:,}" + (f" of {int(total):,}" if total is not None else "")
            shown += f" {unit}"
        return Text(shown, style="progress.download")


class _Rate(ProgressColumn):
    """The stage's throughput, in its unit per second."""

    def render(self, task: Task) -> Text:
        unit, speed, elapsed = task.fields.get("unit", ""), task.speed, task.elapsed
        if speed is None and elapsed:  # rich needs two samples; the stage's average will do
            speed = task.completed / elapsed
        if not unit or speed is None:
            return Text("")
        shown = f"{filesize.decimal(int(speed))}/s" if unit == "bytes" else f"{speed:,.0f} {unit}/s"
        return Text(shown, style="progress.data.speed")


@contextmanager
def receive_progress(stream: TextIO) -> Iterator[Callable[[Step], None]]:
    """Draw the progress of one receive on `stream` (a terminal), erased when it ends."""
    console = Console(file=stream, force_terminal=True)
    columns = (TextColumn("{task.description}"), BarColumn(), _Amount(), _Rate())
    bar = Progress(
        *columns,
        console=console,
        auto_refresh=False,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with bar:
        task = bar.add_task("receive: reading the manifest", total=None, unit="")
        stage, shown_at = "", 0.0

        def show(step: Step) -> None:
            nonlocal stage, shown_at, task
            now = time.monotonic()
            if step.stage != stage:  # a task per stage: its own total (or none) and speed
                stage = step.stage
                bar.remove_task(task)
                task = bar.add_task(f"receive: {stage}", total=step.total, unit=step.unit)
            elif now - shown_at < MIN_INTERVAL:
                if (
                    step.done == step.total
                ):  # kept, not drawn: the last redraw, at the end, shows it
                    bar.update(task, completed=step.done)
                return
            shown_at = now
            bar.update(task, completed=step.done, refresh=True)

        yield show
