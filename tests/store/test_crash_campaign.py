"""Crash campaigns against the real CLI (``bench/crash_soak.py``): random SIGKILLs while jobs are
submitted, cancelled and finished, under each ``--on-restart`` policy; every guarantee of
docs/state.md is checked over the whole history. The soak script runs many more cycles."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.e2e

SOAK = Path(__file__).resolve().parents[2] / "bench" / "crash_soak.py"
CYCLES = 50  # per policy: 100 killed runs in all


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("policy", ["rerun", "fail"])
def test_random_sigkills_break_no_guarantee(tmp_path: Path, policy: str) -> None:
    soak = load_soak()
    bad, stats = soak.campaign(tmp_path / "state.db", policy, CYCLES, seed=3)
    assert stats["accepted"] > CYCLES  # the campaign really worked the server
    assert {name: count for name, count in bad.items() if count} == {}, stats
