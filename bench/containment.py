"""What containment costs per ``run`` step: each way of holding a step against no containment.

    python bench/containment.py                 # 2,000 steps a round, 5 rounds (a few minutes)
    python bench/containment.py --jobs 500 --rounds 3 --sandbox-jobs 100

Modes, each ``stepline serve --workers 8`` running ``{"run": ["true"]}`` jobs:

* ``plain``: stepline as it was before containment (the parent of the commit that added
  ``runners/_tree.py``, taken from git into a temporary directory): process groups only.
* ``marker``: this checkout with ``STEPLINE_CGROUPS=0``: process group, environment marker,
  subreaper, guardian.
* ``default``: this checkout as it starts by default (the report says what it found: a cgroup
  only for steps with memory/processes limits, so here the same as ``marker``).
* ``cgroup``: ``STEPLINE_CGROUPS=1``: a cgroup for every step (empty ones pooled), the spawner
  thread stepping into it for the fork where the machine has cgroup v1.
* ``cgroup+limits``: the default, each step with ``memory`` and ``processes`` limits (a fresh
  cgroup per step, limits written).
* ``sandbox``: ``"runner": "sandbox"`` (bubblewrap), on fewer jobs (it is much slower).

Rounds alternate between the modes (this VM's speed drifts within minutes; see
``scenarios.alternate``). Per mode: the median wall time per step (8 at once) and the median CPU
time per step (stepline and every process it started: ``RUSAGE_CHILDREN``), and each against
``plain`` as a ratio of medians. The last lines say whether the issue's budget (process-job
throughput with containment within 10 % of before) holds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="steps a round per local mode")
    parser.add_argument("--sandbox-jobs", type=int, default=200, help="steps a sandbox round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if shutil.which("bwrap") is None:
        print("no bwrap on PATH: the sandbox mode is left out", file=sys.stderr)
    with plain_source() as plain:
        modes = _modes(plain, args.jobs, args.sandbox_jobs)
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
        for _ in range(args.rounds):
            for name, (src, env, job, jobs) in modes.items():
                figures[name].append(run_round(src, env, job, jobs))
    report = summarise(figures)
    report["holding"] = describe_containment()
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _modes(plain: Path, jobs: int, sandbox_jobs: int) -> dict[str, Any]:
    true: dict[str, Any] = {"run": ["true"]}
    limited = {**true, "limits": {"memory": "256M", "processes": 64}}
    modes: dict[str, Any] = {
        "plain": (plain, {}, true, jobs),
        "marker": (SRC, {"STEPLINE_CGROUPS": "0"}, true, jobs),
        "default": (SRC, {}, true, jobs),
        "cgroup": (SRC, {"STEPLINE_CGROUPS": "1"}, true, jobs),
        "cgroup+limits": (SRC, {}, limited, jobs),
    }
    if shutil.which("bwrap") is not None:
        modes["sandbox"] = (SRC, {}, {**true, "runner": "sandbox"}, sandbox_jobs)
    return modes


@contextmanager
def plain_source() -> Iterator[Path]:
    """``src/`` of stepline before containment, extracted from git into a temporary directory."""
    added = _git(
        "log", "--format=%H", "--diff-filter=A", "-1", "--", "src/stepline/runners/_tree.py"
    )
    with tempfile.TemporaryDirectory(prefix="stepline-plain-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", f"{added}^", "src"],
            check=True,
            capture_output=True,
        ).stdout
        archive_path = Path(tmp) / "src.tar"
        archive_path.write_bytes(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / "src"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def run_round(
    src: Path, extra_env: dict[str, str], job: dict[str, Any], jobs: int
) -> tuple[float, float]:
    """One ``stepline serve`` run of ``jobs`` copies of ``job``: (wall s, CPU s) per step."""
    env = {**os.environ, "PYTHONPATH": str(src), **extra_env}
    env.setdefault("STEPLINE_CGROUPS", "")
    if not env["STEPLINE_CGROUPS"]:
        del env["STEPLINE_CGROUPS"]
    data = b"".join(json.dumps({"op": "submit", "job": job}).encode() + b"\n" for _ in range(jobs))
    argv = [sys.executable, "-m", "stepline", "serve", "--workers", "8", "--queue", str(jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        [*argv, "--heartbeat", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdout.readline()  # ready
    start = time.perf_counter()
    proc.stdin.write(data)
    proc.stdin.close()
    out = proc.stdout.read()
    wall = time.perf_counter() - start
    proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    succeeded = out.count(b'"state":"succeeded"')
    if succeeded != jobs:
        raise SystemExit(f"{succeeded} of {jobs} jobs succeeded: {out[-600:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall / jobs, cpu / jobs


def summarise(figures: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    medians = {
        name: (statistics.median(w for w, _ in rounds), statistics.median(c for _, c in rounds))
        for name, rounds in figures.items()
    }
    plain_wall, plain_cpu = medians["plain"]
    rows = {
        name: {
            "wall_us_per_step": wall * 1e6,
            "cpu_us_per_step": cpu * 1e6,
            "steps_per_s": 1 / wall,
            "throughput_vs_plain": plain_wall / wall,
            "cpu_vs_plain": cpu / plain_cpu,
        }
        for name, (wall, cpu) in medians.items()
    }
    return {"rounds": len(figures["plain"]), "modes": rows}


def describe_containment() -> str:
    """What this checkout holds steps with here (cgroup v1/v2 or none), as serve would."""
    code = (
        "from stepline.runners._tree import shared_containment as s; c = s(); "
        "print(c.description); c.close()"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return done.stdout.strip() or done.stderr.strip()


def print_report(report: dict[str, Any]) -> None:
    print(f"containment here: {report['holding']}; median of {report['rounds']} rounds")
    head = ("steps/s", 9), ("wall us", 10), ("cpu us", 10), ("thru vs plain", 15)
    print(f"{'mode':<15}" + "".join(f"{h:>{w}}" for h, w in head) + f"{'cpu vs plain':>14}")
    for name, row in report["modes"].items():
        print(
            f"{name:<15}{row['steps_per_s']:>9.0f}{row['wall_us_per_step']:>10.0f}"
            f"{row['cpu_us_per_step']:>10.0f}{row['throughput_vs_plain']:>14.2f}x"
            f"{row['cpu_vs_plain']:>13.2f}x"
        )
    for name in ("default", "marker", "cgroup"):
        ratio = report["modes"][name]["throughput_vs_plain"]
        verdict = "within" if ratio >= 0.9 else "NOT within"
        print(f"{name}: throughput {ratio:.2f}x of plain, {verdict} the 10 % budget")


if __name__ == "__main__":
    sys.exit(main())
