"""The step interpreters: one small async function per step kind.

:func:`run_step` is the single entry point. It records which step is running (for heartbeats and
for naming the step a cancel interrupted), applies the step's modifiers from the outside in —
``retry`` around ``timeout`` around the kind itself, so a step timeout bounds each try — and
dispatches on the spec class to the interpreter of that kind.

Failures travel as :class:`~stepline._errors.StepFailed`. Cancellation travels as trio's
``Cancelled`` and is never caught here: ``try``/``catch`` and ``retry`` catch ``StepFailed`` only,
so a cancelled job stops at once instead of being "recovered". ``par`` and ``race`` record the
first failure themselves rather than letting it escape the nursery, which keeps step errors out
of exception groups; anything else escaping a nursery is a bug and becomes an ``internal`` error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from attrs import define, frozen

from .._errors import StepFailed, Unavailable
from .._lazy import loading
from .._record import Record, ValueRecord
from ..runners._base import (
    OUTPUT_CAP,
    Launch,
    ProcessResult,
    ProcessStartError,
    Runner,
    run_process,
)
from ..spec._limits import NO_LIMITS, Limits
from ..spec._model import (
    Deferred,
    Fail,
    Graph,
    Http,
    Log,
    Modifiers,
    Par,
    Race,
    Retry,
    Run,
    Seq,
    Sleep,
    Step,
    Try,
    Use,
    Value,
)
from ..spec._policy import AllowRun, refusal
from ..wire._events import event
from ..wire._outbox import Outbox
from ._jobs import Job
from ._output import StepOutput
from ._run_result import output_tails, process_output, start_failure
from ._tasks import Cleanups, run_deferred, run_graph
from ._workspace import Workspace, workspace_cwd

if TYPE_CHECKING:
    from ._http_client import HttpClient

__all__ = [
    "INTERPRETERS",
    "Services",
    "StepContext",
    "completes_at_once",
    "run_at_once",
    "run_output",
    "run_step",
    "step_loading",
    "step_sink",
    "with_modifiers",
]


@frozen(repr=False, eq=False)
class Services(ValueRecord):
    """What the steps of every job share: built once per executor."""

    outbox: Outbox
    runner: Runner  # starts `run` steps' processes (runners/_base.py)
    trace: bool = False  # --trace: `step` events
    http: HttpClient | None = None  # the executor's shared client, for `http` steps
    cleanups: Cleanups | None = None  # shielded clean-ups a hard stop ends (_tasks.py)
    allow_run: AllowRun = None  # --allow-run, checked again right before a process starts
    stream: bool = False  # --stream: `run` steps stream their lines unless they say otherwise
    limits: Limits = NO_LIMITS  # serve --limits: defaults under every job's
    runner_name: str = "local"  # serve --runner: the runner of steps and jobs that name none


@define(repr=False, eq=False)
class StepContext(Record):
    """What a running step may touch: its job record, its workspace, the shared services.

    Made for every job, so it holds three references rather than the services one by one
    (copying them in showed on the trivial path: NOTES.md, Performance).
    """

    job: Job
    services: Services
    workspace: Workspace | None = None  # the job's scratch directory (_workspace.py)
    limits: Limits = NO_LIMITS  # the job's (or, inside `use`, the template's) run defaults
    runner: str | None = None  # likewise: the runner of run steps that name none

    def emit_step(self, step: Step, status: str, **fields: Any) -> None:
        """A ``step`` trace event (with ``--trace`` only; not for the job's own root)."""
        if self.services.trace and step.path:
            name = step.mods.name
            extra = {"name": name} if name is not None else {}
            ev = event("step", job=self.job.id, step=step.path, status=status, **extra, **fields)
            self.services.outbox.emit(self.job.tag(ev))


async def run_step(step: Step, ctx: StepContext) -> Any:
    """Run one step with its modifiers; returns its output or raises ``StepFailed``."""
    job = ctx.job
    parent, job.step = job.step, step.path
    trace = ctx.services.trace
    if trace:
        ctx.emit_step(step, "started")
    try:
        mods = step.mods
        if type(step) is Value and mods.timeout is None and mods.retry is None:
            output = step.value  # the one step with nothing to await: no coroutine to make
        elif mods.retry is None and mods.timeout is None:  # the common case: no wrappers
            output = await INTERPRETERS[type(step)](step, ctx)
        else:
            output = await with_modifiers(
                lambda: INTERPRETERS[type(step)](step, ctx), mods, step, ctx
            )
    except StepFailed as exc:
        if trace:
            ctx.emit_step(step, "failed", error=exc.type)
        job.step = parent
        raise
    # On Cancelled, job.step is deliberately left pointing at the interrupted step.
    if trace:
        ctx.emit_step(step, "succeeded")
    job.step = parent
    return output


def completes_at_once(step: Step) -> bool:
    """Whether running ``step`` can never await: ``value`` and ``fail`` steps, in sequences and
    ``try`` blocks, none with a timeout or retry. Such a step needs no task and no cancel scope:
    nothing can interrupt it, since no other task runs until it is done."""
    kind = type(step)
    if kind is Value or kind is Fail:
        return _no_wrappers(step.mods)
    if kind is Seq:
        assert isinstance(step, Seq)  # (for mypy: `type(step) is` does not narrow)
        return _no_wrappers(step.mods) and all(completes_at_once(s) for s in step.steps)
    if kind is Try:
        assert isinstance(step, Try)
        catch = step.catch
        return (
            _no_wrappers(step.mods)
            and completes_at_once(step.body)
            and (catch is None or completes_at_once(catch))
        )
    return False


def _no_wrappers(mods: Modifiers) -> bool:
    return mods.timeout is None and mods.retry is None


def run_at_once(step: Step, ctx: StepContext) -> Any:
    """:func:`run_step` for a step that :func:`completes_at_once`, without a task: the same
    interpreters, driven by hand, so the trace events and errors are those of any other run."""
    if type(step) is Value and not ctx.services.trace:
        return step.value  # all that run_step does for it, less the step path it puts back
    running = run_step(step, ctx)
    try:
        running.send(None)
    except StopIteration as done:
        return done.value
    running.close()
    raise RuntimeError(f"step {step.path or '(root)'} awaited, but was run at once")


async def with_modifiers(
    attempt: Callable[[], Awaitable[Any]], mods: Modifiers, step: Step | None, ctx: StepContext
) -> Any:
    """Apply ``retry`` around ``timeout`` around ``attempt`` (``step`` None: the job itself)."""
    if mods.retry is None:
        return await _with_timeout(attempt, mods, step, ctx)
    return await _with_retry(lambda: _with_timeout(attempt, mods, step, ctx), mods.retry, step, ctx)


async def _with_timeout(
    attempt: Callable[[], Awaitable[Any]], mods: Modifiers, step: Step | None, ctx: StepContext
) -> Any:
    if mods.timeout is None:
        return await attempt()
    with trio.move_on_after(mods.timeout):
        return await attempt()
    path = "" if step is None else step.path
    # a `run` step stopped by its timeout still tells what it wrote last
    extra = output_tails(ctx.job, path) if type(step) is Run else None
    raise StepFailed("timeout", f"step timed out after {mods.timeout:g}s", path, mods.name, extra)


async def _with_retry(
    attempt: Callable[[], Awaitable[Any]], retry: Retry, step: Step | None, ctx: StepContext
) -> Any:
    path = "" if step is None else step.path
    for number in range(1, retry.attempts):
        try:
            return await attempt()
        except StepFailed as exc:
            # Cancelled is a BaseException and passes straight through: a cancel during the
            # backoff sleep below ends the job, it is never retried.
            delay = retry.delay_before(number + 1)
            _announce_retry(ctx, path, number, retry.attempts, delay, exc)
            await trio.sleep(delay)
    try:
        return await attempt()
    except StepFailed as exc:
        exc.extra["attempts"] = retry.attempts
        raise


def _announce_retry(
    ctx: StepContext, path: str, number: int, attempts: int, delay: float, exc: StepFailed
) -> None:
    """The ``retry`` event: try ``number`` of at most ``attempts`` failed, the next follows after
    ``delay`` seconds."""
    ev = event("retry", job=ctx.job.id, step=path, attempt=number, attempts=attempts)
    ev["delay"] = delay
    ev["error"] = exc.to_wire()
    ctx.services.outbox.emit(ctx.job.tag(ev))


# -- leaf steps --------------------------------------------------------------------------------


async def _sleep(step: Sleep, ctx: StepContext) -> None:
    await trio.sleep(step.seconds)


async def _value(step: Value, ctx: StepContext) -> Any:
    return step.value


async def _log(step: Log, ctx: StepContext) -> None:
    await ctx.services.outbox.wait_writable()  # a chatty job waits for a slow reader
    ev = event("log", job=ctx.job.id, step=step.path, message=step.message)
    ctx.services.outbox.emit(ctx.job.tag(ev))


async def _fail(step: Fail, ctx: StepContext) -> None:
    raise StepFailed("fail", step.message, step.path, step.mods.name)


async def _run(step: Run, ctx: StepContext) -> Any:
    # checked again for steps resolved only now (`${tasks.a.output}`)
    refused = refusal(step, ctx.services.allow_run)
    if refused is not None:
        raise StepFailed("startup_failure", refused.message, step.path, step.mods.name)
    runner = step.runner or ctx.runner or ctx.services.runner_name
    # a sandboxed step writes only in the workspace, so it gets one whatever its cwd
    workspace = None
    if step.cwd is None or runner == "sandbox":
        workspace = await workspace_cwd(ctx, step)
    cwd = step.cwd if step.cwd is not None else workspace
    job = ctx.job
    sink = step_sink(step, job, ctx.services)
    launch = _launch(step, ctx, runner, (cwd, workspace), sink)
    try:
        result = await run_process(ctx.services.runner, launch, job.stop_orders)
    except ProcessStartError as exc:
        raise start_failure(step, exc) from None
    if workspace is not None and ctx.workspace is not None and result.pid and not result.group_gone:
        ctx.workspace.ran_process(result.pid)  # checked before the directory is reused
    return run_output(step, result)


def step_sink(step: Run, job: Job, services: Services) -> StepOutput:
    """Where the step's output lines go: the job's log, and ``output`` events if streamed."""
    live = services.outbox if _streams(step, job, services) else None
    return StepOutput(job.id, step.path, job.output_log(), live, request_id=job.request_id)


def run_output(step: Run, result: ProcessResult) -> Any:
    """The output of a ``run`` step whose process ended with ``result`` (``process_output``),
    parsed if the step asks; raises its ``StepFailed`` (a limit, a non-zero exit)."""
    output = process_output(step, result)
    if step.parse is not None:
        with step_loading(step, "output parsing"):
            from ._typed import parse_output  # start-up time: only steps that parse
        return parse_output(step, result.stdout, result.truncated)
    return output


def _streams(step: Run, job: Job, services: Services) -> bool:
    """Whether the step's lines are streamed: its own ``stream``, else its job's, else the
    executor's default (``serve --stream``)."""
    if step.stream is not None:
        return step.stream
    if job.spec.stream is not None:
        return job.spec.stream
    return services.stream


def _launch(
    step: Run, ctx: StepContext, runner: str, dirs: tuple[str | None, str | None], sink: Any
) -> Launch:
    """The step's process, with its limits inherited (step, job, then serve) and its ``runner``;
    ``dirs`` are its cwd and the workspace it may write."""
    cwd, workspace = dirs
    limits = step.limits.over(ctx.limits).over(ctx.services.limits)
    if limits is NO_LIMITS and runner == "local" and not step.network:  # the common case
        return Launch(step.argv, step.env, cwd, step.stdin, step.grace, output=sink)
    output_cap = limits.output if limits.output is not None else OUTPUT_CAP
    return Launch(
        step.argv,
        step.env,
        cwd,
        step.stdin,
        step.grace,
        limits,
        output_cap,
        output=sink,
        runner=runner,
        network=step.network,
        workspace=workspace,
    )


@contextmanager
def step_loading(step: Step, feature: str) -> Iterator[None]:
    """:func:`~stepline._lazy.loading` inside a running step: a failure to load is the step's
    error, of type ``unavailable`` (a ``retry`` retries it, like any other step error)."""
    try:
        with loading(feature):
            yield
    except Unavailable as exc:
        raise StepFailed(Unavailable.code, exc.message, step.path, step.mods.name) from None


# -- composite steps ---------------------------------------------------------------------------


async def _seq(step: Seq, ctx: StepContext) -> Any:
    output = None
    for child in step.steps:
        output = await run_step(child, ctx)
    return output


async def _par(step: Par, ctx: StepContext) -> list[Any]:
    outputs: list[Any] = [None] * len(step.steps)
    failures: list[StepFailed] = []
    limiter = trio.CapacityLimiter(step.limit) if step.limit else None
    async with trio.open_nursery() as nursery:

        async def branch(index: int, child: Step) -> None:
            try:
                if limiter is None:
                    outputs[index] = await run_step(child, ctx)
                else:
                    async with limiter:
                        outputs[index] = await run_step(child, ctx)
            except StepFailed as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()  # the first failure cancels the rest

        for index, child in enumerate(step.steps):
            nursery.start_soon(branch, index, child)
    if failures:
        raise failures[0]
    return outputs


async def _race(step: Race, ctx: StepContext) -> Any:
    winner: list[Any] = []
    failures: list[StepFailed] = []
    async with trio.open_nursery() as nursery:

        async def branch(child: Step) -> None:
            try:
                output = await run_step(child, ctx)
            except StepFailed as exc:
                failures.append(exc)
                return
            if not winner:
                winner.append(output)
                nursery.cancel_scope.cancel()  # the others lost

        for child in step.steps:
            nursery.start_soon(branch, child)
    if winner:
        return winner[0]
    raise failures[0]  # every branch failed: report the first failure as it was


async def _try(step: Try, ctx: StepContext) -> Any:
    try:
        return await run_step(step.body, ctx)
    except StepFailed:
        if step.catch is None:
            return None
        return await run_step(step.catch, ctx)


async def _http(step: Http, ctx: StepContext) -> dict[str, Any]:
    with step_loading(step, "http steps"):
        from ._http import run_http  # start-up time: only jobs with `http` steps need it
    return await run_http(step, ctx)


async def _use(step: Use, ctx: StepContext) -> Any:
    job = step.job
    mods = Modifiers(name=job.name, timeout=job.timeout, retry=job.retry)
    if job.limits is not NO_LIMITS or job.runner is not None:  # the template's run defaults
        limits, runner = job.limits.over(ctx.limits), job.runner or ctx.runner
        ctx = attrs.evolve(ctx, limits=limits, runner=runner)
    return await with_modifiers(lambda: run_step(job.body, ctx), mods, step, ctx)


INTERPRETERS: Final[dict[type, Callable[[Any, StepContext], Awaitable[Any]]]] = {
    Sleep: _sleep,
    Value: _value,
    Log: _log,
    Fail: _fail,
    Run: _run,
    Seq: _seq,
    Par: _par,
    Race: _race,
    Try: _try,
    Use: _use,
    Http: _http,
    Graph: run_graph,
    Deferred: run_deferred,
}
"""The interpreter of each spec class: every step kind of ``spec/_steps.STEP_KINDS`` (a test
checks none is missing), plus a job's two other bodies, a ``Graph`` of tasks and a ``Deferred``
body validated again when the job starts."""
