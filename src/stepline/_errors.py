"""The one error hierarchy of stepline.

Every error a caller can see is a :class:`SteplineError`, and every one of them is defined here, so
this drawing is the whole tree. A :class:`CommandError` carries the wire ``code`` that the
protocol's ``error`` event uses, so the server never maps exceptions to codes by hand::

    SteplineError                      (base; never raised itself)
    ├── CommandError                   a command was refused; the executor goes on
    │   ├── BadJson                    bad_json          line is not a JSON object
    │   ├── LineTooLong                line_too_long     line exceeds --max-line
    │   ├── BadCommand                 bad_command       unknown op, unknown field, wrong type
    │   ├── InvalidJob                 invalid_job       job spec fails validation (has .path)
    │   ├── UnknownJob                 unknown_job       no job with that id (or long forgotten)
    │   ├── UnknownTemplate            unknown_template  no template of that name
    │   ├── AlreadyFinished            already_finished  cancel of a finished job
    │   ├── QueueFull                  queue_full        --on-full reject and the queue is full
    │   ├── ShuttingDown               shutting_down     no new work after shutdown began
    │   ├── UnknownAlert               unknown_alert     ack of an alert id never issued
    │   ├── AlreadyAcked               already_acked     ack of an alert already acked
    │   ├── UnknownSchedule            unknown_schedule  unschedule of an unknown schedule id
    │   ├── StoreFailed                store_failed      --state: the submit cannot be made durable
    │   └── Unavailable                unavailable       a feature loaded on first use did not load
    ├── StepFailed                     a step of a running job failed (not a command error)
    ├── JobFailed                      a job a Python API waited for did not succeed
    └── ClientError                    a client's command got an ``error`` event, or no answer

``StepFailed`` is different in kind: it travels up the step tree inside a running job and ends as
the ``error`` object of a ``finished`` event, ``{type, message, step, name?, ...}``.
``JobFailed`` is that ``finished`` event raised in Python by the embedding APIs and the clients
alike. ``ClientError`` is a command error seen from the other end of the pipe: its ``code`` is
whatever the server sent (one of the codes above), or ``disconnected``.

``IllegalTransition`` is deliberately *not* a ``SteplineError``: it signals a bug in stepline
itself (a job state change the lifecycle forbids), never bad input, so nothing should catch it
by accident while handling user errors.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

__all__ = [
    "AlreadyAcked",
    "AlreadyFinished",
    "BadCommand",
    "BadJson",
    "ClientError",
    "CommandError",
    "IllegalTransition",
    "InvalidJob",
    "JobFailed",
    "LineTooLong",
    "QueueFull",
    "ShuttingDown",
    "StepFailed",
    "SteplineError",
    "StoreFailed",
    "Unavailable",
    "UnknownAlert",
    "UnknownJob",
    "UnknownSchedule",
    "UnknownTemplate",
]


class SteplineError(Exception):
    """Base class of every error stepline reports to its users."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CommandError(SteplineError):
    """A command was refused; it becomes one ``error`` event and the executor goes on."""


class BadJson(CommandError):
    """A line is not a JSON object (its error echoes no ``id``: none could be read)."""

    code = "bad_json"


class LineTooLong(CommandError):
    """A line is longer than ``--max-line`` bytes; it was discarded unread."""

    code = "line_too_long"


class BadCommand(CommandError):
    """An unknown op, an unknown or missing field, or a field of the wrong type."""

    code = "bad_command"


class InvalidJob(CommandError):
    """A job spec failed validation. ``path`` names the offending step or key."""

    code = "invalid_job"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class UnknownJob(CommandError):
    """No job has this id, or its record is no longer kept (``--keep``)."""

    code = "unknown_job"


class UnknownTemplate(CommandError):
    """No template has this name."""

    code = "unknown_template"


class AlreadyFinished(CommandError):
    """The job to cancel has finished already."""

    code = "already_finished"


class QueueFull(CommandError):
    """The queue is full and ``on_full`` is ``reject``."""

    code = "queue_full"


class ShuttingDown(CommandError):
    """Shutdown has begun: no new jobs, templates or schedules are taken."""

    code = "shutting_down"


class UnknownAlert(CommandError):
    """No alert has this id."""

    code = "unknown_alert"


class AlreadyAcked(CommandError):
    """The alert was acked already."""

    code = "already_acked"


class UnknownSchedule(CommandError):
    """No schedule has this id."""

    code = "unknown_schedule"


class StoreFailed(CommandError):
    """A write to the state file failed at run time: the submit cannot be made durable."""

    code = "store_failed"


class Unavailable(CommandError):
    """A feature loaded on first use could not be loaded (no file descriptor left, say): the
    same command may succeed later. Inside a running job it is a step error of that type."""

    code = "unavailable"


class StepFailed(SteplineError):
    """A step failed while a job ran.

    ``type`` is the protocol's error type (``fail``, ``failure``, ``timeout``, ...); ``step`` is the
    failing step's path; ``name`` its ``name`` modifier; ``extra`` holds type-specific fields such
    as ``exit`` for a ``failure`` of a ``run`` step.
    """

    code = "step_failed"

    def __init__(
        self,
        type: str,
        message: str,
        step: str,
        name: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.step = step
        self.name = name
        self.extra = extra or {}

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` object of a ``finished`` event."""
        error: dict[str, Any] = {"type": self.type, "message": self.message, "step": self.step}
        if self.name is not None:
            error["name"] = self.name
        error.update(self.extra)
        return error


class JobFailed(SteplineError):
    """A job ended in a state other than ``succeeded``.

    ``state`` is the final :class:`~stepline.JobState` (``FAILED``, ``CANCELLED`` or
    ``TIMED_OUT``; typed as its base class, since this module sits below the engine that defines
    it); ``error`` is the protocol's error object, ``{type, message, step, name?,
    ...}``, as the ``finished`` event carried it; ``job`` is the job id and ``elapsed`` the
    seconds it ran.
    """

    code = "job_failed"

    def __init__(
        self, job: str, state: enum.Enum, error: dict[str, Any], elapsed: float = 0.0
    ) -> None:
        super().__init__(_describe_failure(job, state, error))
        self.job = job
        self.state = state
        self.error = error
        self.elapsed = elapsed


def _describe_failure(job: str, state: enum.Enum, error: dict[str, Any]) -> str:
    where = f" at {error['step']}" if error.get("step") else ""
    kind = error.get("type", "error")
    return f"job {job} {state.value}: {kind}{where}: {error.get('message', '')}"


class ClientError(SteplineError):
    """A command was answered with an ``error`` event, or could not be answered at all.

    ``code`` is the protocol's error code (``invalid_job``, ``unknown_job``, ``queue_full``, ...),
    or ``"disconnected"`` when the ``stepline serve`` child exited or closed its stdout first.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self._code = code

    @property
    def code(self) -> str:  # type: ignore[override]  # per instance: whatever the server said
        return self._code

    def __str__(self) -> str:
        return f"{self._code}: {self.message}"


class IllegalTransition(RuntimeError):
    """A job state change that the lifecycle forbids: always a bug in stepline."""
