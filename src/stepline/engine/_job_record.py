"""One job's record: its state, its output and what it is doing, as the job table keeps it.

A module of its own because the record is read everywhere (interpreters, the run lane, the
store, the status replies) while only :class:`~stepline.engine._jobs.JobTable` changes its
state: the table's transitions and retention are one concept, the fields they write another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..runners._base import StopOrders
from ..spec._validate import value_spec
from ._logs import JobLog
from ._states import FINAL_STATES, JobState

if TYPE_CHECKING:
    from ..spec._model import JobSpec
    from ..wire._events import Event, RequestId

__all__ = ["Job", "JobScope"]


class JobScope(Protocol):
    """What the table asks of a running job's scope: a worker's ``trio.CancelScope``, or a run
    lane job's (``engine/_run_lane.LaneScope``), which has no task until it needs one."""

    def cancel(self) -> None: ...

    @property
    def cancel_called(self) -> bool: ...


class Job:
    """One job's record. Mutated only by :class:`~stepline.engine._jobs.JobTable` (and ``step``,
    see below).

    A plain class with ``__slots__``, not an attrs class: it is mutable state, made once per
    job on the hot path, and attrs' generated ``__init__`` (25 fields, two factories) cost about
    three times this one (NOTES.md, Performance). Fields a job may never need (its stop orders)
    are made on first use.
    """

    __slots__ = (
        "_spec",
        "_stop_orders",
        "_value",
        "artifacts",
        "cancel_reason",
        "created",
        "ended",
        "error",
        "extra",
        "finished_at",
        "id",
        "log",
        "log_bytes",
        "name",
        "output",
        "output_bytes",
        "output_dropped",
        "partial",
        "request_id",
        "scope",
        "started",
        "started_at",
        "state",
        "step",
    )

    def __init__(
        self,
        id: str,
        spec: JobSpec | None,
        name: str | None,
        state: JobState = JobState.QUEUED,
        extra: dict[str, Any] | None = None,
        request_id: RequestId = None,
        value: Any = None,
    ) -> None:
        self.id = id
        # spec None: a job that is one bare `value` step (spec/_validate.py, value_job), whose
        # spec is made from ``value`` when first asked for (see `spec`).
        self._spec = spec
        self._value = value
        self.name = name
        self.state = state
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        # The job's one cancel scope, given by its worker at start (see Dispatcher._worker); its
        # deadline is the job-level timeout, set when the job starts. None for a job run at
        # once: nothing can interrupt it (engine/_execution.py).
        self.scope: JobScope | None = None
        # Why the job is being cancelled; set once, by the first cancel. A job whose scope
        # fires with no reason set has hit its own deadline: it timed out.
        self.cancel_reason: str | None = None
        # Path of the innermost running step, written by the interpreters as steps start and
        # end; read by heartbeats and to name the step a cancel or timeout interrupted.
        self.step = ""
        # Additional fields for the `accepted` event.
        self.extra: dict[str, Any] = extra if extra is not None else {}
        # Encoded size of an output counted against the table's byte budget (0: not counted);
        # once the budget took the output away, ``output_dropped`` holds that size instead.
        self.output_bytes = 0
        self.output_dropped: int | None = None
        # The files copied out of the workspace (job-level `artifacts`: _artifacts.py), or None.
        self.artifacts: list[dict[str, Any]] | None = None
        # The job's output lines (engine/_logs.py), made when its first `run` step starts.
        self.log: JobLog | None = None
        self.log_bytes = 0  # the log's size counted against the byte budget once finished
        # Unix times of acceptance, start and end (None: not yet, or unknown after a restart).
        self.created: float | None = None
        self.started: float | None = None
        self.ended: float | None = None
        # What a graph job's succeeded tasks output so far: `partial` if it does not succeed.
        self.partial: dict[str, Any] | None = None
        self._stop_orders: StopOrders | None = None
        # The `id` of the submit that made the job, echoed on every event of the job.
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, state={self.state.value})"

    @property
    def spec(self) -> JobSpec:
        """The job's validated spec. A bare `value` job's is made on first use: nothing on its
        path reads it, and its frozen objects were a fifth of such a job's cost."""
        spec = self._spec
        if spec is None:
            spec = self._spec = value_spec(self._value)
        return spec

    @property
    def stop_orders(self) -> StopOrders:
        """How its processes are stopped when it is cancelled: a `cancel`'s `grace`, or `force`
        (SIGKILL now, also for processes already being stopped); by default each step's
        `grace`. Made on first use: only jobs with processes, or a cancel, need one."""
        if self._stop_orders is None:
            self._stop_orders = StopOrders()
        return self._stop_orders

    def tag(self, ev: Event) -> Event:
        """``ev`` (one of this job's events) with its submit's ``id``, so that a driver can tie
        every event to its submit without mapping job ids first."""
        if self.request_id is not None:
            ev["id"] = self.request_id
        return ev

    def output_log(self) -> JobLog:
        """The job's log, made on first use (jobs without `run` steps never need one)."""
        if self.log is None:
            self.log = JobLog()
        return self.log

    @property
    def elapsed(self) -> float:
        """Seconds the job has run: 0 until it starts, frozen once it finishes."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else trio.current_time()
        return round((end - self.started_at) * 1e6) / 1e6  # to the µs; round(x, 6) is dearer

    @property
    def stopping(self) -> bool:
        """Running, but cancelled or past its deadline: its processes are being stopped."""
        if self.state is not JobState.RUNNING:
            return False
        return self.cancel_reason is not None or (
            self.spec.timeout is not None and self.scope is not None and self.scope.cancel_called
        )

    def record(self) -> dict[str, Any]:
        """The job's entry in a ``status`` reply."""
        rec: dict[str, Any] = {
            "job": self.id,
            "state": self.state.value,
            "name": self.name,
            "elapsed": self.elapsed,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
        }
        if self.stopping:
            rec["stopping"] = True
        if self.state is JobState.SUCCEEDED:
            rec["output"] = self.output
            if self.output_dropped is not None:
                rec["output_dropped"] = self.output_dropped
        elif self.state in FINAL_STATES:
            rec["error"] = self.error
            if self.partial is not None:
                rec["partial"] = self.partial
        if self.artifacts is not None:
            rec["artifacts"] = self.artifacts
        return rec
