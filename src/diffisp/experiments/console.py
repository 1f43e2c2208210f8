"""The console side of a training run: deferred Ctrl-C and per-phase progress bars."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from diffisp.training.state import PHASES, TrainState

INTERRUPTED_EXIT = 130  # the shell's status for a process ended by SIGINT


def _exit_now(status: int) -> None:
    """End the process at once: no atexit handlers, no joining of orbax's writer threads."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class DeferredInterrupt:
    """Ctrl-C during training finishes the current epoch and its checkpoint, then stops.

    A second Ctrl-C ends the process at once with status 130. It does not raise
    ``KeyboardInterrupt``: raised during a checkpoint write, that left orbax's non-daemon writer
    threads for the interpreter to join at exit (a 300 s hang, then their tracebacks). Exiting
    without them is safe because a step counts only once its checksum manifest is written
    (:mod:`diffisp.training.checkpoint`): the half-written step is ignored on ``--resume``.
    """

    def __init__(self, log: Callable[[str], None], exit_now: Callable[[int], None] = _exit_now):
        self.log, self.requested, self.previous = log, False, None
        self.exit_now = exit_now

    def _handle(self, signum, frame) -> None:
        if self.requested:
            print(
                "diffisp: interrupted again: stopped at once; the last intact checkpoint is kept",
                file=sys.stderr,
            )
            self.exit_now(INTERRUPTED_EXIT)
            return
        self.requested = True
        self.log("interrupt: finishing this epoch and its checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class PhaseProgress:
    """A rich progress bar per phase, advanced once per step (no device sync per step)."""

    def __init__(self, state: TrainState, num_train: int, enabled: bool) -> None:
        self.state, self.num_train, self.enabled = state, num_train, enabled
        self.progress, self.tasks = None, {}

    def __enter__(self) -> PhaseProgress | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        steps = self.state.steps_per_epoch(self.num_train)
        current, epoch = self.state.position
        for phase in PHASES:
            total = steps * self.state.epochs_in(phase)
            done = (
                total if phase.index < current else (epoch * steps if phase.index == current else 0)
            )
            self.tasks[phase.index] = self.progress.add_task(
                f"phase {phase.index} ({phase.name})", total=total, completed=done
            )
        self.progress.start()
        return self

    def on_step(self, phase, steps: int) -> None:
        self.progress.advance(self.tasks[phase.index], steps)

    def show(self, record) -> None:
        """Put the last epoch's loss and accuracies into its phase's bar."""
        self.progress.update(
            self.tasks[record.phase],
            description=f"phase {record.phase} ({record.phase_name}) loss {record.loss:.3f} "
            f"train {record.train_acc:.0%} test {record.test_acc:.0%}",
        )

    def log(self, message: str) -> None:
        self.progress.console.print(message, highlight=False)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
