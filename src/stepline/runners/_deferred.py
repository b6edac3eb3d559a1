"""A runner made on first use: start-up does not pay for process machinery it may never need.

The executor's default runner (the local one, wrapped by the sandbox runner) imports the whole
process layer: spawning, capture, the step tree and its cgroups, ``ctypes``. A ``stepline serve``
whose jobs never run a process should not load any of it before ``ready`` (NOTES.md,
Performance), so the executor holds this stand-in, which builds the real runner at the first
:meth:`start`. A hard stop before that has nothing to kill.
"""

from __future__ import annotations

from collections.abc import Callable

from ._base import Launch, Process, Runner

__all__ = ["DeferredRunner", "local_runner"]


class DeferredRunner:
    """A :class:`~stepline.runners._base.Runner` that is ``make()``'s runner, made at the first
    start."""

    def __init__(self, make: Callable[[], Runner]) -> None:
        self._make = make
        self._runner: Runner | None = None
        self._killed = False

    @property
    def made(self) -> bool:
        """Whether the real runner exists yet."""
        return self._runner is not None

    def start(self, launch: Launch) -> Process:
        return self.runner().start(launch)

    def runner(self) -> Runner:
        """The real runner, made now if need be."""
        if self._runner is None:
            self._runner = self._make()
            if self._killed:  # a hard stop came first: it holds for what starts from now on
                self._runner.kill_all()
        return self._runner

    def kill_all(self) -> None:
        self._killed = True
        if self._runner is not None:
            self._runner.kill_all()


def local_runner() -> Runner:
    """The executor's default runner, made in full: local process trees, and those that ask for
    the sandbox in bubblewrap. Imported here, on first use (see the module docstring)."""
    from ._local import LocalRunner
    from ._sandbox import SandboxRunner

    return SandboxRunner(LocalRunner())
