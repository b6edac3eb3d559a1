"""The soak test in miniature: 20,000 jobs through ``stepline serve``, memory flat past ``--keep``.

``bench/soak.py`` does the work (and explains the method: RSS is read only at idle checkpoints,
so every reading sees the same retained state and growth means retention, not traffic). With
``--keep 1000`` the retention limit is reached after 5 % of the jobs; between the halfway mark
and the end, RSS must not grow by more than 10 MiB. A leak of even 1 KiB per job would add about
10 MiB over those 10,000 jobs; the full soak (a million jobs) sees leaks a hundred times smaller.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"
MiB = 1 << 20


def test_twenty_thousand_jobs_in_flat_memory() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--jobs",
            "20000",
            "--checkpoints",
            "4",
            "--keep",
            "1000",
            "--max-growth-mib",
            "10",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["finished"] == summary["succeeded"] == 20000, summary
    assert summary["bye"], summary
    assert summary["exit_status"] == 0, proc.stderr
    assert summary["writer_error"] is None, summary
    growth = summary["growth_second_half"]
    assert growth < 10 * MiB, f"RSS grew {growth / MiB:.1f} MiB after --keep was reached"
    assert proc.returncode == 0, proc.stderr
