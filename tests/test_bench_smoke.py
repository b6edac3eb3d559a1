"""Smoke test for the benchmark suite: ``bench/run.py --quick`` runs and reports every scenario;
and the statistics the throughput scenarios report (alternated rounds, paired ratios).

It checks that the benchmark *works* — every scenario ran, verified its own output, and produced
finite numbers — never how fast stepline is: the targets belong in the report, and asserting
them on a shared 2-core machine would make the suite flaky. Marked ``e2e`` (it spawns the real
``stepline serve`` many times) and part of the default run; the quick variant takes 15-30 s.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"
STATE_OVERHEAD = RUN.parent / "state_overhead.py"
SCENARIOS = {"trivial", "process", "durable", "cancel", "memory", "startup"}
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


@pytest.fixture
def scenarios(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``bench/scenarios.py``, imported as ``run.py`` imports it (``bench/`` on ``sys.path``)."""
    monkeypatch.syspath_prepend(str(RUN.parent))
    return importlib.import_module("scenarios")


def test_alternate_takes_turns_and_keeps_every_figure(scenarios: Any) -> None:
    calls: list[str] = []

    def measure(name: str, value: float) -> Callable[[], float]:
        def run() -> float:
            calls.append(name)
            return value

        return run

    figures = scenarios.alternate(3, {"a": measure("a", 1.0), "b": measure("b", 2.0)})
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert figures == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}


def test_paired_speedup_is_the_median_of_each_rounds_ratio(scenarios: Any) -> None:
    # Round 1's baseline was slowed by outside load; round 3 was slow for both. Paired, the
    # rounds say 2.0x, 1.0x, 1.0x: 1.0x. The ratio of the medians (4.0 s / 2.0 s) would say 2.0x.
    stepline_s = [2.0, 1.0, 4.0]
    baseline_s = [4.0, 1.0, 4.0]
    assert scenarios.paired_speedup(stepline_s, baseline_s) == 1.0
    assert scenarios.paired_speedup([1.0, 1.0, 1.0], [2.0, 2.0, 3.0]) == 2.0


def test_the_nursery_floors_results_are_checked(scenarios: Any) -> None:
    ready, bye = {"event": "ready"}, {"event": "bye"}
    result = {"event": "finished", "state": "succeeded"}
    scenarios.check_results([ready, result, result, bye], 2)
    with pytest.raises(scenarios.BenchError):
        scenarios.check_results([ready, result, bye], 2)  # a result went missing
    with pytest.raises(scenarios.BenchError):
        scenarios.check_results([ready, result, {**result, "state": "failed"}, bye], 2)


def test_state_overhead_takes_turns_against_a_revision() -> None:
    """README.md, Performance: ``state_overhead.py --against REV`` in its smallest form (HEAD
    stands in for the older revision: any revision git can export will do)."""
    argv = [sys.executable, str(STATE_OVERHEAD), "--jobs", "30", "--rounds", "2", "--queue", "30"]
    proc = subprocess.run(
        [*argv, "--against", "HEAD"], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "--queue 30 (2 rounds" in proc.stdout
    assert "--state / in-memory:" in proc.stdout
    assert "--state / --state@HEAD:" in proc.stdout


def test_process_jobs_splits_the_cpu_by_thread_against_a_revision() -> None:
    """NOTES.md, Performance: ``process_jobs.py --against REV`` in its smallest form (HEAD stands
    in for the older revision), floors included."""
    script = RUN.parent / "process_jobs.py"
    argv = [sys.executable, str(script), "--jobs", "20", "--rounds", "2", "--against", "HEAD"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "20 x true, 8 workers, 2 rounds" in proc.stdout
    assert "loop" in proc.stdout
    assert "other threads" in proc.stdout
    assert "switches/job loop" in proc.stdout
    assert "waiting for a CPU us/job loop" in proc.stdout
    assert "this against HEAD:" in proc.stdout
    assert "vs pool" in proc.stdout
