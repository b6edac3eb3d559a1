"""The benchmark scenarios. Each measures stepline and its floors or baselines in the same run.

These machines are shared and noisy (2 cores), so an absolute number from one run says little on
its own; a ratio against a baseline measured minutes apart on the same machine says much more.
Every scenario returns :class:`Row` s (one per table line) and a ``details`` dict with the raw
figures, which ``run.py`` writes to the JSON file.

Every scenario also checks the output it timed (every job ``finished``, in the expected state,
``bye`` last): a fast run that lost jobs must fail, not post a good number.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    BenchError,
    Child,
    Event,
    baseline_argv,
    child_env,
    children_named,
    command,
    peer_argv,
    percentile,
    proc_status,
    run_timed,
    serve_argv,
    submit_lines,
    trivial_jobs,
)

KIB = 1024
MIB = 1024 * 1024
FEED_BATCH = 50_000  # submit lines generated per write when feeding a long run lazily


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does: the full run and ``--quick`` differ only here."""

    trivial_jobs: int = 100_000
    process_jobs: int = 2_000
    state_jobs: int = 20_000
    rounds: int = 5  # throughput scenarios: stepline and its baselines take turns (alternate)
    cancels: int = 200
    queued_jobs: int = 100_000
    finished_jobs: int = 1_000_000
    startups: int = 10
    cold_startups: int = 3  # start-ups without a bytecode cache, for the details only
    rss_interval: float = 0.5  # seconds between RSS samples during the long run


FULL = Sizes()
QUICK = Sizes(
    trivial_jobs=3_000,
    process_jobs=200,
    state_jobs=2_000,
    rounds=1,
    cancels=20,
    queued_jobs=5_000,
    finished_jobs=20_000,
    startups=5,  # each round starts four interpreters: keep --quick under a minute when loaded
    cold_startups=1,
    rss_interval=0.1,
)


@dataclass
class Row:
    """One line of the results table: stepline's figure against its baseline's."""

    scenario: str
    metric: str
    label: str
    unit: str  # "jobs/s", "s" or "bytes": run.py formats by unit
    stepline: float
    baseline: float
    baseline_name: str
    target: str
    met: bool | None  # None: the brief sets no target for this line
    paired_ratio: float | None = None  # alternated rounds: the median of the rounds' own ratios

    @property
    def ratio(self) -> float:
        """The paired ratio where there were rounds, else stepline's figure over the baseline's."""
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.stepline / self.baseline if self.baseline else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ratio": self.ratio}


@dataclass
class Outcome:
    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)


# -- shared checks ------------------------------------------------------------------------------


def check_jobs(events: list[Event], jobs: int, state: str) -> None:
    """``ready`` first, ``bye`` last, and every job accepted, started and finished in ``state``."""
    if not events or events[0]["event"] != "ready" or events[-1]["event"] != "bye":
        raise BenchError("output does not run from `ready` to `bye`")
    kinds = Counter(ev["event"] for ev in events)
    states = Counter(ev["state"] for ev in events if ev["event"] == "finished")
    expected = {"accepted": jobs, "started": jobs, "finished": jobs}
    if any(kinds[kind] != count for kind, count in expected.items()) or states[state] != jobs:
        raise BenchError(f"expected {jobs} jobs {state}; saw {dict(kinds)}, states {dict(states)}")


def check_line_count(child: Child, expected: int) -> None:
    if child.reader.lines != expected:
        raise BenchError(f"expected {expected} output lines, got {child.reader.lines}")


def check_results(events: list[Event], jobs: int) -> None:
    """The nursery floor's output: ``ready``, a ``finished`` per job, ``bye``."""
    if not events or events[0]["event"] != "ready" or events[-1]["event"] != "bye":
        raise BenchError("output does not run from `ready` to `bye`")
    finished = sum(1 for ev in events if ev["event"] == "finished" and ev["state"] == "succeeded")
    if finished != jobs or len(events) != jobs + 2:
        raise BenchError(f"expected {jobs} results; saw {finished} in {len(events)} lines")


