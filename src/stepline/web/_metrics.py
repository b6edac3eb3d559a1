"""``GET /metrics``: the executor in Prometheus' text format, through ``prometheus_client``.

Counts that the executor already keeps (jobs by state, queue depth, workers) are read at scrape
time by a custom collector, so nothing is counted twice and nothing is paid between scrapes.
The answers to HTTP requests are counted where they are answered. What is counted per event
(events by kind, the durations of finished jobs) is counted in the front's own process
(:class:`EventMetrics`), which reads every event line anyway: counted in the executor's, it
cost each stdin job more than the job itself with nobody calling (NOTES, "HTTP front"). The
front's process appends its families to the executor's answer.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..engine._executor import Executor

__all__ = ["CONTENT_TYPE", "EventMetrics", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, float("inf"))


class _ExecutorCollector(Collector):
    """Gauges read from the executor when Prometheus scrapes."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def collect(self) -> Iterator[Metric]:
        counts = self._executor.table.counts()
        jobs = GaugeMetricFamily(
            "stepline_jobs", "Jobs known to the executor, by state", labels=["state"]
        )
        jobs.add_metric(["queued"], counts["queued"])
        jobs.add_metric(["running"], counts["running"])
        finished = GaugeMetricFamily(
            "stepline_jobs_finished",
            "Jobs finished since start, by final state",
            labels=["state"],
        )
        for state in ("succeeded", "failed", "cancelled", "timed_out"):
            finished.add_metric([state], counts["finished"].get(state, 0))
        queue = GaugeMetricFamily("stepline_queue_depth", "Accepted jobs waiting for a worker")
        queue.add_metric([], len(self._executor.queue))
        size = GaugeMetricFamily("stepline_queue_size", "Capacity of the job queue")
        size.add_metric([], self._executor.config.queue_size)
        workers = GaugeMetricFamily("stepline_workers", "Jobs that may run at once")
        workers.add_metric([], self._executor.config.workers)
        yield from (jobs, finished, queue, size, workers)


class Metrics:
    """The executor's side: one registry per front (never the global one: two executors in a
    process stay apart)."""

    def __init__(self, executor: Executor) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ExecutorCollector(executor))
        self._http = PromCounter(
            "stepline_http_requests",
            "HTTP requests answered, by status code",
            ["code"],
            registry=self.registry,
        )

    def answered(self, status: int) -> None:
        self._http.labels(str(status)).inc()

    def answered_many(self, statuses: Mapping[int, int]) -> None:
        """A batch's answers, each status counted once per batch."""
        for status, count in statuses.items():
            self._http.labels(str(status)).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EventMetrics(Collector):
    """The front's process's side: events by kind and finished jobs' durations, counted in
    plain dicts as the event lines arrive, rendered as Prometheus families at scrape time."""

    def __init__(self) -> None:
        self._events: Counter[str] = Counter()
        self._durations: dict[str, list[int]] = {}  # state: a count per bucket (not cumulative)
        self._sums: dict[str, float] = {}
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def observe(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if not isinstance(kind, str):
            return
        self._events[kind] += 1
        if kind == "finished":
            elapsed, state = event.get("elapsed"), event.get("state")
            if isinstance(elapsed, int | float) and isinstance(state, str) and elapsed >= 0:
                counts = self._durations.get(state)
                if counts is None:
                    counts = self._durations[state] = [0] * len(_BUCKETS)
                counts[bisect_left(_BUCKETS, elapsed)] += 1
                self._sums[state] = self._sums.get(state, 0.0) + elapsed

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("stepline_events", "Events written, by kind", labels=["event"])
        for kind, count in sorted(self._events.items()):
            events.add_metric([kind], count)
        durations = HistogramMetricFamily(
            "stepline_job_duration_seconds",
            "Wall time of finished jobs, by final state",
            labels=["state"],
        )
        for state, counts in sorted(self._durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKETS, counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            durations.add_metric([state], buckets, self._sums[state])
        yield from (events, durations)

    def render(self) -> bytes:
        return generate_latest(self._registry)


def _le(bound: float) -> str:
    """A bucket's bound as prometheus_client writes it (``0.01``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
