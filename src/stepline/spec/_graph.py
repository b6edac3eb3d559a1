"""Jobs as graphs: the ``tasks`` of a job, their ``needs``, and values known only at run time.

A job may hold ``tasks`` instead of ``steps``: named tasks, each a list of steps run in sequence,
with ``needs`` (upstream tasks) and an ``if`` (``success``, ``failure``, ``always``). This module
validates that structure at submit time — unknown needs, cycles, bad ``if`` values — and turns it
into a :class:`~stepline.spec._model.Graph`, which :mod:`stepline.engine._tasks` runs.

**Runtime references.** ``${tasks.NAME.output}`` (optionally followed by ``.key`` and ``[index]``)
and ``${job.id}`` / ``${job.workspace}`` name values that exist only once the job runs. They are
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._errors import InvalidJob
from ._inherit import NOTHING_INHERITED, Inherited
from ._model import Graph, Seq, Step, Task

if TYPE_CHECKING:
    from ._matrix import Matrix
    from ._validate import _Validator

__all__ = [
    "MAX_TASKS",
    "WHEN",
    "GraphRefs",
    "JobValues",
    "RefProblem",
    "Scope",
    "Unit",
    "describe",
    "find_cycle",
    "parse_job_body",
    "snapshot",
    "topological",
]

MAX_TASKS: Final = 1000
"""Tasks per graph: bounds the work of the upstream checks, whatever a pipe sends."""

WHEN: Final = ("success", "failure", "always")
"""The values of a task's ``if``; ``success`` is the default."""

_TASK_KEYS: Final = ("steps", "needs", "if", "matrix", "env", "cwd")
_NAME: Final = r"[A-Za-z_][A-Za-z0-9_-]*"
_TASK_NAME: Final = re.compile(_NAME)
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
            raise RefProblem(f"{text}: unknown task {name!r}{_suggest(name, self._needs)}")
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
                raise RefProblem(f"{text}: .{key} needs an object, got {describe(value)}")
            if key not in value:
                raise RefProblem(f"{text}: no key {key!r} in the output of {name!r}")
            value = value[key]
        else:
            if type(value) is not list:
                raise RefProblem(f"{text}: [{index}] needs a list, got {describe(value)}")
            if int(index) >= len(value):
                raise RefProblem(f"{text}: index {index} is out of range (list of {len(value)})")
            value = value[int(index)]
    return value


def describe(v: object) -> str:
    """A JSON value's type for a message ("a string", "null")."""
    if v is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(v), "an object")


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


# -- the body of a job: steps or tasks ------------------------------------------------------------


def parse_job_body(v: _Validator, raw: Mapping[str, Any], base: str, depth: int) -> Step:
    """A job object's body: its ``steps`` as a ``Seq``, or its ``tasks`` as a ``Graph``."""
    if "tasks" not in raw:
        if "limit" in raw:
            problem = "'limit' caps how many tasks run at once, but this job has no 'tasks'"
            raise InvalidJob(_at(base, "limit"), problem)
        if "steps" not in raw:
            raise InvalidJob(base, "a job needs 'steps' or 'tasks' (or is itself a single step)")
        return Seq(path=base, steps=v._steps(raw["steps"], base, "steps", depth + 1, True))
    if "steps" in raw:
        raise InvalidJob(base, "a job has 'steps' or 'tasks', not both")
    limit = v._int(raw["limit"], base, "limit", 1) if "limit" in raw else None
    return _parse_graph(v, raw["tasks"], base, depth, limit)


def _parse_graph(v: _Validator, raw: object, base: str, depth: int, limit: int | None) -> Graph:
    where = _at(base, "tasks")
    if type(raw) is not dict:
        raise InvalidJob(where, f"expected an object of named tasks, got {describe(raw)}")
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
                raise InvalidJob(where, f"unknown task {need!r}{_suggest(need, tasks)}")
            if need in self.needs[:i]:
                raise InvalidJob(where, f"{need!r} is listed twice")


def _shape(v: _Validator, name: object, raw: object, where: str) -> _Shape:
    if type(name) is not str or not _TASK_NAME.fullmatch(name):
        raise InvalidJob(
            where,
            f"bad task name {str(name)[:40]!r}: a name starts with a letter or _ and holds "
            "letters, digits, _ and -",
        )
    path = f"{where}.{name}"
    if type(raw) is not dict:
        raise InvalidJob(path, f"a task must be an object with 'steps', got {describe(raw)}")
    for key in raw:
        if key not in _TASK_KEYS:
            hint = _suggest(str(key), _TASK_KEYS) or (
                " (a task holds 'steps', 'needs', 'if', 'matrix', 'env' and 'cwd')"
            )
            raise InvalidJob(path, f"unknown key {str(key)[:40]!r} for a task{hint}")
    if "steps" not in raw:
        raise InvalidJob(path, "missing 'steps'")
    needs = _needs(raw.get("needs", []), path)
    when = _when(v, raw, path, needs)
    matrix = None
    if "matrix" in raw:
        from ._matrix import parse_matrix  # start-up time: only jobs with a matrix

        matrix = parse_matrix(v, raw["matrix"], path, name)
    return _Shape(raw, name, path, needs, when, matrix)


def _when(v: _Validator, raw: Mapping[str, Any], path: str, needs: tuple[str, ...]) -> str:
    """A task's ``if``: one of :data:`WHEN`, or a boolean (``${params.X}``): false is
    ``never`` (the task is skipped), true the default ``success``."""
    when = v._resolve(raw.get("if", "success"), path, "if")
    if type(when) is bool:
        return "success" if when else "never"
    if v._lenient(when):
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
        raise InvalidJob(f"{path}.needs", f"expected a list of task names, got {describe(raw)}")
    for i, need in enumerate(raw):
        if type(need) is not str:
            raise InvalidJob(f"{path}.needs[{i}]", f"expected a task name, got {_show(need)}")
    return tuple(raw)


def _tasks_of(
    v: _Validator,
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
    v: _Validator,
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
    steps = inner._steps(shape.steps, shape.path, "steps", depth + 1, True)
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


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(v: object) -> str:
    return repr(v[:40]) if type(v) is str else describe(v)


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib  # start-up time: needed only for a message

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
