"""Jobs as graphs: the ``tasks`` of a job, their ``needs`` and ``if``, checked and parsed.

A job may hold ``tasks`` instead of ``steps``: named tasks, each a list of steps run in sequence,
with ``needs`` (upstream tasks) and an ``if`` (``success``, ``failure``, ``always``). This module
validates that structure at submit time — unknown needs, cycles, bad ``if`` values — and turns it
into a :class:`~stepline.spec._model.Graph`, which :mod:`stepline.engine._tasks` runs.

Values known only at run time (``${tasks.NAME.output}``, ``${job.workspace}``) are checked and
resolved as :mod:`stepline.spec._refs` describes: each task's steps are validated in a
:class:`~stepline.spec._refs.Scope` of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from .._errors import InvalidJob
from .._lazy import loading
from ._model import Graph, Seq, Step, Task
from ._refs import GraphRefs, Scope, Unit, snapshot
from ._text import at, describe_type, suggest

if TYPE_CHECKING:
    from ._matrix import Matrix
    from ._validate import Validator

__all__ = [
    "MAX_TASKS",
    "WHEN",
    "find_cycle",
    "parse_job_body",
    "topological",
]

MAX_TASKS: Final = 1000
"""Tasks per graph: bounds the work of the upstream checks, whatever a pipe sends."""

WHEN: Final = ("success", "failure", "always")
"""The values of a task's ``if``; ``success`` is the default."""

_TASK_KEYS: Final = ("steps", "needs", "if", "matrix", "env", "cwd")
_TASK_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


# -- the body of a job: steps or tasks ------------------------------------------------------------


def parse_job_body(v: Validator, raw: Mapping[str, Any], base: str, depth: int) -> Step:
    """A job object's body: its ``steps`` as a ``Seq``, or its ``tasks`` as a ``Graph``."""
    if "tasks" not in raw:
        if "limit" in raw:
            problem = "'limit' caps how many tasks run at once, but this job has no 'tasks'"
            raise InvalidJob(at(base, "limit"), problem)
        if "steps" not in raw:
            raise InvalidJob(base, "a job needs 'steps' or 'tasks' (or is itself a single step)")
        return Seq(path=base, steps=v.steps(raw["steps"], base, "steps", depth + 1, True))
    if "steps" in raw:
        raise InvalidJob(base, "a job has 'steps' or 'tasks', not both")
    limit = v.count(raw["limit"], base, "limit", 1) if "limit" in raw else None
    return _parse_graph(v, raw["tasks"], base, depth, limit)


def _parse_graph(v: Validator, raw: object, base: str, depth: int, limit: int | None) -> Graph:
    where = at(base, "tasks")
    if type(raw) is not dict:
        raise InvalidJob(where, f"expected an object of named tasks, got {describe_type(raw)}")
    if not raw:
        raise InvalidJob(where, "must not be empty: a job with tasks needs at least one")
    if len(raw) > MAX_TASKS:
        raise InvalidJob(where, f"more than {MAX_TASKS} tasks")
    shapes = [_shape(v, name, task, where) for name, task in raw.items()]
    needs = {shape.name: shape.needs for shape in shapes}
    for shape in shapes:
        shape.check_needs(needs)
    _check_acyclic(needs, where)
    groups = {s.name: s.matrix.labels for s in shapes if s.matrix is not None}
    if sum(len(labels) - 1 for labels in groups.values()) + len(shapes) > MAX_TASKS:
        raise InvalidJob(where, f"more than {MAX_TASKS} tasks once the matrices are expanded")
    templates = _Snapshot(v.templates)  # taken once, and only if a task is deferred
    tasks: list[Task] = []
    for shape in shapes:
        tasks += _tasks_of(v, shape, needs, groups, templates, depth)
    return Graph(path=base, tasks=tuple(tasks), limit=limit, groups=groups)


