"""Runtime references: ``${tasks.NAME.output}`` and ``${job.*}``, values known only as a job runs.

``${tasks.NAME.output}`` (optionally followed by ``.key`` and ``[index]``) and ``${job.id}`` /
``${job.workspace}`` name values that exist only once the job runs. They are
substituted by the same single pass of the validator that substitutes ``${params.X}``, with the
same rules (a string that is exactly one reference becomes the value itself; inside longer text a
non-string is written as JSON; ``$${`` is a literal ``${``), and substituted values are data that
is never substituted again. A :class:`Scope` tells that pass what each reference means where it
stands:

* at submit time nothing is known yet: the reference is *checked* (well formed; a task that
  exists and is upstream of the referring task, transitively through ``needs``) and left as text,
  and the enclosing *unit* — one task's steps, or the whole body of a job with ``steps`` — is
  marked. A typed field that holds exactly one ``${tasks...}`` (``{"sleep": "${tasks.a.output}"}``)
  is accepted as a placeholder;
* when a marked unit starts, its raw JSON is validated again under a scope that knows the values
  (:class:`Unit` keeps what that needs: the raw JSON, the job's parameters, a snapshot of the
  templates). A problem found then — a missing key, a value of the wrong type — fails that task
  with type ``invalid_reference``.

Why validate again instead of patching the frozen spec: the spec's fields are typed, and only the
validator knows every field's type and rules (including step kinds added later). Validating a unit
twice costs microseconds, and only units that hold a reference pay it.

A reference supplies data — a string, a number, any JSON value — never a step, a list of steps,
an ``env``, ``with`` or ``retry`` object or a template name: those must be written in the job.
This keeps the structure of a job fully known at submit time, so the submit-time checks (and the
``--allow-run`` policy, which walks the submit-time spec) see every step that can ever run.

``${tasks...}`` may be used only in the steps of a task. A template is its own scope: inside it,
``${tasks...}`` names the template's own tasks (pass outer values in through ``with``), while
``${job...}`` is the running job's, wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol

from ._inherit import NOTHING_INHERITED, Inherited
from ._text import describe_type, suggest

__all__ = [
    "GraphRefs",
    "JobValues",
    "RefProblem",
    "Scope",
    "Unit",
    "snapshot",
]

_NAME: Final = r"[A-Za-z_][A-Za-z0-9_-]*"
_SEGMENTS: Final = r"(?:\.[A-Za-z0-9_-]+|\[[0-9]+\])*"  # .key and [index], any number
_TASK_REF: Final = re.compile(rf"\$\{{tasks\.({_NAME})\.output({_SEGMENTS})\}}")
_SEGMENT: Final = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]")
_JOB_REF: Final = re.compile(r"\$\{job\.([^}]*)\}")
_JOB_FIELDS: Final = ("id", "workspace")


class RefProblem(Exception):
    """A reference that cannot be used where it stands; the validator adds the field's path."""


# -- what a reference means where it stands -------------------------------------------------------


class JobValues(Protocol):
    """The running job's ``${job.*}`` values (the workspace is created when first asked for)."""

    def get(self, field: str) -> str: ...


class GraphRefs:
    """Which tasks the steps of one task may refer to: the tasks upstream of it.

    Upstream sets are computed on demand (only for tasks whose steps hold a reference) and
    cached, so a large graph without references costs nothing here.
    """

    __slots__ = ("_needs", "_upstream", "task")

    def __init__(self, task: str, needs: Mapping[str, tuple[str, ...]]) -> None:
        self.task = task
        self._needs = needs
        self._upstream: frozenset[str] | None = None

    @property
    def upstream(self) -> frozenset[str]:
        """Every task this one needs, directly or through other tasks."""
        if self._upstream is None:
            self._upstream = _ancestors(self.task, self._needs)
        return self._upstream

    def check(self, name: str, text: str) -> None:
        """Raise unless ``name`` is a task upstream of this one."""
        if name == self.task:
            raise RefProblem(f"{text}: a task cannot refer to its own output")
        if name not in self._needs:
            raise RefProblem(f"{text}: unknown task {name!r}{suggest(name, self._needs)}")
        if name not in self.upstream:
            raise RefProblem(
                f"{text}: task {name!r} is not upstream of {self.task!r} "
                f"(add it to {self.task!r}'s needs, directly or through another task)"
            )


class _Mark:
    """Set when a unit holds a reference left for later; shared with the templates it uses."""

    __slots__ = ("deferred",)

    def __init__(self) -> None:
        self.deferred = False


