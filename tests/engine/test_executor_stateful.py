"""Stateful property test of the executor: random programs of operations on the mock clock.

Hypothesis generates a *program* — an executor configuration and a list of operations (submit a
random valid step tree, cancel a queued/running/finished/unknown job, ask for status or stats,
let mock time pass, sometimes shut down midway) ending in a drain or a cancelling shutdown. Each
program runs in its own ``trio.run`` on a ``MockClock`` that jumps whenever every task is blocked,
so an hour of sleeps, timeouts and backoffs takes milliseconds and every duration is exact.

Why a program rather than ``RuleBasedStateMachine``: rules cannot await, and the executor must
run inside trio. A generated program shrinks just as well, to the shortest sequence of
operations that still breaks something.

Checked on every event (:class:`CheckingOutbox`): a job's events come in lifecycle order, it has
at most one ``finished``, running jobs never exceed ``workers``. Checked after every operation,
once the executor has settled: queued jobs never exceed ``queue_size``, ``stats`` and ``status``
agree with the event stream (retention included), a cancel takes effect without time passing,
a full queue rejects or blocks exactly when it is full. Checked at the end: every accepted job
has exactly one ``finished``; every job the driver did not cancel ends exactly as the reference
model (:mod:`tests.executor_model`) says — state, output, error type, step path, elapsed time;
and no task is left behind once the executor has closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any, Literal

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stepline import AlreadyFinished, Config, Executor, QueueFull, ShuttingDown, UnknownJob
from stepline.engine._jobs import Job
from stepline.wire._events import Event

from ..executor_model import AMBIGUOUS, Err, Ok, job_outcome
from ..hypothesis_profiles import note, scaled

# -- programs ----------------------------------------------------------------------------------

# Multiples of 1/8: exact in binary floating point, so mock-clock arithmetic is exact too.
DURATIONS = [0, 0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 3.25]
TEMPLATES: dict[str, dict[str, Any]] = {
    "tp": {
        "params": {"d": 0.5, "v": "x"},
        "steps": [{"sleep": "${params.d}"}, {"value": "${params.v}"}],
    },
    "tf": {"name": "tfail", "timeout": 1, "steps": [{"sleep": 2}]},
    "tr": {"retry": {"attempts": 2, "backoff": 0.25}, "steps": [{"log": "again"}, {"fail": "x"}]},
}


@attrs.frozen
class Submit:
    job: Any
    name: str | None
    # As `stepline serve` submits: `submit_nowait` first (which runs a job at once when a worker
    # would start it at once and nothing in it can wait), `submit` when that would block.
    nowait: bool = False


@attrs.frozen
class Cancel:
    target: int | None  # which accepted job, counted back from the newest; None: unknown id


@attrs.frozen
class Status:
    target: int | Literal["all"] | None


@attrs.frozen
class Stats:
    pass


@attrs.frozen
class Advance:
    seconds: float


@attrs.frozen
class Shutdown:
    mode: Literal["drain", "cancel"]


Op = Submit | Cancel | Status | Stats | Advance | Shutdown


@attrs.frozen
class Program:
    config: Config
    ops: list[Op]
    final: Literal["drain", "cancel"]


durations = st.sampled_from(DURATIONS)
words = st.text(alphabet="ab", max_size=3)
small_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | words,
    lambda inner: st.lists(inner, max_size=2),
    max_leaves=3,
)
retries = st.fixed_dictionaries(
    {"attempts": st.integers(1, 3)},
    optional={"backoff": durations, "factor": st.sampled_from([1, 2])},
)
modifiers = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["n1", "n2"]), "timeout": durations, "retry": retries}
)


# Every other step gets modifiers: with more, nearly every branch ends in a timeout.
some_modifiers = st.integers(0, 1).flatmap(lambda i: modifiers if i == 0 else st.just({}))


def _with(step_kind: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A step kind with random modifiers laid over it."""
    return st.builds(lambda step, mods: {**step, **mods}, step_kind, some_modifiers)


