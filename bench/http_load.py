"""The HTTP front under load: submits over HTTP against stdin, and what HTTP load costs stdin.

    python bench/http_load.py                               # the issue's load: 30 s a phase
    python bench/http_load.py --duration 5 --clients 20 --rate 200 --jobs 2000   # quick

1. **Submit throughput.** ``--jobs`` trivial jobs (``{"value": i}``) into a fresh
   ``stepline serve --http 0 --workers 4 --heartbeat 0``: all piped on stdin at once, then all
   POSTed to ``/jobs`` over 16 keep-alive connections (each waits for its answer before the
   next request). Timed from the first byte sent to the last ``finished`` read on stdout.
2. **The stdin driver under HTTP load.** A driver keeps 16 submits in flight on stdin (a new one
   for each ``finished``) for ``--duration`` seconds; its jobs/s is measured on a server with
   ``--http`` and nobody calling, then again while a load process holds ``--clients`` SSE
   streams on ``/events`` and POSTs ``--rate`` trivial jobs a second. The issue's target: the
   second no more than 20 % below the first. The load process reports what it achieved (the
   submit rate, answers other than 202, SSE events read per client), since an overloaded
   generator would flatter the server. With ``--split`` the SSE readers and the submitters are
   two load processes (real clients are separate programs: reading the streams cannot take
   the submitters' turns); each load process reports its CPU time over the phase.

The load process is this file run with ``--load URL``: plain trio sockets, requests built once,
answers parsed no further than the status line and ``content-length``, so the generator costs
as little CPU as it can (the machine's cores are shared with the server it measures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

SRC = Path(__file__).resolve().parent.parent / "src"
WINDOW = 16  # submits the stdin driver keeps in flight
CONNECTIONS = 16  # keep-alive connections for POST /jobs
# Submits a second one paced connection sends at most (each waits for its answer): the load's
# connections are rate / PER_POSTER. At 100 (10 connections for 1,000/s, the first setting) the
# rate done was bounded by the answers' latency (10 ms at most per answer), not by what the
# server could take; 20 (50 connections) asks the same rate of many slower callers.
PER_POSTER = 20.0


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = os.environ.get("HTTP_LOAD_SRC", str(SRC))  # --src: another tree's server
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


class Finishes:
    """A server's ``finished`` events, counted by a thread reading its stdout: every job's
    (``count``, the last at ``last_at``) and the stdin driver's (``driven``: output ``"d"``, told
    apart from HTTP load's).

    Waits check and wait under one lock: a bare ``Condition.wait`` after the caller looked
    could miss a finish that came in between and sleep its whole timeout with the server idle
    (it cut some idle rounds to a tenth of their rate)."""

    def __init__(self, stdout: IO[bytes]) -> None:
        self.count = 0
        self.driven = 0
        self.last_at = 0.0
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stdout,), daemon=True)
        self._reader.start()

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            if b'"event":"finished"' in line:
                with self._changed:
                    self.count += 1
                    self.driven += b'"output":"d"' in line
                    self.last_at = time.perf_counter()
                    self._changed.notify_all()

    def wait(self, count: int, timeout: float) -> float:
        """The moment the ``count``-th job finished."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.count >= count, timeout):
                raise RuntimeError(f"only {self.count} of {count} jobs finished")
            return self.last_at

    def wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Until ``done()`` (it reads the counts) or ``timeout`` s."""
        with self._changed:
            self._changed.wait_for(done, timeout)

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)


class Server:
    """``stepline serve --http 0``: stdin for the driver, stdout's finishes counted."""

    def __init__(self) -> None:
        argv = [sys.executable, "-m", "stepline", "serve", "--http", "0"]
        argv += ["--workers", "4", "--heartbeat", "0", "--queue", "100000"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env()
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        ready = json.loads(self.proc.stdout.readline())
        self.url: str = ready["http"]
        self.finishes = Finishes(self.proc.stdout)

    def stop(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=120)
        self.finishes.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def submit_line(i: int) -> bytes:
    return b'{"op":"submit","id":%d,"job":{"value":"d"}}\n' % i


def phase(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def throughput_stdin(jobs: int) -> float:
    server = Server()
    try:
        data = b"".join(submit_line(i) for i in range(jobs))
        start = time.perf_counter()
        server.stdin.write(data)
        server.stdin.flush()
        return jobs / (server.finishes.wait(jobs, 300) - start)
    finally:
        server.stop()


def throughput_http(jobs: int) -> float:
    server = Server()
    try:
        load = start_load(server.url, clients=0, rate=0, duration=600, count=jobs)
        start = time.perf_counter()
        load.stdin.write(b"go\n")  # type: ignore[union-attr]
        load.stdin.flush()  # type: ignore[union-attr]
        finished = server.finishes.wait(jobs, 300)
        finish_load(load)
        return jobs / (finished - start)
    finally:
        server.stop()


def start_load(
    url: str,
    *,
    clients: int,
    rate: float,
    duration: float,
    count: int = 0,
    per_poster: float = PER_POSTER,
    streams_only: bool = False,
) -> subprocess.Popen[bytes]:
    """The load process, its SSE clients connected, waiting for ``go`` on its stdin."""
    argv = [sys.executable, __file__, "--load", url, "--clients", str(clients)]
    argv += ["--rate", str(rate), "--duration", str(duration), "--jobs", str(count)]
    argv += ["--per-poster", str(per_poster)] + (["--streams-only"] if streams_only else [])
    load = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env())
    assert load.stdout is not None
    assert load.stdout.readline().strip() == b"connected"
    return load


def finish_load(load: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert load.stdout is not None
    report: dict[str, Any] = json.loads(load.stdout.read())
    load.wait(timeout=60)
    for pipe in (load.stdin, load.stdout):
        if pipe is not None:
            pipe.close()
    return report


def driver_rate(server: Server, duration: float) -> float:
    """Jobs/s of a stdin driver keeping :data:`WINDOW` submits in flight for ``duration`` s."""
    finishes = server.finishes
    base = finishes.driven
    sent = 0
    start = time.perf_counter()
    deadline = start + duration
    while time.perf_counter() < deadline:
        seen = finishes.driven
        room = WINDOW - (sent - (seen - base))
        if room > 0:
            server.stdin.write(b"".join(submit_line(sent + i) for i in range(room)))
            server.stdin.flush()
            sent += room
        finishes.wait_until(lambda: finishes.driven > seen, 0.05)  # noqa: B023 (called here, in this pass)
    done = finishes.driven - base
    return done / (time.perf_counter() - start)


def under_load(
    duration: float,
    clients: int,
    rate: float,
    rounds: int,
    per_poster: float = PER_POSTER,
    split: bool = False,
) -> dict[str, Any]:
    """``rounds`` pairs, the driver alone then beside the load, each on a fresh server: the
    pairs' ratios are what to read on a shared machine, where the rate swings between runs."""
    pairs: list[dict[str, Any]] = []
    for number in range(1, rounds + 1):
        phase(f"round {number}: the stdin driver alone, {duration} s")
        idle_server = Server()
        try:
            idle = driver_rate(idle_server, duration)
        finally:
            idle_server.stop()
        phase(f"round {number}: beside {clients} SSE clients and {rate} submits/s, {duration} s")
        server = Server()
        try:
            loads = start_loads(server.url, clients, rate, duration + 3, per_poster, split)
            for load in loads:
                load.stdin.write(b"go\n")  # type: ignore[union-attr]
                load.stdin.flush()  # type: ignore[union-attr]
            time.sleep(2)  # the generator reaches its rate before the driver's clock starts
            loaded = driver_rate(server, duration)
            reports = [finish_load(load) for load in loads]
            report = (
                reports[0] if len(reports) == 1 else {"streams": reports[0], "submits": reports[1]}
            )
        finally:
            server.stop()
        pairs.append(
            {
                "stdin_jobs_per_s_idle": round(idle),
                "stdin_jobs_per_s_loaded": round(loaded),
                "slowdown_pct": round((1 - loaded / idle) * 100, 1),
                "load": report,
                "loadavg_1min": round(os.getloadavg()[0], 1),
            }
        )
    slowdowns = sorted(pair["slowdown_pct"] for pair in pairs)
    return {"slowdown_pct_median": slowdowns[len(slowdowns) // 2], "rounds": pairs}


def start_loads(
    url: str, clients: int, rate: float, duration: float, per_poster: float, split: bool
) -> list[subprocess.Popen[bytes]]:
    """One load process, or with ``split`` two (the SSE readers, then the submitters), so
    that reading the streams cannot take the submitters' turns: real clients are separate
    programs."""
    if not split:
        return [
            start_load(url, clients=clients, rate=rate, duration=duration, per_poster=per_poster)
        ]
    streams = start_load(url, clients=clients, rate=rate, duration=duration, streams_only=True)
    submits = start_load(url, clients=0, rate=rate, duration=duration, per_poster=per_poster)
    return [streams, submits]


# -- the load process -------------------------------------------------------------------------


def load_main(
    url: str,
    clients: int,
    rate: float,
    duration: float,
    count: int,
    per_poster: float,
    streams_only: bool = False,
) -> None:
    """SSE clients, then (after ``go`` on stdin) submits: ``rate`` a second, or with rate 0
    ``count`` of them as fast as :data:`CONNECTIONS` connections take them."""
    import trio

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = b'{"job":{"value":0}}'
    request = (
        b"POST /jobs HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (host.encode(), port, len(body), body)
    )
    sse_request = b"GET /events HTTP/1.1\r\nhost: %s:%d\r\n\r\n" % (host.encode(), port)
    stats: dict[str, Any] = {"submits": 0, "not_202": 0, "reconnects": 0}
    stats["sse_events"] = [0] * clients
    stats["sse_gaps"] = [0] * clients  # comments naming events a slow stream missed

    async def sse(index: int, ready: trio.Event, opened: list[int]) -> None:
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(sse_request)
        opened[0] += 1
        if opened[0] == clients:
            ready.set()
        async with stream:
            while True:
                chunk = await stream.receive_some(1 << 16)
                if not chunk:
                    return
                stats["sse_events"][index] += chunk.count(b"\ndata: ")
                stats["sse_gaps"][index] += chunk.count(b"are no longer kept")

    async def exchange(stream: trio.SocketStream, buffer: bytes) -> tuple[bytes, bytes]:
        """Send one submit and read its answer: (status line and headers, what is left)."""
        await stream.send_all(request)
        while b"\r\n\r\n" not in buffer:
            buffer += await receive(stream)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(buffer) < length:
            buffer += await receive(stream)
        return head, buffer[length:]

    async def receive(stream: trio.SocketStream) -> bytes:
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            raise ConnectionResetError("the server closed a submit connection")
        return chunk

    async def poster(interval: float, stop_at: float) -> None:
        next_at = trio.current_time()
        # Behind schedule (the server answers slower than asked) a poster sends at once, and
        # it stops on time: the rate done is what the server took. A connection the server
        # closes (Hypercorn ends keep-alive after a while) is opened again.
        while trio.current_time() < stop_at and (count == 0 or stats["submits"] < count):
            stream, buffer = await trio.open_tcp_stream(host, port), b""
            async with stream:
                try:
                    while trio.current_time() < stop_at and (
                        count == 0 or stats["submits"] < count
                    ):
                        if interval:
                            await trio.sleep_until(next_at)
                        head, buffer = await exchange(stream, buffer)
                        stats["submits"] += 1
                        stats["not_202"] += not head.startswith(b"HTTP/1.1 202")
                        next_at += interval
                except (ConnectionResetError, trio.BrokenResourceError):
                    stats["reconnects"] += 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ready, opened = trio.Event(), [0]
            for index in range(clients):
                nursery.start_soon(sse, index, ready, opened)
            if clients:
                await ready.wait()
            print("connected", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            start, cpu_start = trio.current_time(), time.process_time()
            stop_at = start + duration
            # Paced: each poster sends at most PER_POSTER a second; unpaced: one per connection.
            posters = max(1, math.ceil(rate / per_poster)) if rate else CONNECTIONS
            async with trio.open_nursery() as posting:
                if streams_only:
                    await trio.sleep_until(stop_at)
                    posters = 0
                for _ in range(posters):
                    posting.start_soon(poster, posters / rate if rate else 0.0, stop_at)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        events = sorted(stats["sse_events"]) or [0]
        report = {
            "sse_clients": clients,
            "submit_rate_asked": rate,
            "submit_rate_done": round(stats["submits"] / elapsed),
            "answers_not_202": stats["not_202"],
            "reconnects": stats["reconnects"],
            "sse_events_per_client_min": events[0],
            "sse_events_per_client_max": events[-1],
            "sse_clients_with_gaps": sum(1 for gaps in stats["sse_gaps"] if gaps),
            "cpu_s": round(time.process_time() - cpu_start, 2),
            "cpu_share": round((time.process_time() - cpu_start) / elapsed, 2),
        }
        sys.stdout.write(json.dumps(report))

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rounds", type=int, default=3, help="driver alone/loaded pairs")
    parser.add_argument("--only-load", action="store_true", help="skip the throughput phases")
    parser.add_argument(
        "--per-poster", type=float, default=PER_POSTER, help="submits/s one connection sends"
    )
    parser.add_argument("--src", type=Path, help="run the server from this tree's src/")
    parser.add_argument(
        "--split", action="store_true", help="SSE readers and submitters in separate processes"
    )
    parser.add_argument("--streams-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(
            args.load,
            args.clients,
            args.rate,
            args.duration,
            args.jobs,
            args.per_poster,
            args.streams_only,
        )
        return
    if args.src is not None:
        os.environ["HTTP_LOAD_SRC"] = str(args.src.resolve())
    results: dict[str, Any] = {"loadavg_1min_at_start": round(os.getloadavg()[0], 1)}
    if not args.only_load:
        phase(f"{args.jobs} submits on stdin")
        results["submit_jobs_per_s_stdin"] = round(throughput_stdin(args.jobs))
        phase(f"{args.jobs} submits over HTTP")
        results["submit_jobs_per_s_http"] = round(throughput_http(args.jobs))
    results.update(
        under_load(args.duration, args.clients, args.rate, args.rounds, args.per_poster, args.split)
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
