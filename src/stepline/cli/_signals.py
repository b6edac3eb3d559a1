"""How the long-running commands (``serve``, ``run``) end on SIGINT and SIGTERM.

While they run, each reads signals through ``trio.open_signal_receiver`` and stops in order: the
first signal cancels every job, a second one kills every child at once. These helpers cover the
instants outside that receiver, where Python's defaults would print a ``KeyboardInterrupt``
traceback (SIGINT) or die by the signal (SIGTERM) and leave the jobs' processes behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "SIGNALS",
    "exit_on_signals",
    "exit_status",
    "restore_default_signals",
    "with_late_signals",
]

SIGNALS = (signal.SIGINT, signal.SIGTERM)

T = TypeVar("T")


def exit_status(signum: int) -> int:
    """The shell's convention for "ended by signal N": 128 + N (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def exit_on_signals() -> None:
    """From now on SIGINT/SIGTERM end the process at once with status 128+N.

    The program's entry point calls this before importing anything heavy: importing trio and the
    server takes a few hundred milliseconds, in which a SIGTERM (``timeout``, systemd) would
    otherwise kill the process by signal and a SIGINT print a ``KeyboardInterrupt`` traceback.
    Nothing has started yet then, so there is nothing to stop in order.
    """
    for signum in SIGNALS:
        signal.signal(signum, lambda received, _frame: os._exit(exit_status(received)))


def restore_default_signals() -> None:
    """Python's own handling, for the short commands that need no orderly stop."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def with_late_signals(run: Callable[[], T]) -> T:
    """``run()`` with SIGINT/SIGTERM outside trio's receiver turned into exit status 128+N.

    Before the receiver opens and after it closes (a second signal that arrives once the last
    line is out is re-delivered by trio on close) the process exits at once with the status a
    shell expects. Once ``run`` has returned the signals are ignored: CPython's finalization
    resets Python-level handlers to ``SIG_DFL``, so a late signal would otherwise kill the
    process by signal after an orderly end.
    """
    exit_on_signals()
    result = run()
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    return result
