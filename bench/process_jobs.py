"""Where a process job's time goes: ``{"run": ["true"]}`` jobs, stepline's CPU split by thread.

    python bench/process_jobs.py                          # 2,000 jobs, 5 rounds
    python bench/process_jobs.py --jobs 1000 --rounds 7 --against 5e590d5

Each round runs, taking turns: this checkout's ``stepline serve --workers 8`` (and with
``--against REV`` that git revision's ``src/``, exported with ``git archive``), the thread-pool
floor (``floor_pool.py``) and ``xargs -P8``. For stepline it reports the wall time from the first
submit written to the last ``finished`` read, and CPU per job read from ``/proc`` at that moment
(start-up excluded by a reading at ``ready``): the event loop's thread, stepline's other threads
(spawners), and the children it reaped; each side's context switches per job (a thread
switches out for the GIL, a ``vfork``, a wait) and its time runnable but waiting for a CPU.
Ratios are paired (each round's own ratio, then the median), beside the load average, as in
``bench/run.py``.
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
from typing import IO

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
BENCH = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def _times(pid: int, tid: int | None = None) -> tuple[float, float, float]:
    """(this thread or all threads' CPU, children's CPU) in seconds, from ``/proc``."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
    return utime + stime, cutime + cstime, 0.0


def _cpu(pid: int) -> tuple[float, float, float]:
    """(loop thread, all threads, reaped children) CPU seconds of ``pid``."""
    loop, _, _ = _times(pid, pid)
    every, children, _ = _times(pid)
    return loop, every, children


def _thread_counts(pid: int) -> dict[int, tuple[int, int]]:
    """Per thread of ``pid``, from ``/proc``: context switches (voluntary and not), and the
    nanoseconds it waited, runnable, for a CPU (``schedstat``). A thread waiting for the GIL, a
    ``vfork`` or a ``poll`` switches out: per job, the steady count of the threads' hand-offs
    (NOTES.md, Performance, "Session 9: process jobs, the spawners"); the wait for a CPU is
    what the children's share of the two cores costs each thread ("Session 10")."""
    counts: dict[int, tuple[int, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                lines = [line for line in f if "ctxt_switches:" in line]
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                waited = int(f.read().split()[1])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        counts[int(tid)] = (sum(int(line.split()[1]) for line in lines), waited)
    return counts


def run_stepline(src: Path, jobs: int, env_extra: dict[str, str]) -> dict[str, float]:
    argv = [sys.executable, "-m", "stepline", "serve", "--workers", "8", "--heartbeat", "0"]
    argv += ["--queue", str(jobs)]
    data = b'{"op":"submit","job":{"run":["true"]}}\n' * jobs
    paths = [str(src), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **env_extra}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None
    assert stdout is not None
    if b'"ready"' not in stdout.readline():
        raise SystemExit("no ready line")
    before, switched = _cpu(proc.pid), _thread_counts(proc.pid)
    start = time.perf_counter()
    threading.Thread(target=_feed, args=(stdin, data), daemon=True).start()
    done = 0
    while done < jobs:
        line = stdout.readline()
        if not line:
            raise SystemExit("stepline ended early")
        if b'"finished"' in line:
            if b'"succeeded"' not in line:
                raise SystemExit(f"a job did not succeed: {line!r}")
            done += 1
    elapsed = time.perf_counter() - start
    after, switches = _cpu(proc.pid), _thread_counts(proc.pid)
    for tid, (count, waited) in switched.items():
        now = switches.get(tid, (count, waited))
        switches[tid] = (now[0] - count, now[1] - waited)
    stdin.close()
    stdout.read()
    proc.wait()
    loop, every, children = (1e6 * (a - b) / jobs for a, b in zip(after, before, strict=True))
    loop_switches, loop_waited = switches.pop(proc.pid, (0, 0))
    return {
        "s": elapsed,
        "loop_us": loop,
        "threads_us": every - loop,
        "children_us": children,
        "loop_switches": loop_switches / jobs,
        "threads_switches": sum(c for c, _ in switches.values()) / jobs,
        "loop_cpu_wait_us": loop_waited / 1e3 / jobs,
        "threads_cpu_wait_us": sum(w for _, w in switches.values()) / 1e3 / jobs,
    }


def _feed(stdin: IO[bytes], data: bytes) -> None:
    stdin.write(data)
    stdin.flush()


def run_pool(jobs: int) -> float:
    out = subprocess.run(
        [sys.executable, str(BENCH / "floor_pool.py"), str(jobs), "8"],
        capture_output=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


def run_xargs(jobs: int) -> float:
    with tempfile.TemporaryFile() as lines:
        lines.write(b"x\n" * jobs)
        lines.seek(0)
        start = time.perf_counter()
        subprocess.run(["xargs", "-P8", "-n1", "true"], stdin=lines, check=True)
        return time.perf_counter() - start


def export_src(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", help="a git revision to time beside this checkout")
    parser.add_argument("--no-floors", action="store_true", help="stepline contenders only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {"this": SRC}
        if args.against:
            contenders[args.against] = export_src(args.against, Path(tmp))
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        pool: list[float] = []
        xargs: list[float] = []
        load = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, src in contenders.items():
                rows[name].append(run_stepline(src, args.jobs, {}))
            if not args.no_floors:
                pool.append(run_pool(args.jobs))
                xargs.append(run_xargs(args.jobs))
        load.append(os.getloadavg()[0])
    med = statistics.median
    print(f"{args.jobs} x true, 8 workers, {args.rounds} rounds, load {load[0]:.1f}-{load[1]:.1f}")
    for name, figures in rows.items():
        rate = med(args.jobs / f["s"] for f in figures)
        keys = ("loop_us", "threads_us", "children_us", "loop_switches", "threads_switches")
        keys += ("loop_cpu_wait_us", "threads_cpu_wait_us")
        cpu = {k: med(f[k] for f in figures) for k in keys}
        line = f"{name:>10}: {rate:7.0f}/s  loop {cpu['loop_us']:5.0f} us/job"
        line += f"  other threads {cpu['threads_us']:5.0f}  children {cpu['children_us']:5.0f}"
        line += f"  switches/job loop {cpu['loop_switches']:.1f}"
        line += f" threads {cpu['threads_switches']:.1f}"
        line += f"  waiting for a CPU us/job loop {cpu['loop_cpu_wait_us']:.0f}"
        line += f" threads {cpu['threads_cpu_wait_us']:.0f}"
        if pool:
            vs_pool = med(p / f["s"] for p, f in zip(pool, figures, strict=True))
            vs_xargs = med(x / f["s"] for x, f in zip(xargs, figures, strict=True))
            line += f"  vs pool {vs_pool:.2f}x  vs xargs {vs_xargs:.2f}x"
        print(line)
    if len(rows) == 2:
        this, other = rows.values()
        paired = med(o["s"] / t["s"] for t, o in zip(this, other, strict=True))
        print(f"this against {args.against}: {paired:.2f}x (paired)")
    if pool:
        pool_rate, xargs_rate = med(args.jobs / p for p in pool), med(args.jobs / x for x in xargs)
        print(f"pool {pool_rate:.0f}/s, xargs {xargs_rate:.0f}/s")


if __name__ == "__main__":
    main()