class _Snapshot:
    """The templates as a deferred task will see them: copied on first need, then shared."""

    __slots__ = ("_copy", "_live")

    def __init__(self, live: Mapping[str, Mapping[str, Any]] | None) -> None:
        self._live = live
        self._copy: Mapping[str, Mapping[str, Any]] | None = None

    def get(self) -> Mapping[str, Mapping[str, Any]] | None:
        if self._copy is None:
            self._copy = snapshot(self._live)
        return self._copy


class _Shape:
    """A task's structure (name, needs, if) checked before its steps are validated."""

    __slots__ = ("matrix", "name", "needs", "path", "raw", "steps", "when")

    def __init__(
        self,
        raw: Mapping[str, Any],
        name: str,
        path: str,
        needs: tuple[str, ...],
        when: str,
        matrix: Matrix | None,
    ):
        self.raw, self.name, self.path, self.needs, self.when = raw, name, path, needs, when
        self.steps = raw["steps"]
        self.matrix = matrix

    def check_needs(self, tasks: Mapping[str, tuple[str, ...]]) -> None:
        for i, need in enumerate(self.needs):
            where = f"{self.path}.needs[{i}]"
            if need == self.name:
                raise InvalidJob(where, "a task cannot need itself")
            if need not in tasks:
                raise InvalidJob(where, f"unknown task {need!r}{suggest(need, tasks)}")
            if need in self.needs[:i]:
                raise InvalidJob(where, f"{need!r} is listed twice")


def _shape(v: Validator, name: object, raw: object, where: str) -> _Shape:
    if type(name) is not str or not _TASK_NAME.fullmatch(name):
        raise InvalidJob(
            where,
            f"bad task name {str(name)[:40]!r}: a name starts with a letter or _ and holds "
            "letters, digits, _ and -",
        )
    path = f"{where}.{name}"
    if type(raw) is not dict:
        raise InvalidJob(path, f"a task must be an object with 'steps', got {describe_type(raw)}")
    for key in raw:
        if key not in _TASK_KEYS:
            hint = suggest(str(key), _TASK_KEYS) or (
                " (a task holds 'steps', 'needs', 'if', 'matrix', 'env' and 'cwd')"
            )
            raise InvalidJob(path, f"unknown key {str(key)[:40]!r} for a task{hint}")
    if "steps" not in raw:
        raise InvalidJob(path, "missing 'steps'")
    needs = _needs(raw.get("needs", []), path)
    when = _when(v, raw, path, needs)
    matrix = None
    if "matrix" in raw:
        with loading("task matrices"):
            from ._matrix import parse_matrix  # start-up time: only jobs with a matrix

        matrix = parse_matrix(v, raw["matrix"], path, name)
    return _Shape(raw, name, path, needs, when, matrix)


def _when(v: Validator, raw: Mapping[str, Any], path: str, needs: tuple[str, ...]) -> str:
    """A task's ``if``: one of :data:`WHEN`, or a boolean (``${params.X}``): false is
    ``never`` (the task is skipped), true the default ``success``."""
    when = v.resolve(raw.get("if", "success"), path, "if")
    if type(when) is bool:
        return "success" if when else "never"
    if v.lenient(when):
        return "success"  # define time: the switch is not known yet
    if when not in WHEN:
        raise InvalidJob(
            f"{path}.if",
            "expected one of 'success', 'failure', 'always' or a boolean "
            f"(${{params.X}}), got {_show(when)}",
        )
    if when == "failure" and not needs:
        raise InvalidJob(
            f"{path}.if", "'failure' runs when a task in 'needs' failed, but 'needs' is empty"
        )
    return str(when)


def _needs(raw: object, path: str) -> tuple[str, ...]:
    """``needs``: a list of task names (one name alone may be given as a string)."""
    if type(raw) is str:
        raw = [raw]
    if type(raw) is not list:
        raise InvalidJob(
            f"{path}.needs", f"expected a list of task names, got {describe_type(raw)}"
        )
    for i, need in enumerate(raw):
        if type(need) is not str:
            raise InvalidJob(f"{path}.needs[{i}]", f"expected a task name, got {_show(need)}")
    return tuple(raw)


