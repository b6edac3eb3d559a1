"""stepline: a small, fast, trustworthy job executor speaking JSON lines over pipes.

The public surface is what this module exports; everything in ``stepline._*`` is private.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    AlreadyAcked,
    AlreadyFinished,
    BadCommand,
    BadJson,
    ClientError,
    CommandError,
    IllegalTransition,
    InvalidJob,
    JobFailed,
    LineTooLong,
    QueueFull,
    ShuttingDown,
    StepFailed,
    SteplineError,
    StoreFailed,
    Unavailable,
    UnknownAlert,
    UnknownJob,
    UnknownSchedule,
    UnknownTemplate,
)
from ._version import __version__

if TYPE_CHECKING:
    from . import steps
    from .client._api import EmbeddedExecutor, JobHandle, open_executor
    from .client._async import AsyncClient, AsyncClientJob
    from .client._sync import Client, ClientJob
    from .engine._config import Config
    from .engine._executor import Executor, ExecutorState
    from .engine._jobs import Job, JobState

__all__ = [
    "AlreadyAcked",
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
    "StoreFailed",
    "Unavailable",
    "UnknownAlert",
    "UnknownJob",
    "UnknownSchedule",
    "UnknownTemplate",
    "__version__",
    "open_executor",
    "steps",
]

# Start-up time: `stepline serve` imports this package before its CLI, and must not pay for the
# embedding API (clients, histories, the step builder). These names load on first use (PEP 562).
_LAZY: dict[str, str] = {
    "AsyncClient": "client._async",
    "AsyncClientJob": "client._async",
    "Client": "client._sync",
    "ClientJob": "client._sync",
    "Config": "engine._config",
    "EmbeddedExecutor": "client._api",
    "Executor": "engine._executor",
    "ExecutorState": "engine._executor",
    "Job": "engine._jobs",
    "JobHandle": "client._api",
    "JobState": "engine._jobs",
    "open_executor": "client._api",
    "steps": "steps",
}


if not TYPE_CHECKING:  # hidden from type checkers, which would then accept any name

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        loaded = importlib.import_module(f"{__name__}.{module}")
        value = loaded if name == "steps" else getattr(loaded, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
