"""What ``--state`` costs: trivial-job throughput of ``stepline serve`` with and without it.

    python bench/state_overhead.py                       # 20,000 jobs, 5 rounds per setting
    python bench/state_overhead.py --jobs 3000 --rounds 9 --against 83c353e

Each run pipes N ``submit`` lines of ``{"value": i}`` into a fresh ``stepline serve --workers 4
--heartbeat 0`` and times from the first byte written to ``bye`` read (start-up excluded), as
``bench/run.py``'s trivial scenario does. With ``--state`` every job is recorded before its
``accepted``, marked running and finished, all with ``synchronous=FULL`` commits: the figure shows
what group commit leaves of that cost. Two queue sizes: the whole input fits (submits never wait),
and the default 64 (submits wait for room, so batches are small).

The contenders take turns within every round (in-memory, durable, and with ``--against REV`` the
durable setting of that git revision's ``src/``, exported with ``git archive``), so a round's
figures share that round's machine speed; each ratio printed is the median over the rounds of
that round's own ratio (paired), beside the median rates and the load average.
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

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
MEMORY, STATE = "in-memory", "--state"


def run_once(src: Path, jobs: int, queue: int, state: Path | None) -> tuple[float, float]:
    """Wall seconds for ``jobs`` trivial jobs (ready excluded), and the server's CPU seconds
    (user + system, all threads, start-up included); checks every job succeeded."""
    argv = [sys.executable, "-m", "stepline", "serve", "--workers", "4", "--heartbeat", "0"]
    argv += ["--queue", str(queue)]
    if state is not None:
        argv += ["--state", str(state)]
    data = b"".join(b'{"op":"submit","job":{"value":%d}}\n' % i for i in range(jobs))
    paths = [str(src), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None or b'"ready"' not in stdout.readline():
        raise SystemExit("no ready line")
    start = time.perf_counter()
    feeder = threading.Thread(target=_feed, args=(stdin, data), daemon=True)
    feeder.start()
    out, bye_at = _read_to_bye(stdout.fileno())
    elapsed = bye_at - start
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    _check(out, jobs)
    return elapsed, usage.ru_utime + usage.ru_stime


def _read_to_bye(fd: int) -> tuple[bytes, float]:
    """All of stdout, and when ``bye`` was read: the end of the timing, as ``bench/run.py``
    has it (after ``bye`` a ``--state`` server still records delivery and closes its file)."""
    out = bytearray()
    bye_at = None
    while chunk := os.read(fd, 1 << 20):
        out += chunk
        if bye_at is None and _BYE in out[-len(chunk) - len(_BYE) :]:
            bye_at = time.perf_counter()
    if bye_at is None:
        raise SystemExit("no bye line")
    return bytes(out), bye_at


_BYE = b'{"event":"bye"'


def _feed(stdin: IO[bytes], data: bytes) -> None:
    stdin.write(data)
    stdin.close()


def _check(out: bytes, jobs: int) -> None:
    finished = [json.loads(line) for line in out.splitlines() if b'"finished"' in line]
    ok = sum(1 for ev in finished if ev["state"] == "succeeded")
    if ok != jobs:
        raise SystemExit(f"expected {jobs} succeeded jobs, got {ok}")


def export_src(rev: str, into: Path) -> Path:
    """``src/`` as it was at ``rev`` (read-only git plumbing: the repository is not touched)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


Samples = dict[str, list[float]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--queue", type=int, action="append", help="queue sizes (default: jobs, 64)"
    )
    parser.add_argument("--against", metavar="REV", help="also time --state at this git revision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {MEMORY: (SRC, False), STATE: (SRC, True)}
        if args.against:
            contenders[f"--state@{args.against}"] = (export_src(args.against, Path(tmp)), True)
        for queue in args.queue or [args.jobs, 64]:
            wall: Samples = {name: [] for name in contenders}
            cpu: Samples = {name: [] for name in contenders}
            load = os.getloadavg()[0]
            for round_ in range(args.rounds):
                for name, (src, durable) in contenders.items():
                    db = Path(tmp, f"{len(wall[name])}-{round_}-{queue}-{name[-7:]}.db")
                    seconds, cpu_seconds = run_once(src, args.jobs, queue, db if durable else None)
                    wall[name].append(seconds)
                    cpu[name].append(cpu_seconds)
            report(queue, args.jobs, wall, cpu, (load, os.getloadavg()[0]))


def report(queue: int, jobs: int, wall: Samples, cpu: Samples, load: tuple[float, float]) -> None:
    """Median jobs/s and CPU-µs per job for each contender, then the paired ratios."""
    cells = [
        f"{name} {jobs / statistics.median(w):,.0f} jobs/s"
        f" ({statistics.median(cpu[name]) / jobs * 1e6:.0f} CPU-us/job)"
        for name, w in wall.items()
    ]
    print(
        f"--queue {queue} ({len(wall[MEMORY])} rounds, load {load[0]:.1f}->{load[1]:.1f}): "
        + ", ".join(cells),
        flush=True,
    )
    pairs = [(name, MEMORY) for name in wall if name != MEMORY]
    pairs += [(STATE, name) for name in wall if name not in (MEMORY, STATE)]
    for name, other in pairs:
        ratios = [o / s for s, o in zip(wall[name], wall[other], strict=True)]
        print(
            f"    {name} / {other}: {statistics.median(ratios):.2f}x jobs/s paired"
            f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
