"""``stepline demo --cluster`` runs as narrated (cluster.md, "The demo"): three nodes, one
killed, its jobs rescued."""

from __future__ import annotations

import subprocess

import pytest

from tests.cluster.nodes import STEPLINE
from tests.driver import ENV

pytestmark = pytest.mark.e2e


def test_the_cluster_demo_kills_a_node_and_narrates_the_rescue(cluster_url):
    done = subprocess.run(
        [*STEPLINE, "demo", "--cluster", "--state", cluster_url],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "✓ all six succeeded" in done.stderr
    assert "was rescued" in done.stderr
    assert '"event":"recovered"' in done.stderr
    assert '"event":"bye"' in done.stderr
