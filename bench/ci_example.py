"""examples/ci: the CI pipeline through ``stepline run`` against its Makefile through ``make -j4``.

    python bench/ci_example.py               # 5 rounds each
    python bench/ci_example.py --rounds 1

Each round copies ``examples/ci/project`` to a fresh directory and runs the pipeline
(``stepline run --artifacts``) and the Makefile (``make -s -j4``) on it, alternating which goes
first so machine noise hits both alike; both must succeed. It reports, per tool, the median and
best wall time and the median CPU time of everything it started (user + system of the children):
the work itself is pytest and ruff, so the difference is what each runner adds. Self-contained
on purpose: the main benchmark's files belong to their own owner.

make runs each recipe under ``setsid``, as stepline starts each step in a session of its own:
with the kernel's autogroup scheduling a session is a CPU group, and on a loaded machine make's
recipes, all in make's one session, shared one group's share (51 s against 20 s, the same CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CI = Path(__file__).resolve().parent.parent / "examples" / "ci"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(tool: str, work: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``tool`` on a fresh copy of the project."""
    src = work / f"{tool}-project"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(CI / "project", src)
    if tool == "stepline":
        params = json.dumps({"src": str(src), "python": sys.executable})
        argv = [sys.executable, "-m", "stepline", "run", "--artifacts", str(work / "kept")]
        argv += ["--params", params, str(CI / "pipeline.json")]
    else:
        argv = ["make", "-s", "-C", str(src), "-f", str(CI / "Makefile"), "-j4"]
        argv += [f"PY={sys.executable}", f"OUT={work / 'out'}"]
        argv += ["SHELL=/usr/bin/setsid", ".SHELLFLAGS=-w /bin/sh -c"]  # see the docstring
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{done.stdout}\n{done.stderr}")
    return wall, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"stepline": [], "make": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            order = ["stepline", "make"] if i % 2 == 0 else ["make", "stepline"]
            for tool in order:
                times[tool].append(run_once(tool, Path(tmp)))
    print(f"{'runner':<10} {'wall median':>12} {'wall best':>10} {'cpu median':>11}")
    for tool, rows in times.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        median, best, cpu = statistics.median(walls), min(walls), statistics.median(cpus)
        print(f"{tool:<10} {median:>11.2f}s {best:>9.2f}s {cpu:>10.2f}s")


if __name__ == "__main__":
    main()
