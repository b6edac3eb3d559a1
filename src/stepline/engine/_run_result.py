"""How a ``run`` step's process ended, told as the protocol tells it: its output, or its error.

The mapping from a process's end (an exit status, a signal, a limit it ran into, a start that
failed) to the step's ``output`` or the ``StepFailed`` of the right type, with the tails of its
streams. A module of its own because two paths end a ``run`` step's process and must tell it
identically: the ``run`` interpreter (:mod:`stepline.engine._interpret`) and the run lane
(:mod:`stepline.engine._run_lane`, through the interpreter's ``run_output``).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Final

from .._errors import StepFailed

if TYPE_CHECKING:
    from ..runners._base import ProcessResult, ProcessStartError
    from ..spec._model import Run
    from ._job_record import Job

__all__ = ["TAIL_CHARS", "output_tails", "process_output", "signal_name", "start_failure"]

TAIL_CHARS: Final = 4096
"""How much of each stream a failed ``run`` step's error carries: the last 4 KiB."""


def process_output(step: Run, result: ProcessResult) -> dict[str, Any]:
    """The output of a ``run`` step whose process ended with ``result``, before any parsing;
    raises its ``StepFailed`` (a limit, a non-zero exit)."""
    output: dict[str, Any] = {"exit": result.returncode, "stdout": result.stdout}
    output["stderr"] = result.stderr
    if result.truncated:
        output["truncated"] = True
    if result.limit is not None:
        raise _limit_failure(step, result.limit, result.returncode, output)
    if result.returncode != 0:
        failure = _exit_failure(step, result.returncode, output)
        if result.oom:  # the type stays (`killed`, most often): `oom` says why (protocol.md)
            failure.extra["oom"] = True
        raise failure
    return output


def start_failure(step: Run, exc: ProcessStartError) -> StepFailed:
    """The step's error when its process could not start."""
    return StepFailed("startup_failure", str(exc), step.path, step.mods.name)


def _limit_failure(step: Run, limit: str, returncode: int, output: dict[str, Any]) -> StepFailed:
    """A ``resource_failure``: the step's processes ran into ``limit``."""
    extra = {"limit": limit, "exit": returncode, "stdout": output["stdout"][-TAIL_CHARS:]}
    extra["stderr"] = output["stderr"][-TAIL_CHARS:]
    message = f"{step.argv[0]} exceeded its {limit} limit"
    if limit == "memory" and returncode == -signal.SIGKILL:
        message = f"{step.argv[0]} was killed for memory (out of memory in its limit)"
    return StepFailed("resource_failure", message, step.path, step.mods.name, extra)


_SIGNAL_ERRORS: dict[int, str] = {
    signal.SIGTERM: "terminated",
    signal.SIGKILL: "killed",
    signal.SIGXCPU: "resource_failure",
    signal.SIGXFSZ: "resource_failure",
}


def _exit_failure(step: Run, returncode: int, output: dict[str, Any]) -> StepFailed:
    """Map a non-zero exit to the protocol's error types (signal deaths are negative codes)."""
    extra = {"exit": returncode, "stdout": output["stdout"][-TAIL_CHARS:]}
    extra["stderr"] = output["stderr"][-TAIL_CHARS:]
    if returncode > 0:
        message = f"{step.argv[0]} exited with status {returncode}"
        return StepFailed("failure", message, step.path, step.mods.name, extra)
    kind = _SIGNAL_ERRORS.get(-returncode, "failure")
    message = f"{step.argv[0]} was ended by {signal_name(-returncode)}"
    return StepFailed(kind, message, step.path, step.mods.name, extra)


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGRTMIN+2``, or ``signal 99``: any number a child can die of (real-time
    signals have no :class:`signal.Signals` member, and looking one up raises)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        pass
    if signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    return f"signal {signum}"


def output_tails(job: Job, path: str) -> dict[str, str]:
    """The last :data:`TAIL_CHARS` of what the step at ``path`` wrote to each stream, from the
    job's log (for a process that was stopped, whose capture never completed)."""
    log = job.log
    if log is None:
        return {"stdout": "", "stderr": ""}
    return {stream: log.tail(path, stream, TAIL_CHARS) for stream in ("stdout", "stderr")}
