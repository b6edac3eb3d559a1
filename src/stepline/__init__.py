"""stepline: a small, fast, trustworthy job executor speaking JSON lines over pipes.

The public surface is what this module exports; everything in ``stepline._*`` is private.
"""

import importlib
from typing import TYPE_CHECKING, Any

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
from ._version import __version__

if TYPE_CHECKING:
    from . import steps
    from ._api import EmbeddedExecutor, JobHandle, open_executor
    from ._async_client import AsyncClient, AsyncClientJob
    from ._client import Client, ClientJob
    from ._executor import Config, Executor, ExecutorState
    from ._jobs import Job, JobState
    from ._outcome import JobFailed
    from ._session import ClientError

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

# Start-up time: `stepline serve` imports this package before its CLI, and must not pay for the
# embedding API (clients, histories, the step builder). These names load on first use (PEP 562).
_LAZY: dict[str, str] = {
    "AsyncClient": "_async_client",
    "AsyncClientJob": "_async_client",
    "Client": "_client",
    "ClientError": "_session",
    "ClientJob": "_client",
    "Config": "_executor",
    "EmbeddedExecutor": "_api",
    "Executor": "_executor",
    "ExecutorState": "_executor",
    "Job": "_jobs",
    "JobFailed": "_outcome",
    "JobHandle": "_api",
    "JobState": "_jobs",
    "open_executor": "_api",
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
