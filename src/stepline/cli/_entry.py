"""The ``stepline`` program's first code: signals are handled before the heavy imports.

This module imports nothing but :mod:`._signals` (``os`` and ``signal``), so a SIGINT or SIGTERM
that arrives while trio and the server are being imported ends the process with status 128+N
instead of killing it by signal or printing a traceback. Only the interpreter's own start-up
comes before it (NOTES.md, "Threat model and guarantees").
"""

from __future__ import annotations

import gc

from ._signals import exit_on_signals

__all__ = ["main"]


def main() -> None:
    exit_on_signals()
    gc.disable()  # no cycle collections while the program loads (_main.collect_from_now)
    from ._main import main as run  # the heavy imports, under our handlers

    run()