class Scope:
    """What runtime references mean for one validator: values, or "check now, resolve later".

    ``job`` is None until the job runs. ``graph`` is None outside the steps of a task (there,
    ``${tasks...}`` is an error). ``outputs`` holds the outputs of finished tasks once the task
    runs; None means task references are checked and deferred.
    """

    __slots__ = ("graph", "job", "mark", "outputs")

    def __init__(
        self,
        job: JobValues | None = None,
        graph: GraphRefs | None = None,
        outputs: Mapping[str, Any] | None = None,
        mark: _Mark | None = None,
    ) -> None:
        self.job = job
        self.graph = graph
        self.outputs = outputs
        self.mark = mark if mark is not None else _Mark()

    @property
    def deferred(self) -> bool:
        """Whether a reference in this unit was left for run time."""
        return self.mark.deferred

    def for_template(self) -> Scope:
        """A template used here: same job, no tasks of ours, same unit to mark."""
        return Scope(self.job, None, None, self.mark)

    def for_task(self, graph: GraphRefs) -> Scope:
        """One task of a graph validated here: a unit of its own."""
        return Scope(self.job, graph)

    def value(self, text: str) -> object:
        """The value of the reference ``text``, or ``text`` itself when known only later."""
        if text.startswith("${job."):
            return self._job_value(text)
        return self._task_value(text)

    def defers(self, text: str) -> bool:
        """Whether ``text`` is one task reference standing in for a value known later."""
        if self.outputs is not None or self.graph is None:
            return False
        return _TASK_REF.fullmatch(text) is not None

    def _job_value(self, text: str) -> object:
        match = _JOB_REF.fullmatch(text)
        field = match.group(1) if match else ""
        if field not in _JOB_FIELDS:
            raise RefProblem(
                f"unknown job field {field!r} in {text}: expected ${{job.id}} or ${{job.workspace}}"
            )
        if self.job is None:
            self.mark.deferred = True
            return text
        return self.job.get(field)

    def _task_value(self, text: str) -> object:
        if self.graph is None:
            raise RefProblem(f"{text}: only the steps of a task can refer to task outputs")
        match = _TASK_REF.fullmatch(text)
        if match is None:
            raise RefProblem(
                f"bad reference {text}: expected ${{tasks.NAME.output}}, "
                "optionally followed by .key or [index]"
            )
        name = match.group(1)
        self.graph.check(name, text)
        if self.outputs is None:
            self.mark.deferred = True
            return text
        return _walk(self.outputs.get(name), match.group(2), name, text)


def _walk(value: Any, path: str, name: str, text: str) -> Any:
    """Follow ``.key`` and ``[index]`` segments into a task's output."""
    for segment in _SEGMENT.finditer(path):
        key, index = segment.group(1), segment.group(2)
        if key is not None:
            if type(value) is not dict:
                raise RefProblem(f"{text}: .{key} needs an object, got {describe_type(value)}")
            if key not in value:
                raise RefProblem(f"{text}: no key {key!r} in the output of {name!r}")
            value = value[key]
        else:
            if type(value) is not list:
                raise RefProblem(f"{text}: [{index}] needs a list, got {describe_type(value)}")
            if int(index) >= len(value):
                raise RefProblem(f"{text}: index {index} is out of range (list of {len(value)})")
            value = value[int(index)]
    return value


# -- units validated again at run time ------------------------------------------------------------


class Unit:
    """A part of a job to validate again once runtime values are known.

    Either the whole body of a job (``graph`` None: ``raw`` is the job object and ``overrides``
    the submit's params) or the steps of one task (``raw`` is its ``steps`` list, ``params`` the
    job's effective parameters). ``templates`` is a snapshot taken at submit time, so a template
    redefined later does not change a job already accepted.
    """

    __slots__ = (
        *("around", "chain", "depth", "graph", "inherited", "overrides", "params", "path", "raw"),
        "templates",
    )

    def __init__(
        self,
        raw: Any,
        path: str,
        *,
        params: Mapping[str, Any],
        templates: Mapping[str, Mapping[str, Any]] | None,
        chain: tuple[str, ...],
        depth: int,
        graph: GraphRefs | None = None,
        overrides: Mapping[str, Any] | None = None,
        inherited: Inherited = NOTHING_INHERITED,
        around: Mapping[str, Any] | None = None,
    ) -> None:
        self.inherited = inherited  # env, cwd, matrix values from outside the task (_inherit.py)
        self.around = around  # the task's own object: its env and cwd, resolved again too
        self.raw = raw
        self.path = path
        self.params = params
        self.templates = snapshot(templates)
        self.chain = chain
        self.depth = depth
        self.graph = graph
        self.overrides = overrides


def snapshot(
    templates: Mapping[str, Mapping[str, Any]] | None,
) -> Mapping[str, Mapping[str, Any]] | None:
    """A read-only copy of the templates (a snapshot is not copied again)."""
    if templates is None or type(templates) is MappingProxyType:
        return templates
    return MappingProxyType(dict(templates))


def _ancestors(task: str, needs: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """Every task ``task`` needs, directly or transitively (iteratively)."""
    seen: set[str] = set()
    todo = list(needs.get(task, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(needs.get(name, ()))
    return frozenset(seen)
