"""What a rescue pass decides for the stuck jobs it found, without a database: rerun while
rescues are left under ``--on-restart rerun``, else fail with error type ``interrupted``; each
submitter is told with ``recovered`` (and a failed job's ``finished``) carrying its submit's id.
The writes themselves run against a real PostgreSQL in test_nodes.py and test_partitions.py."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("psycopg", reason="psycopg is not installed (the test extra)")

from stepline.cluster._lease import plan_rescue  # needs psycopg: after the skip
from stepline.cluster._node import MAX_RESCUES  # likewise

REQUEST = b'{"op":"submit","id":"r7","job":{"value":1}}'


def lines(plan_events: list[tuple[int, bytes]]) -> list[tuple[int, dict[str, object]]]:
    out = []
    for node, line in plan_events:
        event = json.loads(line)
        del event["ts"]
        out.append((node, event))
    return out


def test_rerun_while_rescues_are_left() -> None:
    plan = plan_rescue([(12, 3, 5, MAX_RESCUES - 1, 0.5, REQUEST)], "rerun")
    assert (plan.rerun, plan.failed) == ([12], [])
    recovered = {"event": "recovered", "job": "j12", "state": "running", "action": "rerun"}
    assert lines(plan.events) == [(3, {**recovered, "node": 5, "id": "r7"})]


@pytest.mark.parametrize(
    ("on_restart", "rescues", "why"),
    [
        ("fail", 0, "node 5 stopped while the job was running (--on-restart fail)"),
        (
            "rerun",
            MAX_RESCUES,
            f"node 5 stopped while the job was running; rescued {MAX_RESCUES} times already",
        ),
    ],
)
def test_fail_interrupted(on_restart: str, rescues: int, why: str) -> None:
    plan = plan_rescue([(12, 3, 5, rescues, None, None)], on_restart)
    error = {"type": "interrupted", "message": why, "step": ""}
    assert plan.rerun == []
    assert [(n, s, json.loads(e)) for n, s, e in plan.failed] == [(12, 0.0, error)]
    assert lines(plan.events) == [
        (
            3,
            {"event": "recovered", "job": "j12", "state": "running", "action": "failed", "node": 5},
        ),
        (3, {"event": "finished", "job": "j12", "state": "failed", "elapsed": 0.0, "error": error}),
    ]


def test_nothing_stuck_plans_nothing() -> None:
    plan = plan_rescue([], "rerun")
    assert (plan.rerun, plan.failed, plan.events) == ([], [], [])