def timed_pipeline(
    argv: list[str],
    data: bytes,
    jobs: int,
    timeout: float,
    check: Callable[[list[Event], int], None] | None = None,
) -> float:
    """Seconds from the first byte written to ``bye`` read, after the child is ``ready``.

    Start-up is excluded (scenario 5 measures it), and the whole input is built beforehand and
    written by a thread, so neither the interpreter start nor the feeder is what gets timed.
    ``check`` verifies the output afterwards (by default: every job accepted, started and
    succeeded).
    """
    with Child(argv, keep=True, timeout=timeout) as child:
        child.reader.wait_lines(1, 60)
        start = time.perf_counter()
        child.feed_in_thread(data)
        child.finish(timeout)
        end = child.reader.bye_at
        events = child.reader.events()
    if end is None:
        raise BenchError("no `bye` line at the end of the output")
    if check is None:
        check_jobs(events, jobs, "succeeded")
    else:
        check(events, jobs)
    return end - start


# -- 1. trivial jobs ------------------------------------------------------------------------


def trivial(sizes: Sizes) -> Outcome:
    """``value`` jobs end to end through ``stepline serve`` against two bare trio loops.

    Three bare trio programs take turns with stepline for ``sizes.rounds`` rounds, and each row
    shows medians (see :func:`alternate`): the in-process nursery floor (``baseline_trio.py
    --writer nursery``: 8 worker tasks, a channel of 64, results on a second channel, no protocol
    events), which the target is measured against; the straightforward loop with one channel
    ``send`` per event (``--writer channel``), the earlier target; and the tuned loop writing
    stepline's three events (``--writer batched``). Huey's in-memory queue runs too when it is
    installed, as context.
    """
    jobs = sizes.trivial_jobs
    data = submit_lines(trivial_jobs(0, jobs))
    flags = ("--workers", "4", "--queue", str(jobs))
    nursery = ("--workers", "8", "--queue", "64", "--writer", "nursery")
    measures: dict[str, Callable[[], float]] = {
        "nursery_s": lambda: timed_pipeline(
            baseline_argv(*nursery), data, jobs, 300, check=check_results
        ),
        "baseline_channel_s": lambda: timed_pipeline(
            baseline_argv(*flags, "--writer", "channel"), data, jobs, 300
        ),
        "baseline_batched_s": lambda: timed_pipeline(
            baseline_argv(*flags, "--writer", "batched"), data, jobs, 300
        ),
        "stepline_s": lambda: timed_pipeline(
            serve_argv(*flags, "--heartbeat", "0"), data, jobs, timeout=600
        ),
    }
    has_huey = importlib.util.find_spec("huey") is not None
    if has_huey:
        measures["huey_s"] = lambda: _time_printed(peer_argv("peer_huey.py", str(jobs), "4"))
    seconds = alternate(sizes.rounds, measures)
    label = f"trivial jobs ({jobs:,}), 4 workers{_of_rounds(sizes)}"
    row = functools.partial(rounds_row, "trivial", label, jobs, seconds)
    rows = [
        row(
            "vs_nursery",
            "nursery_s",
            "trio nursery floor",
            target="≥1.3x (loaded: ≥0.85x)",
            met=lambda _, ratio: ratio >= 1.3,
        ),
        row(
            "throughput",
            "baseline_channel_s",
            "bare trio, channel per event",
            target="≥25,000/s and ≥1.0x",
            met=lambda rate, ratio: rate >= 25_000 and ratio >= 1.0,
        ),
        row("vs_floor", "baseline_batched_s", "bare trio, batched writer"),
    ]
    if has_huey:
        rows.append(row("vs_huey", "huey_s", "Huey MemoryHuey, 4 threads (peer)"))
    details = {"jobs": jobs, "rounds": sizes.rounds, **seconds, "input_bytes": len(data)}
    details["loadavg"] = os.getloadavg()
    return Outcome(rows, details)


