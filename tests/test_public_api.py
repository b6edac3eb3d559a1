"""The public surface of ``stepline``: exactly these names, each importable, in sorted order.

A change here is an API change: it should be deliberate, reviewed, and mentioned in the
changelog. The test fails on any addition or removal so none slips in unnoticed.
"""

from __future__ import annotations

import stepline
from stepline import steps

PUBLIC = [
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

STEPS = [
    "Step",
    "fail",
    "job",
    "log",
    "named",
    "par",
    "race",
    "retry",
    "run",
    "seq",
    "sleep",
    "timeout",
    "try_",
    "use",
    "value",
]


def test_the_exported_names_are_exactly_these() -> None:
    assert stepline.__all__ == PUBLIC


def test_every_exported_name_resolves() -> None:
    for name in stepline.__all__:
        assert getattr(stepline, name) is not None, name


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from stepline import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


def test_the_steps_builder_exports_exactly_these() -> None:
    assert steps.__all__ == STEPS
    assert all(callable(getattr(steps, name)) for name in STEPS if name != "Step")


def test_errors_raised_to_users_are_stepline_errors() -> None:
    for error in (stepline.JobFailed, stepline.ClientError):
        assert issubclass(error, stepline.SteplineError)
