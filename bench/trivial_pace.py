"""What sets the pace of trivial jobs: wall time, the server's CPU and its context switches.

    python bench/trivial_pace.py                          # 100,000 jobs, 5 rounds
    python bench/trivial_pace.py --jobs 50000 --rounds 3 --against 57fd09d

Each contender gets N ``submit`` lines of ``{"value": i}`` through a pipe (written by a thread,
stdout read by another, as ``bench/run.py`` drives it) from its ``ready`` to EOF: ``stepline
serve --workers 4 --queue N --heartbeat 0`` of this tree, the trio nursery floor
(``baseline_trio.py --writer nursery``), and with ``--against REV`` the same serve of that git
revision's ``src/`` (``git archive``). They take turns within every round; the ratios printed are
medians of each round's own ratio (paired), beside the load average.

Besides wall time it reports, from ``ready`` to the end, the server's CPU per job and its
voluntary and involuntary context switches per 1,000 jobs. A server whose voluntary switches
stay near 0 never waited (for input, or for its reader): its own CPU is what bounds it, and the
involuntary ones are the machine's load taking the CPU away.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, NamedTuple

from state_overhead import export_src

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
SERVE = ["-m", "stepline", "serve", "--workers", "4", "--heartbeat", "0", "--queue"]
FLOOR = [str(BENCH / "baseline_trio.py"), "--workers", "8", "--queue", "64", "--writer", "nursery"]


class Sample(NamedTuple):
    wall: float  # seconds from the first byte written to EOF on stdout
    cpu: float  # the server's CPU seconds (user + system) over the same span
    voluntary: int  # context switches over the same span
    involuntary: int


def run_once(argv: list[str], src: Path | None, data: bytes) -> Sample:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None or b'"ready"' not in stdout.readline():
        raise SystemExit(f"{argv}: no ready line")
    at_ready = _usage(proc.pid)
    start = time.perf_counter()
    threading.Thread(target=_feed, args=(stdin, data), daemon=True).start()
    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: stdout.read1(1 << 20), b""))
    wall = time.perf_counter() - start
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or lines < data.count(b"\n"):
        raise SystemExit(f"{argv}: exit {status}, {lines} lines")
    cpu = usage.ru_utime + usage.ru_stime - at_ready[0]
    return Sample(wall, cpu, usage.ru_nvcsw - at_ready[1], usage.ru_nivcsw - at_ready[2])


def _usage(pid: int) -> tuple[float, int, int]:
    """CPU seconds and context switches of ``pid`` so far, from ``/proc``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return cpu, int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"])


def _feed(stdin: IO[bytes], data: bytes) -> None:
    stdin.write(data)
    stdin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", metavar="REV", help="also time serve at this git revision")
    args = parser.parse_args()
    jobs = args.jobs
    data = b"".join(b'{"op":"submit","job":{"value":%d}}\n' % i for i in range(jobs))
    with tempfile.TemporaryDirectory() as tmp:
        serve = [*SERVE, str(jobs)]
        contenders: dict[str, tuple[list[str], Path | None]] = {
            "stepline": (serve, SRC),
            "floor": (FLOOR, None),
        }
        if args.against:
            contenders[f"stepline@{args.against}"] = (serve, export_src(args.against, Path(tmp)))
        samples: dict[str, list[Sample]] = {name: [] for name in contenders}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, (argv, src) in contenders.items():
                samples[name].append(run_once(argv, src, data))
        report(jobs, samples, (load, os.getloadavg()[0]))


def report(jobs: int, samples: dict[str, list[Sample]], load: tuple[float, float]) -> None:
    rounds = len(samples["stepline"])
    print(f"{jobs:,} trivial jobs, {rounds} rounds, load {load[0]:.1f}->{load[1]:.1f}")
    for name, runs in samples.items():
        rate = jobs / statistics.median(s.wall for s in runs)
        cpu = statistics.median(s.cpu for s in runs) / jobs * 1e6
        vol = statistics.median(s.voluntary for s in runs) * 1000 / jobs
        invol = statistics.median(s.involuntary for s in runs) * 1000 / jobs
        print(
            f"  {name:22s} {rate:9,.0f} jobs/s  CPU {cpu:5.1f} us/job  "
            f"switches per 1,000 jobs: {vol:.2f} voluntary, {invol:.1f} involuntary"
        )
    for name, runs in samples.items():
        if name != "stepline":
            ratios = [o.wall / s.wall for s, o in zip(samples["stepline"], runs, strict=True)]
            rounds = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"  stepline / {name}: {statistics.median(ratios):.2f}x paired ({rounds})")


if __name__ == "__main__":
    main()
