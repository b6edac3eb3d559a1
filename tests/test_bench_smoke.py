"""Smoke test for the benchmark suite: ``bench/run.py --quick`` runs and reports every scenario.

It checks that the benchmark *works* — every scenario ran, verified its own output, and produced
finite numbers — never how fast stepline is: the targets belong in the report, and asserting
them on a shared 2-core machine would make the suite flaky. Marked ``e2e`` (it spawns the real
``stepline serve`` many times) and part of the default run; the quick variant takes 15-30 s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"
SCENARIOS = {"trivial", "process", "cancel", "memory", "startup"}
NUMBERS = ("stepline", "baseline", "ratio")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_benchmark_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "scenario" in proc.stdout  # the table was printed

    report = json.loads(out.read_text())
    assert report["variant"] == "quick"
    assert set(report["scenarios"]) == SCENARIOS
    assert all(entry["error"] is None for entry in report["scenarios"].values())
    assert {row["scenario"] for row in report["results"]} == SCENARIOS
    for row in report["results"]:
        assert all(is_number(row[key]) for key in NUMBERS), row
        assert row["stepline"] > 0, row
        assert row["baseline"] > 0, row
    assert report["machine"]["nproc"] >= 1
    assert report["machine"]["python"]
