"""stepline: a small, fast, trustworthy job executor speaking JSON lines over pipes.

The public surface is what this module exports; everything in ``stepline._*`` is private.
"""

from ._errors import (
    AlreadyFinished,
    BadCommand,
    BadJson,
    CommandError,
    IllegalTransition,
    InvalidJob,
    LineTooLong,
    QueueFull,
    ShuttingDown,
    StepFailed,
    SteplineError,
    UnknownJob,
    UnknownTemplate,
)
from ._executor import Config, Executor, ExecutorState
from ._jobs import Job, JobState
from ._version import __version__

__all__ = [
    "AlreadyFinished",
    "BadCommand",
    "BadJson",
    "CommandError",
    "Config",
    "Executor",
    "ExecutorState",
    "IllegalTransition",
    "InvalidJob",
    "Job",
    "JobState",
    "LineTooLong",
    "QueueFull",
    "ShuttingDown",
    "StepFailed",
    "SteplineError",
    "UnknownJob",
    "UnknownTemplate",
    "__version__",
]
