"""``GET /metrics``: the executor in Prometheus' text format, through ``prometheus_client``.

Counts that the executor already keeps (jobs by state, queue depth, workers) are read at scrape
time by a custom collector, so nothing is counted twice and nothing is paid between scrapes.
Job durations are a histogram fed from ``finished`` events as the front sees them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..engine._executor import Executor
from ..wire._events import Event

__all__ = ["CONTENT_TYPE", "Metrics"]

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
    """One registry per front (never the global one: two executors in a process stay apart)."""

    def __init__(self, executor: Executor) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ExecutorCollector(executor))
        self._durations = Histogram(
            "stepline_job_duration_seconds",
            "Wall time of finished jobs, by final state",
            ["state"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._events = Counter(
            "stepline_events", "Events written, by kind", ["event"], registry=self.registry
        )
        self._by_kind: dict[str, Counter] = {}
        self._http = Counter(
            "stepline_http_requests",
            "HTTP requests answered, by status code",
            ["code"],
            registry=self.registry,
        )

    def observe(self, event: Event) -> None:
        kind = event["event"]
        counter = self._by_kind.get(kind)
        if (
            counter is None
        ):  # ``labels`` takes a lock and builds a key: once per kind, not per event
            counter = self._by_kind[kind] = self._events.labels(kind)
        counter.inc()
        if kind == "finished":
            elapsed = event.get("elapsed")
            if isinstance(elapsed, int | float):
                self._durations.labels(event["state"]).observe(elapsed)

    def answered(self, status: int) -> None:
        self._http.labels(str(status)).inc()

    def answered_many(self, statuses: Mapping[int, int]) -> None:
        """A batch's answers, each status counted once per batch."""
        for status, count in statuses.items():
            self._http.labels(str(status)).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
