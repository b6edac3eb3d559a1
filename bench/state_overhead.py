"""What ``--state`` costs: trivial-job throughput of ``stepline serve`` with and without it.

    python bench/state_overhead.py               # 20,000 jobs, 3 rounds per setting
    python bench/state_overhead.py --jobs 3000 --rounds 1

Each run pipes N ``submit`` lines of ``{"value": i}`` into a fresh ``stepline serve --workers 4
--heartbeat 0`` and times from the first byte written to ``bye`` read (start-up excluded), as
``bench/run.py``'s trivial scenario does. With ``--state`` every job is recorded before its
``accepted``, marked running and finished, all with ``synchronous=FULL`` commits: the figure shows
what group commit leaves of that cost. Two queue sizes: the whole input fits (submits never wait),
and the default 64 (submits wait for room, so batches are small). Rounds alternate the settings
so machine noise hits both alike; the best round is reported (and the median). Self-contained
on purpose: the main benchmark's files belong to their own owner.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

SRC = Path(__file__).resolve().parent.parent / "src"
WITHOUT, WITH = "without --state", "with --state"


def run_once(jobs: int, queue: int, state: Path | None) -> tuple[float, float]:
    """Wall seconds for ``jobs`` trivial jobs (ready excluded), and the server's CPU seconds
    (user + system, all threads, start-up included); checks every job succeeded."""
    argv = [
        sys.executable,
        "-m",
        "stepline",
        "serve",
        "--workers",
        "4",
        "--heartbeat",
        "0",
        "--queue",
        str(queue),
    ]
    if state is not None:
        argv += ["--state", str(state)]
    data = b"".join(b'{"op":"submit","job":{"value":%d}}\n' % i for i in range(jobs))
    paths = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None or b'"ready"' not in stdout.readline():
        raise SystemExit("no ready line")
    start = time.perf_counter()
    feeder = threading.Thread(target=_feed, args=(stdin, data), daemon=True)
    feeder.start()
    out = stdout.read()
    elapsed = time.perf_counter() - start
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    _check(out, jobs)
    return elapsed, usage.ru_utime + usage.ru_stime


def _feed(stdin: IO[bytes], data: bytes) -> None:
    stdin.write(data)
    stdin.close()


def _check(out: bytes, jobs: int) -> None:
    finished = [json.loads(line) for line in out.splitlines() if b'"finished"' in line]
    ok = sum(1 for ev in finished if ev["state"] == "succeeded")
    if ok != jobs:
        raise SystemExit(f"expected {jobs} succeeded jobs, got {ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for queue in (args.jobs, 64):
            wall: Samples = {WITHOUT: [], WITH: []}
            cpu: Samples = {WITHOUT: [], WITH: []}
            for round_ in range(args.rounds):  # alternate, so noise hits both settings alike
                for key, state in ((WITHOUT, None), (WITH, Path(tmp, f"s{queue}-{round_}.db"))):
                    seconds, cpu_seconds = run_once(args.jobs, queue, state)
                    wall[key].append(seconds)
                    cpu[key].append(cpu_seconds)
            report(queue, args.jobs, wall, cpu)


Samples = dict[str, list[float]]


def report(queue: int, jobs: int, wall: Samples, cpu: Samples) -> None:
    """Best-of-rounds jobs/s by the wall clock, and server CPU per job: on a shared machine the
    best round is the one least disturbed by others (the median is printed for reference)."""
    rates = {k: jobs / min(v) for k, v in wall.items()}
    medians = {k: jobs / statistics.median(v) for k, v in wall.items()}
    per_job = {k: min(v) / jobs * 1e6 for k, v in cpu.items()}
    cells = [f"{k} {rates[k]:,.0f} jobs/s ({per_job[k]:.0f} CPU-us/job)" for k in rates]
    print(
        f"--queue {queue:>6}: "
        + ", ".join(cells)
        + f"; with/without: {rates[WITH] / rates[WITHOUT]:.2f}x jobs/s, "
        + f"{per_job[WITH] / per_job[WITHOUT]:.2f}x CPU/job; medians "
        + ", ".join(f"{v:,.0f}" for v in medians.values())
        + " jobs/s",
        flush=True,
    )


if __name__ == "__main__":
    main()
