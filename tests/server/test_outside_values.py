"""Values that come from outside a job's spec obey the limits the validator puts on ``value``.

An HTTP response is decoded into the step's output, and from there it reaches ``finished``,
``status`` and the ``--state`` file. JSON nested deeper than orjson can encode (255 levels) used
to make ``finished`` say ``succeeded`` with an ``internal`` error, strip ``jobs`` from every later
``status`` and break the store. Such a response now fails its step with ``invalid_output``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ..driver import lifecycle_ok, serve
from ..http_server import Answer, HttpServer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "state"])
async def test_a_deeply_nested_response_fails_its_step_and_harms_nothing(
    tmp_path: Path, durable: bool
) -> None:
    deep = "[" * 1000 + "]" * 1000  # orjson parses up to 1024 levels, but encodes only 255
    args = ("--state", str(tmp_path / "state.db")) if durable else ()
    with HttpServer() as server:
        bad = server.script("/deep", Answer(text=deep, content_type="application/json"))
        good = server.script("/ok", Answer(200, {"nested": [[[1]]]}))
        async with serve(*args) as d:
            with trio.fail_after(30):
                await d.send({"op": "submit", "job": {"http": {"url": bad}}, "id": "bad"})
                bad_id = (await d.wait_for("accepted", id="bad"))["job"]
                failed = await d.wait_for("finished", job=bad_id)
                await d.send({"op": "submit", "job": {"http": {"url": good}}, "id": "ok"})
                ok_id = (await d.wait_for("accepted", id="ok"))["job"]
                succeeded = await d.wait_for("finished", job=ok_id)
                await d.send({"op": "status", "id": "st"})
                status = await d.wait_for("status", id="st")
                await d.close_stdin()
                rest = await d.rest()
            assert await d.proc.wait() == 0
    assert failed["state"] == "failed", failed
    assert failed["error"]["type"] == "invalid_output", failed
    assert "nested deeper than 64 levels" in failed["error"]["message"]
    assert failed["error"]["step"] == "steps[0]"
    assert succeeded["state"] == "succeeded", succeeded
    assert succeeded["output"]["body"] == {"nested": [[[1]]]}
    records = {r["job"]: r for r in status["jobs"]}
    assert records[bad_id]["state"] == "failed"
    assert records[ok_id]["output"]["body"] == {"nested": [[[1]]]}
    assert rest[-1]["event"] == "bye"
    lifecycle_ok(d.events)