leaves = _with(
    st.one_of(
        st.builds(lambda d: {"sleep": d}, durations),
        st.builds(lambda d: {"sleep": d}, durations),
        st.builds(lambda v: {"value": v}, small_json),
        st.builds(lambda d, v: {"seq": [{"sleep": d}, {"value": v}]}, durations, small_json),
        st.builds(lambda d, m: {"seq": [{"sleep": d}, {"fail": m}]}, durations, words),
        st.builds(lambda m: {"log": m}, words),
        st.builds(lambda m: {"fail": m}, words),
        st.builds(lambda d, v: {"use": "tp", "with": {"d": d, "v": v}}, durations, small_json),
        st.sampled_from([{"use": "tf"}, {"use": "tr"}]),
    )
)


def _composites(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    some = st.lists(children, min_size=1, max_size=3)
    limit = st.fixed_dictionaries({}, optional={"limit": st.integers(1, 3)})
    return _with(
        st.one_of(
            st.builds(lambda s: {"seq": s}, st.lists(children, max_size=3)),
            st.builds(lambda s, lim: {"par": s, **lim}, some, limit),
            st.builds(lambda s: {"race": s}, some),
            st.builds(lambda b: {"try": b}, children),
            st.builds(lambda b, c: {"try": b, "catch": c}, children, children),
        )
    )


steps = st.recursive(leaves, _composites, max_leaves=6)
jobs = st.one_of(
    steps,
    st.fixed_dictionaries(
        {"steps": st.lists(steps, max_size=3)},
        optional={"timeout": durations, "retry": retries, "name": st.just("job")},
    ),
)
_WEIGHTED_OPS: list[st.SearchStrategy[Op]] = [
    # mostly submits: queues
    *[st.builds(Submit, jobs, st.none() | st.just("named"), st.booleans())] * 7,
    *[st.builds(Cancel, st.integers(0, 4))] * 2,  # fill up, submits park or bounce
    st.builds(Cancel, st.none()),
    st.builds(Status, st.none() | st.just("all") | st.integers(0, 4)),
    st.builds(Stats),
    *[st.builds(Advance, durations)] * 2,
    st.builds(Advance, st.sampled_from([0.125, 1, 5, 20])),
]
# Not st.one_of: it would merge the repeated strategies and lose the weights.
ops: st.SearchStrategy[Op] = st.integers(0, len(_WEIGHTED_OPS) - 1).flatmap(
    _WEIGHTED_OPS.__getitem__
)
configs = st.builds(
    Config,
    workers=st.integers(1, 3),
    queue_size=st.integers(1, 3),
    on_full=st.sampled_from(["block", "reject"]),
    heartbeat=st.sampled_from([0, 0.5, 1.25]),
    keep=st.integers(0, 4),
    trace=st.booleans(),
)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    """A configuration, operations, and in about one program in four a shutdown midway."""
    body = draw(st.lists(ops, min_size=4, max_size=24))
    if draw(st.integers(0, 3)) == 0:
        mode: Literal["drain", "cancel"] = draw(st.sampled_from(["drain", "cancel"]))
        body.insert(draw(st.integers(0, len(body))), Shutdown(mode))
    return Program(draw(configs), body, draw(st.sampled_from(["drain", "cancel"])))


# -- watching the event stream -----------------------------------------------------------------


@attrs.define
class View:
    """What the event stream has said about one job so far."""

    id: str
    job: Job | None = None  # set by register, once submit has returned the record
    started: bool = False
    finished: Event | None = None
    cancel_expected: bool = False


class CheckingOutbox:
    """An outbox that checks every event against the lifecycle as it is emitted.

    Problems are collected, not raised: an ``AssertionError`` raised inside ``emit`` would blow
    up whichever executor task emitted, and the report would be about the crash, not the cause.
    """

    congested = False

    def __init__(self, config: Config) -> None:
        self.config = config
        self.views: dict[str, View] = {}
        self.order: list[str] = []  # job ids in acceptance order
        self.finish_order: list[str] = []
        self.problems: list[str] = []
        self.pending_accept: Job | None = None

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()

    def emit(self, event: Event) -> None:
        kind, job_id = event["event"], event.get("job")
        if job_id is None:
            return
        view = self.views.get(job_id)
        problem = self._check(kind, job_id, view, event)
        if problem:
            self.problems.append(f"{job_id}: {problem}: {event}")
        self._limits()

    def _check(self, kind: str, job_id: str, view: View | None, event: Event) -> str | None:
        if kind == "accepted":
            if view is not None:
                return "accepted twice"
            self.order.append(job_id)
            self.views[job_id] = View(job_id)
            return None
        if view is None:
            return f"{kind} before accepted"
        if view.finished is not None:
            return f"{kind} after finished"
        return _LIFECYCLE[kind](self, view, event) if kind in _LIFECYCLE else f"unknown {kind}"

    def check_started(self, view: View, event: Event) -> str | None:
        if view.started:
            return "started twice"
        view.started = True
        return None

    def check_during_run(self, view: View, event: Event) -> str | None:
        return None if view.started else f"{event['event']} before started"

    def check_finished(self, view: View, event: Event) -> str | None:
        view.finished = event
        self.finish_order.append(view.id)
        if not view.started and (event["state"] != "cancelled" or event["elapsed"] != 0):
            return "finished without starting, yet not a cancel with elapsed 0"
        return None

    def check_cancelling(self, view: View, event: Event) -> str | None:
        return None

    def _limits(self) -> None:
        running = sum(1 for v in self.views.values() if v.started and v.finished is None)
        active = sum(1 for v in self.views.values() if v.finished is None)
        if running > self.config.workers:
            self.problems.append(f"{running} jobs running with {self.config.workers} workers")
        if active > self.config.workers + self.config.queue_size:
            self.problems.append(f"{active} unfinished jobs: more than workers + queue")

    def register(self, job: Job) -> None:
        """The executor handed us the record of a job whose ``accepted`` we saw."""
        assert job.id in self.order, job.id
        self.views[job.id].job = job

    # -- derived state -----------------------------------------------------------------------

    def active(self) -> list[View]:
        return [v for v in self.views.values() if v.finished is None]

    def queued(self) -> list[View]:
        return [v for v in self.active() if not v.started]

    def running(self) -> list[View]:
        return [v for v in self.active() if v.started]

    def retained(self, keep: int) -> list[str]:
        """Finished jobs ``status`` still knows: the ``keep`` most recent."""
        return self.finish_order[-keep:] if keep else []


_LIFECYCLE: dict[str, Callable[[CheckingOutbox, View, Event], str | None]] = {
    "started": CheckingOutbox.check_started,
    "progress": CheckingOutbox.check_during_run,
    "log": CheckingOutbox.check_during_run,
    "step": CheckingOutbox.check_during_run,
    "retry": CheckingOutbox.check_during_run,
    "output": CheckingOutbox.check_during_run,
    "finished": CheckingOutbox.check_finished,
    "cancelling": CheckingOutbox.check_cancelling,
}

# -- running a program -------------------------------------------------------------------------

MOCK_TIME_LIMIT = 10_000  # mock seconds: far beyond any program; hitting it means a hang


@attrs.define
class PendingSubmit:
    """A submit running in the background (``--on-full block`` may park it)."""

    expect_accept: bool
    result: Job | Exception | None = None


class Harness:
    """Runs one program against a real executor and checks it as it goes."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.config = program.config
        self.out = CheckingOutbox(self.config)
        self.ex = Executor(self.config, self.out)
        self.pending: list[PendingSubmit] = []
        self.stopped = False  # a shutdown was requested
        for name, template in TEMPLATES.items():
            self.ex.define(name, template)

    async def run(self) -> None:
        baseline = _all_tasks()
        with trio.fail_after(MOCK_TIME_LIMIT):
            async with trio.open_nursery() as submitters, trio.open_nursery() as service:
                await service.start(self.ex.run)
                for op in self.program.ops:
                    await self.apply(op, submitters)
                await self.shutdown(self.program.final)
                await self.ex.closed.wait()
        self.check_settled()
        self.check_final()
        leftover = _all_tasks() - baseline
        assert not leftover, f"tasks left after the executor closed: {leftover}"

    async def apply(self, op: Op, submitters: trio.Nursery) -> None:
        """Run one operation, let every task run until blocked, then check the settled state."""
        if isinstance(op, Submit):
            await self.op_Submit(op, submitters)
        else:
            handler: Callable[[Any], Awaitable[None]] = getattr(self, f"op_{type(op).__name__}")
            await handler(op)
        await trio.testing.wait_all_tasks_blocked()
        self.check_settled()

    # -- operations --------------------------------------------------------------------------

    async def op_Submit(self, op: Submit, submitters: trio.Nursery) -> None:
        full = len(self.out.queued()) >= self.config.queue_size
        pending = PendingSubmit(expect_accept=not self.stopped and not full)
        self.pending.append(pending)
        reject_expected = self.stopped or (full and self.config.on_full == "reject")

        async def submit() -> None:
            try:
                job = await self._submit(op)
            except (QueueFull, ShuttingDown) as exc:
                pending.result = exc
                return
            self.out.register(job)
            pending.result = job

        submitters.start_soon(submit)
        await trio.testing.wait_all_tasks_blocked()
        note(f"submit: {type(pending.result).__name__ if pending.result else 'parked'}")
        if pending.expect_accept:
            assert isinstance(pending.result, Job), (op, pending.result)
        elif reject_expected:
            expected = ShuttingDown if self.stopped else QueueFull
            assert isinstance(pending.result, expected), (op, pending.result)
        else:
            assert pending.result is None, "a submit to a full queue must wait (block mode)"

    async def _submit(self, op: Submit) -> Job:
        if op.nowait:
            try:
                return self.ex.submit_nowait(op.job, name=op.name)
            except trio.WouldBlock:
                pass
        return await self.ex.submit(op.job, name=op.name)

    async def op_Cancel(self, op: Cancel) -> None:
        job_id = self._pick(op.target)
        view = self.out.views.get(job_id)
        expected = self._refusal(job_id)
        if expected is not None:
            note(f"cancel: {expected.__name__}")
            with pytest.raises(expected):
                self.ex.cancel(job_id)
            return
        self.ex.cancel(job_id)
        assert view is not None
        view.cancel_expected = True

    async def op_Status(self, op: Status) -> None:
        if op.target == "all":
            self.check_records(self.ex.table.records())
            return
        job_id = self._pick(op.target)
        expected = self._refusal(job_id)
        try:
            records = self.ex.table.records(job_id)
        except UnknownJob:
            assert expected is UnknownJob, job_id
            return
        assert expected in (None, AlreadyFinished), job_id
        assert [r["job"] for r in records] == [job_id]
        self.check_records(records, complete=False)

    async def op_Stats(self, op: Stats) -> None:
        pass  # checked after every operation anyway: see check_settled

    async def op_Advance(self, op: Advance) -> None:
        await trio.sleep(op.seconds)

    async def op_Shutdown(self, op: Shutdown) -> None:
        await self.shutdown(op.mode)

    async def shutdown(self, mode: Literal["drain", "cancel"]) -> None:
        if mode == "cancel" and not self.ex.closed.is_set():
            for view in self.out.active():
                view.cancel_expected = True
        self.stopped = True
        self.ex.shutdown(mode)
        await trio.lowlevel.checkpoint()

    def _pick(self, target: int | None) -> str:
        """Counted back from the newest job: recent jobs are the ones likely still queued."""
        if target is None or not self.out.order:
            return "j0"  # never assigned: ids start at j1
        return self.out.order[-1 - target % len(self.out.order)]

    def _refusal(self, job_id: str) -> type[Exception] | None:
        """What ``cancel``/``status`` must raise for this job right now, if anything."""
        view = self.out.views.get(job_id)
        if view is None:
            return UnknownJob
        if view.finished is None:
            return None
        if job_id not in self.out.retained(self.config.keep):
            return UnknownJob
        return AlreadyFinished

    # -- checks ------------------------------------------------------------------------------

    def check_settled(self) -> None:
        """Once every task is blocked: limits, stats, status, cancels and pending submits."""
        assert not self.out.problems, self.out.problems
        queued, running = self.out.queued(), self.out.running()
        assert len(queued) <= self.config.queue_size
        assert len(running) <= self.config.workers
        stats = self.ex.stats()
        assert (stats["queued"], stats["running"]) == (len(queued), len(running)), stats
        assert sum(stats["finished"].values()) == len(self.out.finish_order), stats
        self.check_records(self.ex.table.records())
        for view in self.out.active():
            assert not view.cancel_expected, f"{view.id}: a cancel must take effect at once"
        for pending in self.pending:
            if isinstance(pending.result, Job) and pending.result.id not in self.out.views:
                raise AssertionError(f"{pending.result.id} accepted but not registered")

    def check_records(self, records: list[dict[str, Any]], *, complete: bool = True) -> None:
        """``status`` records agree with the events; retention keeps the ``keep`` latest."""
        for record in records:
            view = self.out.views[record["job"]]
            expected = (
                view.finished["state"]
                if view.finished
                else ("running" if view.started else "queued")
            )
            assert record["state"] == expected, (record, view)
        if complete:
            retained = set(self.out.retained(self.config.keep))
            expected_ids = {v.id for v in self.out.active()} | retained
            assert {r["job"] for r in records} == expected_ids

    def check_final(self) -> None:
        """Every accepted job finished once; each ends as cancelled or as the model says."""
        assert not self.out.active(), "closed with unfinished jobs"
        assert all(p.result is not None for p in self.pending), "a submit never returned"
        for view in self.out.views.values():
            assert view.finished is not None
            if view.cancel_expected:
                note(f"cancelled {'after starting' if view.started else 'while queued'}")
                assert view.finished["state"] == "cancelled", view.finished
            else:
                check_against_model(view)


def check_against_model(view: View) -> None:
    """A job nobody cancelled ends exactly as the reference model computes, when it can."""
    assert view.job is not None, f"{view.id} was accepted, but no submit returned it"
    expected = job_outcome(view.job.spec)
    finished = view.finished
    assert finished is not None
    note(f"model: {'ambiguous' if expected is AMBIGUOUS else 'checked'}, {finished['state']}")
    if expected is AMBIGUOUS:
        return
    assert isinstance(expected, Ok | Err)
    assert finished["elapsed"] == pytest.approx(float(expected.t), abs=1e-6), (expected, finished)
    if isinstance(expected, Ok):
        assert finished["state"] == "succeeded", (expected, finished)
        assert finished["output"] == expected.value
        return
    error = finished["error"]
    if expected.type == "timed_out":
        assert (finished["state"], error["type"]) == ("timed_out", "timeout"), finished
        return
    assert finished["state"] == "failed", (expected, finished)
    assert (error["type"], error["step"], error.get("name")) == (
        expected.type,
        expected.step,
        expected.name,
    ), (expected, finished)


def _all_tasks() -> set[trio.lowlevel.Task]:
    """Every task alive in this ``trio.run``, found by walking the tree from the root."""
    found: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


# -- the tests ---------------------------------------------------------------------------------


def run_program(program: Program) -> None:
    trio.run(Harness(program).run, clock=trio.testing.MockClock(autojump_threshold=0))


@scaled(200)
@given(programs())
def test_random_programs_keep_every_invariant(program: Program) -> None:
    run_program(program)


def test_model_agrees_on_a_hand_checked_job() -> None:
    """The oracle itself: one job whose outcome was worked out by hand."""
    from stepline.spec._validate import validate_job

    spec = validate_job(
        {
            "steps": [
                {
                    "par": [
                        {"sleep": 1},
                        {
                            "try": {"fail": "x", "retry": {"attempts": 2, "backoff": 0.5}},
                            "catch": {"value": 7},
                        },
                    ]
                }
            ]
        },
    )
    outcome = job_outcome(spec)
    assert outcome == Ok([None, 7], Fraction(1))
