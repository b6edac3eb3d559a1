"""Many nodes on one PostgreSQL: throughput with 1, 2 and 3 nodes beside the SQLite single
process, cross-node cancel latency, and how long a killed node's jobs wait to be rescued.

    python bench/cluster.py                 # 20,000 trivial jobs per setting
    python bench/cluster.py --jobs 3000     # quicker

Everything runs on this machine, the database included (a throwaway PostgreSQL 15 with
``fsync=off``: what is measured is stepline's protocol with the database, not the disk). One
``serve`` node is driven (it submits every job and receives every event); the other nodes are
``stepline worker``. Throughput is timed from the first submit written to the last ``finished``
read. Self-contained: it starts and removes everything it uses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

# Below the sys.path insert, so that the bench runs this tree's stepline.
from stepline.cluster._throwaway import ThrowawayPostgres  # noqa: E402

STEPLINE = [sys.executable, "-m", "stepline"]
ENV = {**os.environ, "PYTHONPATH": str(SRC)}


class Node:
    """A ``serve`` process whose stdout lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*STEPLINE, "serve", "--heartbeat", "0", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=ENV,
        )
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self.wait(lambda e: e["event"] == "ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait(self, predicate: Any, timeout: float = 120) -> dict[str, Any]:
        seen = 0
        with self.cond:
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                if not self.cond.wait(timeout):
                    raise TimeoutError("no such event")

    def count(self, name: str) -> int:
        with self.cond:
            return sum(1 for e in self.events if e["event"] == name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def workers(url: str, n: int, *args: str) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [*STEPLINE, "worker", "--state", url, "--heartbeat", "0", *args],
            stdin=subprocess.DEVNULL,
            env=ENV,
        )
        for _ in range(n)
    ]


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def throughput(state: str, nodes: int, jobs: int, flags: list[str]) -> float:
    others = workers(state, nodes - 1, *flags) if state.startswith("postgresql") else []
    node = Node("--state", state, "--queue", str(jobs), *flags)
    try:
        if others:
            time.sleep(1.5)  # the workers have joined
        data = b"".join(b'{"op":"submit","job":{"value":%d}}\n' % i for i in range(jobs))
        start = time.perf_counter()
        node.send(data)
        while node.count("finished") < jobs:
            time.sleep(0.01)
        return jobs / (time.perf_counter() - start)
    finally:
        node.stop()
        stop_all(others)


def cancel_latency(url: str, rounds: int) -> list[float]:
    """Cancel from the driven node a job running on a worker: ms until its `finished`."""
    others = workers(url, 1, "--workers", "1")
    node = Node("--state", url, "--workers", "1")
    me = node.ready["node"]
    out = []
    try:
        time.sleep(1.5)
        for i in range(rounds):
            # Four jobs: this node holds two at most (one worker, one waiting), so at least
            # one runs on the worker; the one seen starting there is cancelled from here.
            node.send(b'{"op":"submit","job":{"sleep":60}}\n' * 4)
            started = node.wait(
                lambda e, n=i: (
                    e["event"] == "started" and e["node"] != me and int(e["job"][1:]) > 4 * n
                )
            )
            start = time.perf_counter()
            node.send(b'{"op":"cancel","job":"%s"}\n' % started["job"].encode())
            node.wait(lambda e, j=started["job"]: e["event"] == "finished" and e["job"] == j)
            out.append((time.perf_counter() - start) * 1000)
            for j in range(4 * i + 1, 4 * i + 5):
                if f"j{j}" != started["job"]:
                    node.send(b'{"op":"cancel","job":"j%d"}\n' % j)
            while node.count("finished") < 4 * (i + 1):
                time.sleep(0.01)
    finally:
        node.stop()
        stop_all(others)
    return out


def rescue_time(url: str, lease: float) -> float:
    """SIGKILL a worker running a job: seconds until the submitter sees `recovered`."""
    victim = workers(url, 1, "--lease", str(lease), "--workers", "1")
    node = Node("--state", url, "--lease", str(lease), "--workers", "1")
    me = node.ready["node"]
    try:
        time.sleep(1.5)
        node.send(b'{"op":"submit","job":{"sleep":60}}\n' * 4)  # as in cancel_latency
        started = node.wait(lambda e: e["event"] == "started" and e["node"] != me)
        victim[0].kill()
        start = time.perf_counter()
        node.wait(lambda e: e["event"] == "recovered" and e["job"] == started["job"])
        return time.perf_counter() - start
    finally:
        node.stop()
        stop_all(victim)


def fresh(server: str, name: str) -> str:
    """A new, empty database on the server: each measurement starts from clean tables."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return server.replace("/postgres?", f"/{name}?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    flags = ["--workers", str(args.workers)]
    report: dict[str, Any] = {"jobs": args.jobs, "workers_per_node": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        report["sqlite_1_process"] = round(throughput(f"{tmp}/s.db", 1, args.jobs, flags))
    with ThrowawayPostgres() as pg:
        for n in (1, 2, 3):
            url = fresh(pg.url, f"nodes{n}")
            report[f"postgres_{n}_nodes"] = round(throughput(url, n, args.jobs, flags))
            print(json.dumps(report), file=sys.stderr)
        latencies = cancel_latency(fresh(pg.url, "cancel"), 10)
        report["cancel_ms_median"] = round(statistics.median(latencies), 1)
        report["cancel_ms_max"] = round(max(latencies), 1)
        report["rescue_s_lease_2"] = round(rescue_time(fresh(pg.url, "rescue"), 2.0), 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