def alternate(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every measure once per round, in turn, and keep every figure.

    Why alternate: this VM's speed drifts by 15 % within minutes (the hypervisor steals CPU), so
    stepline timed minutes apart from its baseline would compare two machines. Taken in turns,
    each round's figures share that round's speed, and the medians over the rounds drop the
    round that an outside burst of load spoiled.
    """
    figures: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            figures[name].append(measure())
    return figures


def paired_speedup(stepline_s: list[float], baseline_s: list[float]) -> float:
    """The median over the rounds of each round's speed ratio (baseline time / stepline time).

    Paired, because a round's two figures share that round's machine speed; the ratio of the
    medians can pair a fast round of one with a slow round of the other (in one run: 0.94x
    against 0.90x paired).
    """
    return statistics.median(b / s for s, b in zip(stepline_s, baseline_s, strict=True))


def rounds_row(
    scenario: str,
    label: str,
    jobs: int,
    seconds: dict[str, list[float]],
    metric: str,
    baseline_key: str,
    baseline_name: str,
    *,
    target: str = "—",
    met: Callable[[float, float], bool] | None = None,
) -> Row:
    """A throughput row from alternated rounds: median rates, and the paired ratio of stepline
    (``seconds["stepline_s"]``) to the baseline under ``baseline_key``. ``met(rate, ratio)``
    judges the target; None: the brief sets none for this line."""
    rate = jobs / statistics.median(seconds["stepline_s"])
    ratio = paired_speedup(seconds["stepline_s"], seconds[baseline_key])
    return Row(
        scenario=scenario,
        metric=metric,
        label=label,
        unit="jobs/s",
        stepline=rate,
        baseline=jobs / statistics.median(seconds[baseline_key]),
        baseline_name=baseline_name,
        target=target,
        met=None if met is None else met(rate, ratio),
        paired_ratio=ratio,
    )


def _of_rounds(sizes: Sizes) -> str:
    return f", median of {sizes.rounds}" if sizes.rounds > 1 else ""


# -- 2. process jobs ------------------------------------------------------------------------


def process(sizes: Sizes) -> Outcome:
    """``run: ["true"]`` with 8 workers against a ``ThreadPoolExecutor(8)`` running
    ``subprocess.run`` (``floor_pool.py``), ``xargs -P8`` (and GNU parallel if present), taking
    turns for ``sizes.rounds`` rounds; each row shows medians (see :func:`alternate`)."""
    jobs = sizes.process_jobs
    data = submit_lines({"run": ["true"]} for _ in range(jobs))
    flags = ("--workers", "8", "--queue", str(jobs), "--heartbeat", "0")
    measures: dict[str, Callable[[], float]] = {
        "stepline_s": lambda: timed_pipeline(serve_argv(*flags), data, jobs, timeout=300),
        "pool_s": lambda: _time_printed(peer_argv("floor_pool.py", str(jobs), "8")),
        "xargs_s": lambda: _time_with_args(["xargs", "-P8", "-n1", "true"], jobs),
    }
    has_parallel = shutil.which("parallel") is not None
    if has_parallel:
        gnu = ["parallel", "--will-cite", "-j8", "-N1", "true"]
        measures["parallel_s"] = lambda: _time_with_args(gnu, jobs)
    seconds = alternate(sizes.rounds, measures)
    label = f"process jobs ({jobs:,} x true), 8 workers{_of_rounds(sizes)}"
    row = functools.partial(rounds_row, "process", label, jobs, seconds)
    rows = [
        row(
            "vs_pool",
            "pool_s",
            "ThreadPoolExecutor(8) subprocess.run",
            target="≥1.0x",
            met=lambda _, r: r >= 1.0,
        ),
        row("vs_xargs", "xargs_s", "xargs -P8", target="≥1.2x", met=lambda _, r: r >= 1.2),
    ]
    if has_parallel:
        rows.append(row("vs_parallel", "parallel_s", "GNU parallel -j8"))
    details: dict[str, Any] = {"jobs": jobs, "rounds": sizes.rounds, **seconds}
    details["loadavg"] = os.getloadavg()
    details.setdefault("parallel_s", None)  # not installed: the row is left out
    return Outcome(rows, details)


def _time_printed(argv: list[str]) -> float:
    """Run a floor or peer script that times itself and prints its seconds on stdout."""
    out = subprocess.run(argv, capture_output=True, env=child_env(), timeout=600, check=False)
    if out.returncode != 0:
        raise BenchError(f"{argv} exited {out.returncode}: {out.stderr.decode()[-2000:]}")
    return float(out.stdout.split()[-1])


def _time_with_args(argv: list[str], jobs: int) -> float:
    """Run ``argv`` with ``jobs`` one-word argument lines on stdin (``true x``, ``jobs`` times)."""
    with tempfile.TemporaryFile() as lines:
        lines.write(b"x\n" * jobs)
        lines.seek(0)
        return run_timed(argv, stdin=lines)


# -- durable jobs ------------------------------------------------------------------------------


def durable(sizes: Sizes) -> Outcome:
    """Trivial jobs with ``--state`` (a fresh SQLite file per round) against the same without it.

    Taking turns for ``sizes.rounds`` rounds, with the whole input fitting the queue; the ratio is
    the paired median of durable over in-memory throughput.
    """
    jobs = sizes.state_jobs
    data = submit_lines(trivial_jobs(0, jobs))
    flags = ("--workers", "4", "--queue", str(jobs), "--heartbeat", "0")
    with tempfile.TemporaryDirectory() as tmp:
        files = (Path(tmp, f"state-{n}.db") for n in range(sizes.rounds))
        seconds = alternate(
            sizes.rounds,
            {
                "memory_s": lambda: timed_pipeline(serve_argv(*flags), data, jobs, 600),
                "stepline_s": lambda: timed_pipeline(
                    serve_argv(*flags, "--state", str(next(files))), data, jobs, 600
                ),
            },
        )
    label = f"--state jobs ({jobs:,}), 4 workers{_of_rounds(sizes)}"
    row = rounds_row(
        "durable",
        label,
        jobs,
        seconds,
        "vs_memory",
        "memory_s",
        "same without --state",
        target="≥0.5x",
        met=lambda _, ratio: ratio >= 0.5,
    )
    details = {"jobs": jobs, "rounds": sizes.rounds, **seconds, "loadavg": os.getloadavg()}
    return Outcome([row], details)


# -- 3. cancel latency ----------------------------------------------------------------------


def cancel(sizes: Sizes) -> Outcome:
    """Round trips on one live process: ``cancel`` → ``finished``, against ``ping`` → ``pong``.

    The ping round trip is the floor for any command (pipe, parse, dispatch, write, read), so
    the ratio shows what cancelling itself costs.
    """
    count = sizes.cancels
    with Child(serve_argv("--workers", "4"), reader=False, timeout=300) as child:
        child.await_event("ready")
        pings = [_ping(child) for _ in range(count)]
        sleeping = [_cancel_one(child, {"sleep": 60}, None) for _ in range(count)]
        running = [_cancel_one(child, {"run": ["sleep", "60"]}, "sleep") for _ in range(count)]
        child.finish(60)
    ping_median, ping_p99 = statistics.median(pings), percentile(pings, 0.99)
    rows = []
    for what, samples in (("sleeping job", sleeping), ("running subprocess", running)):
        for stat, value, floor in (
            ("median", statistics.median(samples), ping_median),
            ("p99", percentile(samples, 0.99), ping_p99),
        ):
            has_target = what == "sleeping job" and stat == "median"  # the brief's one target
            rows.append(
                Row(
                    scenario="cancel",
                    metric=f"{what.split()[-1]}_{stat}",
                    label=f"cancel a {what}: {stat} ({count})",
                    unit="s",
                    stepline=value,
                    baseline=floor,
                    baseline_name="ping round trip",
                    target="<5 ms" if has_target else "—",
                    met=value < 0.005 if has_target else None,
                )
            )
    details = {"cancels": count, "ping_s": pings, "sleeping_s": sleeping, "running_s": running}
    return Outcome(rows, details)


def _ping(child: Child) -> float:
    start = time.perf_counter()
    child.send(command("ping"))
    child.await_event("pong")
    return time.perf_counter() - start


def _cancel_one(child: Child, job: dict[str, Any], wait_for_child: str | None) -> float:
    """Submit ``job``, wait until it really runs, then time ``cancel`` → its ``finished``."""
    child.send(command("submit", job=job))
    job_id = child.await_event("accepted")["job"]
    child.await_event("started", job_id)
    if wait_for_child is not None:
        _wait_until(lambda: bool(children_named(child.pid, wait_for_child)), timeout=10)
    start = time.perf_counter()
    child.send(command("cancel", job=job_id))
    finished = child.await_event("finished", job_id)
    elapsed = time.perf_counter() - start
    if finished["state"] != "cancelled":
        raise BenchError(f"cancelled job finished {finished['state']}: {finished}")
    return elapsed


def _wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    """``started`` precedes the fork; wait until the subprocess exists so we cancel *it*."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"condition not met within {timeout:g}s")
        time.sleep(0.001)


# -- 4. memory ------------------------------------------------------------------------------


def memory(sizes: Sizes) -> Outcome:
    """Bytes per queued job (against the bare loop's), and RSS over a long run of jobs."""
    queued = sizes.queued_jobs
    step_per_job, step_detail = _queued_stepline(queued)
    base_per_job, base_detail = _queued_baseline(queued)
    flat = _rss_over_run(sizes.finished_jobs, sizes.rss_interval)
    warm, final = flat["warm_rss"], flat["final_rss"]
    rows = [
        Row(
            scenario="memory",
            metric="per_queued_job",
            label=f"memory per queued job ({queued:,})",
            unit="bytes",
            stepline=step_per_job,
            baseline=base_per_job,
            baseline_name="bare trio",
            target="<2 KiB",
            met=step_per_job < 2 * KIB,
        ),
        Row(
            scenario="memory",
            metric="rss_flat",
            label=f"RSS after {sizes.finished_jobs:,} finished jobs",
            unit="bytes",
            stepline=final,
            baseline=warm,
            baseline_name="same run at 20%",
            target="flat (≤1.05x)",
            met=final <= 1.05 * warm,
        ),
    ]
    details = {"queued_stepline": step_detail, "queued_baseline": base_detail, "long_run": flat}
    return Outcome(rows, details)


def _queued_stepline(jobs: int) -> tuple[float, dict[str, Any]]:
    """RSS growth per job with ``jobs`` queued behind one worker held by a long sleep."""
    argv = serve_argv("--queue", str(jobs), "--workers", "1", "--heartbeat", "0")
    with Child(argv, timeout=600) as child:
        child.reader.wait_lines(1, 60)
        ready = proc_status(child.pid)
        child.send(command("submit", job={"sleep": 3600}))
        child.reader.wait_lines(3, 60)  # ready, accepted, started: the worker is busy
        child.send(submit_lines(trivial_jobs(0, jobs)))
        child.reader.wait_lines(3 + jobs, 600)
        after, peak = proc_status(child.pid), proc_status(child.pid, "VmHWM")
        child.send(command("shutdown", mode="cancel"))
        child.finish(600)
        # + shutting_down, a cancelled `finished` per job (the sleeper too), bye
        check_line_count(child, 3 + jobs + 1 + (jobs + 1) + 1)
    return (after - ready) / jobs, {"ready_rss": ready, "queued_rss": after, "peak_rss": peak}


def _queued_baseline(jobs: int) -> tuple[float, dict[str, Any]]:
    """The same measurement on the bare loop, whose workers wait for EOF (``--hold``)."""
    argv = baseline_argv("--queue", str(jobs), "--workers", "1", "--hold")
    with Child(argv, timeout=300) as child:
        child.reader.wait_lines(1, 60)
        ready = proc_status(child.pid)
        child.send(submit_lines(trivial_jobs(0, jobs)))
        child.reader.wait_lines(1 + jobs, 300)
        after = proc_status(child.pid)
        child.finish(300)
        check_line_count(child, 3 * jobs + 2)
    return (after - ready) / jobs, {"ready_rss": ready, "queued_rss": after}


def _rss_over_run(jobs: int, interval: float) -> dict[str, Any]:
    """Sample VmRSS while ``jobs`` trivial jobs run with the default ``--queue``/``--keep``.

    The feeder never closes stdin until every job has finished, so the last sample is taken
    with all ``jobs`` done and the process still alive.
    """
    with Child(serve_argv("--heartbeat", "0"), timeout=1800) as child:
        child.reader.wait_lines(1, 60)
        ready = proc_status(child.pid)
        feeder = _feed_lazily(child, jobs)
        samples = _sample_rss(child, jobs, interval)
        child.reader.wait_lines(1 + 3 * jobs, 60)
        samples.append(_rss_sample(child, jobs))
        feeder.join(60)
        peak = proc_status(child.pid, "VmHWM")
        child.finish(60)
        check_line_count(child, 3 * jobs + 2)
    warm = next(s for s in samples if s["finished"] >= 0.2 * jobs)
    return {
        "jobs": jobs,
        "ready_rss": ready,
        "warm_rss": warm["rss"],
        "final_rss": samples[-1]["rss"],
        "max_rss": max(s["rss"] for s in samples),
        "peak_rss": peak,
        "samples": samples,
    }


def _feed_lazily(child: Child, jobs: int) -> threading.Thread:
    """Write ``jobs`` submits from a thread, built in batches (a million lines is 45 MB)."""

    def feed() -> None:
        try:
            for start in range(0, jobs, FEED_BATCH):
                child.send(submit_lines(trivial_jobs(start, min(jobs, start + FEED_BATCH))))
        except BrokenPipeError:
            pass  # the child died: the line counts will not add up, and that is reported

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def _sample_rss(child: Child, jobs: int, interval: float) -> list[dict[str, float]]:
    samples = []
    while child.reader.lines < 1 + 3 * jobs and not child.reader.eof:
        time.sleep(interval)
        samples.append(_rss_sample(child, jobs))
    return samples


def _rss_sample(child: Child, jobs: int) -> dict[str, float]:
    elapsed = time.perf_counter() - child.started_at
    finished = min(jobs, max(0, (child.reader.lines - 1) // 3))  # about: 3 events a job
    return {"t": round(elapsed, 3), "finished": finished, "rss": proc_status(child.pid)}


# -- 5. start-up ----------------------------------------------------------------------------


def startup(sizes: Sizes) -> Outcome:
    """Process start to ``ready``, against ``python -c pass`` (alternated, to share the noise).

    Timed with a warm bytecode cache, as an installed package starts (see ``child_env``); the
    cold figure, every module compiled from source, is kept in the details for comparison, as
    is the time to import trio alone, the floor for any trio program.
    """
    _time_to_ready(bytecode_cache=True)  # warm the cache (and the page cache) before timing
    bare, trio_import, ready, cold = [], [], [], []
    for index in range(sizes.startups):
        bare.append(run_timed([sys.executable, "-c", "pass"]))
        trio_import.append(run_timed([sys.executable, "-c", "import trio"]))
        ready.append(_time_to_ready(bytecode_cache=True))
        if index < sizes.cold_startups:
            cold.append(_time_to_ready(bytecode_cache=False))
    median, bare_median = statistics.median(ready), statistics.median(bare)
    row = Row(
        scenario="startup",
        metric="to_ready",
        label=f"start-up to `ready`, median of {sizes.startups}",
        unit="s",
        stepline=median,
        baseline=bare_median,
        baseline_name="python -c pass",
        target="<150 ms beyond",
        met=median - bare_median < 0.150,
    )
    floor = Row(  # what any trio program pays before its first line of code
        scenario="startup",
        metric="vs_import_trio",
        label=row.label,
        unit="s",
        stepline=median,
        baseline=statistics.median(trio_import),
        baseline_name="python -c 'import trio'",
        target="—",
        met=None,
    )
    details = {
        "ready_s": ready,
        "python_pass_s": bare,
        "python_import_trio_s": trio_import,
        "import_trio_median_s": statistics.median(trio_import),
        "ready_without_bytecode_cache_s": cold,
        "ready_without_bytecode_cache_median_s": statistics.median(cold),
    }
    return Outcome([row, floor], details)


def _time_to_ready(*, bytecode_cache: bool) -> float:
    argv = serve_argv()
    with Child(argv, reader=False, timeout=60, bytecode_cache=bytecode_cache) as child:
        child.await_event("ready")
        elapsed = time.perf_counter() - child.started_at
        child.finish(30)
    return elapsed


SCENARIOS: dict[str, Callable[[Sizes], Outcome]] = {
    "trivial": trivial,
    "process": process,
    "durable": durable,
    "cancel": cancel,
    "memory": memory,
    "startup": startup,
}