def _tasks_of(
    v: Validator,
    shape: _Shape,
    needs: Mapping[str, tuple[str, ...]],
    groups: Mapping[str, tuple[str, ...]],
    templates: _Snapshot,
    depth: int,
) -> list[Task]:
    """The task of ``shape``, or one task per instance of its matrix. A need on a matrix task
    becomes a need on each of its instances."""
    task_needs = tuple(name for need in shape.needs for name in groups.get(need, (need,)))
    if shape.matrix is None:
        return [_task(v, shape, shape.name, task_needs, needs, templates, depth)]
    tasks = []
    for label, values in zip(shape.matrix.labels, shape.matrix.values, strict=True):
        instance = v.with_inherited(v.inherited.with_matrix(values))
        try:
            task = _task(instance, shape, label, task_needs, needs, templates, depth)
        except InvalidJob as exc:
            raise InvalidJob(exc.path, f"{exc.problem} (in matrix instance {label})") from None
        tasks.append(task)
    return tasks


def _task(
    v: Validator,
    shape: _Shape,
    name: str,
    task_needs: tuple[str, ...],
    needs: Mapping[str, tuple[str, ...]],
    templates: _Snapshot,
    depth: int,
) -> Task:
    """One task's steps, validated in a scope of their own (see the module docstring), under
    the task's ``env`` and ``cwd``."""
    graph = GraphRefs(shape.name, needs)
    outer = v.refs
    scope = outer.for_task(graph) if outer is not None else Scope(graph=graph)
    inner = v.with_refs(scope).under(shape.raw, shape.path)
    steps = inner.steps(shape.steps, shape.path, "steps", depth + 1, True)
    later = None
    if scope.deferred:
        later = Unit(
            shape.steps,
            shape.path,
            params=v.params,
            templates=templates.get(),
            chain=v.chain,
            depth=depth + 1,
            graph=graph,
            inherited=v.inherited,
            around=shape.raw,
        )
    body = Seq(path=shape.path, steps=steps)
    matrix = v.inherited.matrix
    return Task(
        name=name,
        path=shape.path,
        body=body,
        needs=task_needs,
        when=shape.when,
        later=later,
        group=shape.name if matrix is not None else None,
        matrix=matrix,
    )


# -- graph algorithms -----------------------------------------------------------------------------


def _check_acyclic(needs: Mapping[str, tuple[str, ...]], where: str) -> None:
    """Raise naming the first cycle found, in run order: ``a -> b`` means b needs a."""
    cycle = find_cycle(needs)
    if cycle is not None:
        raise InvalidJob(where, "cycle " + " -> ".join(cycle))


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph in run order (first and last name equal), or None.

    Iterative depth-first search along ``needs`` (no recursion limit, whatever the input); tasks
    are visited in the order given, so the cycle reported is deterministic.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in needs:
        if root in state:
            continue
        path: list[str] = [root]
        state[root] = 1
        stack: list[Iterator[str]] = [iter(needs[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return list(reversed([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(needs.get(nxt, ())))
    return None


def topological(tasks: Sequence[Task]) -> list[Task]:
    """The tasks, each after everything it needs, otherwise in the order given (for display)."""
    by_name = {task.name: task for task in tasks}
    placed: set[str] = set()
    order: list[Task] = []

    def place(task: Task) -> None:
        todo: list[tuple[Task, int]] = [(task, 0)]
        while todo:
            current, i = todo.pop()
            if current.name in placed:
                continue
            if i < len(current.needs):
                todo.append((current, i + 1))
                todo.append((by_name[current.needs[i]], 0))
            else:
                placed.add(current.name)
                order.append(current)

    for task in tasks:
        place(task)
    return order


# -- small helpers --------------------------------------------------------------------------------


def _show(v: object) -> str:
    return repr(v[:40]) if type(v) is str else describe_type(v)
