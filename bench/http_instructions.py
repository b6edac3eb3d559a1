"""Instructions the executor's process spends per HTTP submit, and per stdin job with ``--http``.

    python bench/http_instructions.py                     # both, 2,000 jobs each
    python bench/http_instructions.py --mode http --src ../other/src   # another tree's server

Counted with callgrind (``valgrind --tool=callgrind``), which counts the instructions of the
executor's process only (the front's own process is started by it and runs untraced), so the
numbers do not depend on how loaded the machine is. Each figure is the difference between a
server that handled ``--jobs`` trivial jobs and one that handled none, divided by ``--jobs``:
start-up and shutdown cancel out.

- ``http``: ``serve --http 0``, the jobs POSTed to ``/jobs`` (``{"job": {"value": 0}}``) over
  ``--connections`` keep-alive connections, each waiting for its answer before the next.
- ``stdin``: the jobs as submit lines on stdin, 16 in flight, with ``--http 0`` and nobody
  calling, then without ``--http``: what an idle front costs each stdin job.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from http_load import Finishes

SRC = Path(__file__).resolve().parent.parent / "src"
WINDOW = 16  # stdin submits in flight
BODY = b'{"job":{"value":0}}'


class Traced:
    """``stepline serve`` under callgrind; stdout's finishes counted."""

    def __init__(self, src: Path, http: bool, out: Path) -> None:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        argv += [sys.executable, "-m", "stepline", "serve", "--heartbeat", "0"]
        argv += ["--workers", "4", "--queue", "100000"] + (["--http", "0"] if http else [])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        self.out = out
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.ready: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.finishes = Finishes(self.proc.stdout)

    def instructions(self) -> int:
        """Stop the server; the instructions its process executed in all."""
        self.stdin.close()
        self.proc.wait(timeout=600)
        self.finishes.join(timeout=10)
        match = re.search(rb"^(?:summary|totals): (\d+)", self.out.read_bytes(), re.M)
        assert match is not None, "callgrind wrote no totals"
        return int(match.group(1))


def post_all(url: str, jobs: int, connections: int) -> None:
    parts = urlsplit(url)
    counts = [jobs // connections + (i < jobs % connections) for i in range(connections)]
    failures: list[str] = []

    def post(count: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=600)
        headers = {"content-type": "application/json"}
        for _ in range(count):
            conn.request("POST", "/jobs", BODY, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 202:
                failures.append(str(answer.status))
        conn.close()

    threads = [threading.Thread(target=post, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, f"answers other than 202: {failures[:5]}"


def submit_stdin(server: Traced, jobs: int) -> None:
    finishes = server.finishes
    sent = 0
    while sent < jobs:
        seen = finishes.count
        room = min(WINDOW - (sent - seen), jobs - sent)
        if room > 0:
            lines = (b'{"op":"submit","job":{"value":0}}\n' for _ in range(room))
            server.stdin.write(b"".join(lines))
            server.stdin.flush()
            sent += room
        finishes.wait_until(lambda: finishes.count > seen, 0.05)  # noqa: B023 (called here, in this pass)
    finishes.wait(jobs, 1200)


def count(src: Path, mode: str, http: bool, jobs: int, connections: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = Traced(src, http, Path(tmp) / "callgrind.out")
        if jobs and mode == "http":
            post_all(server.ready["http"], jobs, connections)
            server.finishes.wait(jobs, 1200)
        elif jobs:
            submit_stdin(server, jobs)
        return server.instructions()


def per_job(src: Path, mode: str, http: bool, jobs: int, connections: int) -> dict[str, Any]:
    empty = count(src, mode, http, 0, connections)
    full = count(src, mode, http, jobs, connections)
    return {"instructions_per_job": round((full - empty) / jobs), "idle_run": empty, "run": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["http", "stdin", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--src", type=Path, default=SRC)
    args = parser.parse_args()
    src = args.src.resolve()
    results: dict[str, Any] = {"src": str(src), "loadavg_1min": round(os.getloadavg()[0], 1)}
    if args.mode in ("http", "both"):
        results["http_submit"] = per_job(src, "http", True, args.jobs, args.connections)
    if args.mode in ("stdin", "both"):
        results["stdin_with_http"] = per_job(src, "stdin", True, args.jobs, args.connections)
        results["stdin_without_http"] = per_job(src, "stdin", False, args.jobs, args.connections)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
