"""The validated job and step specs: frozen attrs classes, one per step kind.

A spec is produced once, at submit time, by :mod:`stepline.spec._validate` from the JSON a driver
sent,
with parameters already substituted and templates (``use``) already expanded. From then on it is
immutable and trusted: the interpreters never re-check types. Every step carries its ``path``
(``steps[1].par[0]``) so an error can name where it happened without the interpreters having to
track paths themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from attrs import field, frozen

from .._record import ValueRecord
from ._limits import NO_LIMITS, Limits

if TYPE_CHECKING:
    from ._callbacks import Callback
    from ._refs import Unit

__all__ = [
    "NO_MODIFIERS",
    "Deferred",
    "Fail",
    "Graph",
    "Http",
    "JobSpec",
    "Log",
    "Modifiers",
    "Par",
    "Race",
    "Retry",
    "Run",
    "Seq",
    "Sleep",
    "Step",
    "Task",
    "Try",
    "Use",
    "Value",
]


@frozen(repr=False, eq=False)
class Retry(ValueRecord):
    """``{"attempts": n, "backoff": s, "factor": f}``: at most ``attempts`` tries in all."""

    attempts: int
    backoff: float = 0.0
    factor: float = 2.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt`` (2-based: try 2 waits ``backoff``).

        Never raises: a ``backoff`` of 0 waits 0 whatever the factor (``0 * 2.0 ** 2000``
        would overflow first), and a power too large for a float is ``inf``. Validation refuses
        a retry whose :meth:`longest_delay` is not finite, so ``inf`` never reaches a sleep.
        """
        if self.backoff == 0:
            return 0.0
        try:
            return self.backoff * self.factor ** (attempt - 2)
        except OverflowError:
            return math.inf

    def longest_delay(self) -> float:
        """The longest wait between two tries (0 with a single try): the first or the last."""
        if self.attempts < 2:
            return 0.0
        return max(self.delay_before(2), self.delay_before(self.attempts))


@frozen(repr=False, eq=False)
class Modifiers(ValueRecord):
    """The modifiers any step may carry."""

    name: str | None = None
    timeout: float | None = None
    retry: Retry | None = None


NO_MODIFIERS = Modifiers()


@frozen(kw_only=True, repr=False, eq=False)
class _StepBase(ValueRecord):
    path: str
    mods: Modifiers = NO_MODIFIERS


@frozen(kw_only=True, repr=False, eq=False)
class Sleep(_StepBase):
    seconds: float


@frozen(kw_only=True, repr=False, eq=False)
class Value(_StepBase):
    value: Any


@frozen(kw_only=True, repr=False, eq=False)
class Log(_StepBase):
    message: str


@frozen(kw_only=True, repr=False, eq=False)
class Fail(_StepBase):
    message: str


@frozen(kw_only=True, repr=False, eq=False)
class Run(_StepBase):
    """A subprocess. A shell line is stored as ``argv = ("/bin/sh", "-c", line)``."""

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stdin: str | None = None
    grace: float = 5.0
    stream: bool | None = None  # emit `output` events per line; None: the job's choice
    parse: str | None = None  # "json", "text" or "lines": the output is stdout parsed
    limits: Limits = NO_LIMITS  # missing keys inherited from the job, then from serve
    runner: str | None = None  # "local" | "sandbox"; None: the job's, then serve's
    network: bool = False  # the sandbox runner gives network access only when true


@frozen(kw_only=True, repr=False, eq=False)
class Seq(_StepBase):
    steps: tuple[Step, ...]


@frozen(kw_only=True, repr=False, eq=False)
class Par(_StepBase):
    steps: tuple[Step, ...]
    limit: int | None = None


@frozen(kw_only=True, repr=False, eq=False)
class Race(_StepBase):
    steps: tuple[Step, ...]


@frozen(kw_only=True, repr=False, eq=False)
class Try(_StepBase):
    body: Step
    catch: Step | None = None


@frozen(kw_only=True, repr=False, eq=False)
class Use(_StepBase):
    """A template, expanded at submit time; ``job`` is the template's validated job, ``args``
    the ``with`` it was expanded with (kept for ``stepline graph`` to show)."""

    template: str
    job: JobSpec
    args: Mapping[str, Any] = field(factory=dict)


@frozen(kw_only=True, repr=False, eq=False)
class Http(_StepBase):
    """An HTTP request. A ``json`` body is encoded once, at validation, into ``content``."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(factory=dict)
    content: bytes | None = None
    expect: tuple[int, ...] | None = None  # None: any 2xx


@frozen(kw_only=True, repr=False, eq=False)
class Task(ValueRecord):
    """One task of a graph: its steps run in sequence once its ``needs`` allow.

    ``when`` is the task's ``if`` (``success``, ``failure`` or ``always``; ``never`` when a
    ``${params.X}`` switched it off). An instance of a matrix task has ``group``, the matrix
    task's name, and ``matrix``, its values (see :mod:`stepline.spec._matrix`). ``later`` is set
    when the steps refer to values known only at run time (``${tasks.a.output}``, ``${job.id}``):
    ``body`` then holds those references as text and is validated again, with the values, when
    the task starts (see :mod:`stepline.spec._refs`).
    """

    name: str
    path: str
    body: Seq
    needs: tuple[str, ...] = ()
    when: str = "success"
    later: Unit | None = None
    group: str | None = None
    matrix: Mapping[str, Any] | None = None


@frozen(kw_only=True, repr=False, eq=False)
class Graph(_StepBase):
    """The body of a job with ``tasks``: tasks in the order given, at most ``limit`` at once.

    ``groups`` maps each matrix task to the names of its instances, in matrix order."""

    tasks: tuple[Task, ...]
    limit: int | None = None
    groups: Mapping[str, tuple[str, ...]] = field(factory=dict)


@frozen(kw_only=True, repr=False, eq=False)
class Deferred(_StepBase):
    """A job body that refers to ``${job.id}``/``${job.workspace}``: validated again at start."""

    body: Step
    later: Unit


Step: TypeAlias = (
    Sleep | Value | Log | Fail | Run | Seq | Par | Race | Try | Use | Http | Graph | Deferred
)


@frozen(kw_only=True, repr=False, eq=False)
class JobSpec(ValueRecord):
    """A validated job: its body is one step (a ``Seq`` of the job's ``steps``, or a ``Graph``
    of its ``tasks``; either wrapped in a ``Deferred`` when it refers to ``${job.*}``)."""

    body: Step
    name: str | None = None
    timeout: float | None = None
    retry: Retry | None = None
    params: Mapping[str, Any] = field(factory=dict)
    on_finish: tuple[Callback, ...] = ()  # run after the job's `finished` (triggers/_callbacks.py)
    keep_workspace: bool = False  # keep the job's workspace directory (engine/_workspace.py)
    stream: bool | None = None  # its `run` steps' default `stream`; None: the executor's
    artifacts: tuple[str, ...] = ()  # workspace globs copied out at the end (spec/_artifacts.py)
    limits: Limits = NO_LIMITS  # defaults for the job's `run` steps (spec/_limits.py)
    runner: str | None = None  # the runner of the job's `run` steps that name none
