"""stepline: a small, fast, trustworthy job executor speaking JSON lines over pipes.

The public surface is what this module exports; everything in ``stepline._*`` is private.
"""

from . import steps
from ._api import EmbeddedExecutor, JobHandle, open_executor
from ._async_client import AsyncClient, AsyncClientJob
from ._client import Client, ClientJob
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
from ._outcome import JobFailed
from ._session import ClientError
from ._version import __version__

__all__ = [
    "AlreadyFinished",
    "AsyncClient",
    "AsyncClientJob",
    "BadCommand",
    "BadJson",
    "Client",
    "ClientError",
    "ClientJob",
    "CommandError",
    "Config",
    "EmbeddedExecutor",
    "Executor",
    "ExecutorState",
    "IllegalTransition",
    "InvalidJob",
    "Job",
    "JobFailed",
    "JobHandle",
    "JobState",
    "LineTooLong",
    "QueueFull",
    "ShuttingDown",
    "StepFailed",
    "SteplineError",
    "UnknownJob",
    "UnknownTemplate",
    "__version__",
    "open_executor",
    "steps",
]
