"""The public surface of ``stepline``: exactly these names, each importable, in sorted order.

A change here is an API change: it should be deliberate, reviewed, and mentioned in the
changelog. The test fails on any addition or removal so none slips in unnoticed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from typing import TypeVar

import stepline
from stepline import _errors, steps

E = TypeVar("E", bound=BaseException)

PUBLIC = [
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

STEPS = [
    "Step",
    "alert",
    "fail",
    "http",
    "job",
    "log",
    "named",
    "notify",
    "par",
    "race",
    "retry",
    "run",
    "run_callback",
    "seq",
    "sleep",
    "task",
    "timeout",
    "try_",
    "use",
    "value",
    "webhook",
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


def _every_module() -> list[str]:
    names = ["stepline"]
    for info in pkgutil.walk_packages(stepline.__path__, "stepline."):
        if info.name != "stepline.__main__":  # runs the CLI when imported
            names.append(info.name)
    return names


def _subclasses(cls: type[E]) -> set[type[E]]:
    found: set[type[E]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_stepline_error_is_defined_in_the_tree_and_exported() -> None:
    for name in _every_module():
        importlib.import_module(name)  # defines every error class there is
    errors = _subclasses(stepline.SteplineError)
    assert errors, "no error classes found"
    for error in errors:
        assert error.__module__ == "stepline._errors", f"{error.__qualname__} is outside the tree"
        assert getattr(stepline, error.__name__) is error, f"{error.__name__} is not exported"
        assert error.__name__ in _errors.__all__
        assert error.__name__ in (_errors.__doc__ or ""), f"{error.__name__} is not drawn"


def test_every_command_error_has_its_own_wire_code() -> None:
    command_errors = _subclasses(stepline.CommandError)
    codes = [error.code for error in command_errors]
    assert all(code.islower() and code != "error" for code in codes)
    assert len(set(codes)) == len(codes), "two command errors share a code"
    for error in command_errors:
        drawn = re.search(rf"\b{error.__name__} +{error.code}\b", _errors.__doc__ or "")
        assert drawn, f"{error.__name__} is not drawn with its code"


def test_errors_raised_to_users_are_stepline_errors() -> None:
    for error in (stepline.JobFailed, stepline.ClientError, stepline.StoreFailed):
        assert issubclass(error, stepline.SteplineError)


def test_every_exported_class_and_function_says_what_it_is() -> None:
    """``help(stepline.X)`` is where a user looks first: nothing public is left without a
    docstring of its own (an inherited one says what the base class is, not this)."""
    public = [(name, getattr(stepline, name)) for name in PUBLIC if not name.startswith("__")]
    public += [(f"steps.{name}", getattr(steps, name)) for name in STEPS]

    def own_doc(obj: object) -> str:
        doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
        return (doc or "").strip()

    undocumented = [
        name
        for name, obj in public
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not own_doc(obj)
    ]
    assert undocumented == []
