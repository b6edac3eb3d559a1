"""What live output costs: a streamed line, and a ``run`` job that does not stream.

    python bench/streaming.py                 # 200,000 lines x 5 rounds; 300 run jobs x 5 rounds
    python bench/streaming.py --lines 50000 --jobs 100 --rounds 3

Two paired measurements, each round running both settings back to back in alternating order so
that machine noise hits both alike; the median of the per-round differences (or ratios) is
reported with the spread.

* **Per line.** One job ``{"run": ["seq", N]}``, with ``"stream": true`` and without, in a fresh
  ``stepline serve --heartbeat 0``. Timed from the submit to ``finished``, and the server's CPU
  seconds (user + system, its children included, from ``wait4``). With streaming every line is an
  ``output`` event, read by this script; without it, the lines go only into the job's log. The
  difference divided by N is what a streamed line costs.
* **Jobs that do not stream.** N jobs ``{"run": ["true"]}`` through ``stepline serve --workers
  4``, this checkout against the source of ``--before`` (the commit before live output landed):
  the line splitting and the job log are paid by every ``run`` step, streamed or not.

Self-contained, like ``bench/state_overhead.py``: the main benchmark's files have their owner.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
BEFORE = "f71b880^"  # the commit before "Live output through the Runner seam"


def serve(src: Path, *flags: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    argv = [sys.executable, "-m", "stepline", "serve", "--heartbeat", "0", *flags]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    if b'"ready"' not in proc.stdout.readline():
        raise SystemExit("no ready line")
    return proc


def finish(proc: subprocess.Popen[bytes]) -> float:
    """Close stdin, read to EOF, reap; returns the server's CPU seconds (children included)."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    tail = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or b'"bye"' not in tail:
        raise SystemExit(f"serve ended badly ({proc.returncode})")
    return usage.ru_utime + usage.ru_stime


def one_job(lines: int, stream: bool) -> tuple[float, float]:
    """Wall seconds from submit to ``finished`` and CPU seconds, for ``seq LINES``."""
    proc = serve(SRC)
    assert proc.stdin is not None
    assert proc.stdout is not None
    job = b'{"op":"submit","job":{"run":["seq","%d"],"stream":%s}}\n' % (
        lines,
        b"true" if stream else b"false",
    )
    start = time.perf_counter()
    proc.stdin.write(job)
    proc.stdin.flush()
    outputs = 0
    for line in proc.stdout:
        if b'"event":"output"' in line:
            outputs += 1
        elif b'"event":"finished"' in line:
            if b'"succeeded"' not in line:
                raise SystemExit(f"the job did not succeed: {line[:200]!r}")
            break
    wall = time.perf_counter() - start
    cpu = finish(proc)
    if outputs != (lines if stream else 0):
        raise SystemExit(f"{outputs} output events for {lines} lines (stream={stream})")
    return wall, cpu


def many_jobs(src: Path, jobs: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``jobs`` jobs ``run true`` (four at a time)."""
    proc = serve(src, "--workers", "4", "--queue", str(jobs))
    assert proc.stdin is not None
    assert proc.stdout is not None
    data = b'{"op":"submit","job":{"run":["true"]}}\n' * jobs
    start = time.perf_counter()
    proc.stdin.write(data)
    proc.stdin.flush()
    done = 0
    for line in proc.stdout:
        if b'"event":"finished"' in line:
            done += 1
            if done == jobs:
                break
    wall = time.perf_counter() - start
    return wall, finish(proc)


def checkout(rev: str, into: Path) -> Path:
    """The ``src`` tree of ``rev``, extracted under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as files:
        files.extractall(into, filter="data")
    return into / "src"


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3g} (min {min(values):.3g}, max {max(values):.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="the revision to compare run jobs with")
    parser.add_argument(
        "--after", default=None, help="compare this revision instead of the checkout (f71b880)"
    )
    parser.add_argument("--skip-lines", action="store_true", help="only the run jobs")
    args = parser.parse_args()

    per_line_wall: list[float] = []
    per_line_cpu: list[float] = []
    for round_ in range(0 if args.skip_lines else args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        results = {stream: one_job(args.lines, stream) for stream in order}
        (off_wall, off_cpu), (on_wall, on_cpu) = results[False], results[True]
        per_line_wall.append((on_wall - off_wall) / args.lines * 1e6)
        per_line_cpu.append((on_cpu - off_cpu) / args.lines * 1e6)
        print(
            f"round {round_ + 1}: seq {args.lines}: off {off_wall:.2f}s wall {off_cpu:.2f}s cpu, "
            f"on {on_wall:.2f}s wall {on_cpu:.2f}s cpu",
            flush=True,
        )
    if per_line_wall:
        print(f"a streamed line costs, in microseconds: wall {spread(per_line_wall)}")
        print(f"                                         cpu  {spread(per_line_cpu)}")

    with tempfile.TemporaryDirectory() as tmp:
        before = checkout(args.before, Path(tmp) / "before")
        now = SRC if args.after is None else checkout(args.after, Path(tmp) / "after")
        ratios_wall, ratios_cpu = [], []
        for round_ in range(args.rounds):
            order = (before, now) if round_ % 2 == 0 else (now, before)
            results = {src: many_jobs(src, args.jobs) for src in order}
            (now_wall, now_cpu), (old_wall, old_cpu) = results[now], results[before]
            ratios_wall.append(now_wall / old_wall)
            ratios_cpu.append(now_cpu / old_cpu)
            print(
                f"round {round_ + 1}: {args.jobs} run jobs: before {old_wall:.2f}s wall "
                f"{old_cpu:.2f}s cpu, now {now_wall:.2f}s wall {now_cpu:.2f}s cpu",
                flush=True,
            )
        label = args.after or "this checkout"
        print(f"unstreamed run jobs, {label} / {args.before}: wall {spread(ratios_wall)}")
        print(f"                                    cpu  {spread(ratios_cpu)}")


if __name__ == "__main__":
    main()
