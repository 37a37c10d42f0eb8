"""Progress display for the CLI (rich, on stderr). The library itself never prints."""
from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..training import EpochStats

console = Console(stderr=True)


class RichReporter:
    """Implements backmark.training.Reporter: a bar per epoch, then one line of results."""

    def __init__(self, label: str = "train", *, enabled: bool = True):
        self.label = label
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = None
        self._loss = float("nan")

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if not (self.enabled and console.is_terminal):  # bars only on a terminal; logs get the epoch lines
            return
        self._progress = Progress(
            TextColumn(f"[bold]{self.label}[/] epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("steps", total=steps, loss="-")

    def step(self, loss: float) -> None:
        if self._progress is None:
            return
        if not math.isnan(loss):
            self._loss = loss
        self._progress.update(self._task, advance=1, loss=f"{self._loss:.3f}")

    def end_epoch(self, stats: EpochStats) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if not self.enabled:
            return
        trig = "" if stats.trigger_acc is None else f"  trigger {100 * stats.trigger_acc:5.1f}%"
        console.print(
            f"{self.label} epoch {stats.epoch}: loss {stats.train_loss:.4f}  test {100 * stats.test_acc:5.2f}%{trig}"
            f"  ({stats.seconds:.1f} s)"
        )
