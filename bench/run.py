"""Run every benchmark scenario, print a table, and write the results as JSON.

    python bench/run.py                  # the full run: about 5-10 minutes on 2 cores
    python bench/run.py --quick          # the small variant: under a minute
    python bench/run.py --only trivial   # one scenario (repeatable), e.g. while optimising

Scenarios (see ``scenarios.py``): trivial-job throughput against bare trio floors (an in-process
nursery, the loop with a channel per event, the tuned three-event loop; Huey's in-memory queue as
a peer when installed), process jobs against a ``ThreadPoolExecutor(8)`` of ``subprocess.run``
and ``xargs -P8``, ``--state`` against the same jobs without it, cancel latency against a
``ping`` round trip, memory per queued job and RSS over a long run, and start-up time against
``python -c pass``. Each reports stepline's figure, its baseline's, and the ratio, because on a
shared 2-core machine only the ratio is stable from run to run. The load average before and
after each scenario is printed under the table: the machine's other users are part of every
number.

A scenario that fails (a child crashed, jobs went missing) is reported and the others still
run; the exit status is then 1, so a broken benchmark cannot pass for a slow one.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness import BENCH, PYCACHE, REPO, SRC
from scenarios import FULL, QUICK, SCENARIOS, Outcome, Row, Sizes

COLUMNS = ("scenario", "stepline", "baseline", "ratio", "target", "met")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    report: dict[str, Any] = {
        "variant": "quick" if args.quick else "full",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sizes": sizes.__dict__,
        "machine": machine(),
        "stepline": stepline_info(),
        "scenarios": {},
        "results": [],
    }
    rows: list[Row] = []
    loads = []
    for name in args.only or list(SCENARIOS):
        before = os.getloadavg()[0]
        entry, outcome = run_scenario(name, sizes)
        entry["loadavg_1min"] = [before, os.getloadavg()[0]]
        loads.append(f"{name} {before:.1f}->{os.getloadavg()[0]:.1f}")
        report["scenarios"][name] = entry
        if outcome is not None:
            rows += outcome.rows
    report["results"] = [row.as_json() for row in rows]
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    print(render_table(rows), flush=True)
    print("load average (1 min) before->after: " + ", ".join(loads), flush=True)
    write_json(args.out, report)
    failed = [name for name, entry in report["scenarios"].items() if entry["error"]]
    print(f"\n{len(rows)} results in {report['duration_s']:.0f}s -> {args.out}", file=sys.stderr)
    if failed:
        print(f"FAILED scenarios: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON path")
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="run just this scenario"
    )
    return parser.parse_args(argv)


def run_scenario(name: str, sizes: Sizes) -> tuple[dict[str, Any], Outcome | None]:
    """Run one scenario; a failure is caught and recorded so the others still run."""
    print(f"[{name}] running...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        outcome = SCENARIOS[name](sizes)
    except Exception as exc:
        traceback.print_exc()
        seconds = round(time.perf_counter() - start, 2)
        return {"seconds": seconds, "error": f"{type(exc).__name__}: {exc}", "details": {}}, None
    seconds = round(time.perf_counter() - start, 2)
    print(f"[{name}] done in {seconds:.1f}s", file=sys.stderr, flush=True)
    return {"seconds": seconds, "error": None, "details": outcome.details}, outcome


# -- the table ----------------------------------------------------------------------------------


def render_table(rows: list[Row]) -> str:
    """An aligned plain-text table: numbers right-aligned, text left-aligned."""
    cells = [COLUMNS, *[table_cells(row) for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    right = {1, 2, 3}
    lines = []
    for index, line in enumerate(cells):
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    if any(row.paired_ratio is not None for row in rows):
        lines.append("(median of N: the figures are medians over N rounds taken in turns, and the")
        lines.append(" ratio is the median of the rounds' own ratios)")
    return "\n".join(lines)


def table_cells(row: Row) -> tuple[str, ...]:
    met = "—" if row.met is None else ("yes" if row.met else "NO")
    baseline = f"{row.baseline_name} {fmt(row.baseline, row.unit)}"
    return (row.label, fmt(row.stepline, row.unit), baseline, f"{row.ratio:.2f}x", row.target, met)


def fmt(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value / 1024:,.2f} KiB" if value < 1024 * 1024 else f"{value / 2**20:,.1f} MiB"
    return f"{value:g} {unit}"


# -- the JSON -----------------------------------------------------------------------------------


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def machine() -> dict[str, Any]:
    """What the numbers were measured on; the load average says how quiet the machine was."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "packages": {name: _version(name) for name in ("trio", "orjson", "attrs", "cattrs")},
    }


def stepline_info() -> dict[str, Any]:
    """Which code was measured: the working tree of ``src/``, which may differ from HEAD."""
    version_file = SRC / "stepline" / "_version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text())
    return {
        "version": match.group(1) if match else None,
        "src": str(SRC),
        "commit": _git("rev-parse", "HEAD"),
        "src_differs_from_commit": _src_differs(),
        "bytecode_cache": str(PYCACHE),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """Read-only git queries only: others commit in this repository while we run."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode in (0, 1) else None


def _src_differs() -> bool | None:
    """Whether ``src/`` has uncommitted changes. ``diff-index`` is plumbing: unlike ``git
    status`` it never rewrites the index, which other engineers' git commands may hold."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "diff-index", "--quiet", "HEAD", "--", "src"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: False, 1: True}.get(out.returncode)


if __name__ == "__main__":
    sys.exit(main())
