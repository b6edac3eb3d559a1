"""``POST /jobs`` in batches: the body decoded in the front's process, the submits admitted by the
executor as stdin admits them, a whole batch answered at once, a full queue holding the answer."""

from __future__ import annotations

import orjson
import pytest
import trio

from stepline.web._admit import Admission
from stepline.web._errors import ApiError
from stepline.web._metrics import Metrics
from stepline.web._share import LoopShare
from stepline.web._submits import submit_line
from stepline.wire._plain import decode_plain_submit

from ..conftest import running_executor
from .test_rest import http_server, problem


def test_a_body_becomes_the_submit_line_a_stdin_driver_would_write() -> None:
    line = submit_line(b'{"job": {"value": 1}, "name": "n"}', 100)
    assert orjson.loads(line) == {"job": {"value": 1}, "name": "n", "op": "submit"}
    plain = decode_plain_submit(line)
    assert plain is not None
    assert (plain.job, plain.name, plain.request_id) == ({"value": 1}, "n", None)
    templated = submit_line(b'{"template": "t", "params": {"x": 1}}', 100)
    assert decode_plain_submit(templated) is None  # the strict decoder's, in the executor too


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "bad_json"),
        (b"", "bad_command"),  # no body: not an object
        (b"[1]", "bad_command"),
        (b'{"job": {}, "id": 1}', "bad_command"),
        (b'{"jbo": {}}', "bad_command"),
        (b'{"job": {}, "name": 5}', "bad_command"),
        (b'{"template": "t", "params": [1]}', "bad_command"),
        (b'{"job": "' + b"x" * 100 + b'"}', "line_too_long"),
    ],
)
def test_a_body_the_protocol_refuses_is_refused_in_the_fronts_process(
    body: bytes, code: str
) -> None:
    with pytest.raises(ApiError) as refused:
        submit_line(body, 100)
    assert refused.value.code == code


def _line(job: object) -> bytes:
    return orjson.dumps({"op": "submit", "job": job})


async def test_a_batch_is_admitted_in_order_with_each_refusal_in_its_place() -> None:
    async with running_executor(workers=1) as (ex, out):
        metrics = Metrics(ex)
        admission = Admission(ex, LoopShare(), metrics)
        lines = [
            _line({"value": 1}),
            _line({"steps": [{"sleep": -1}]}),
            orjson.dumps({"op": "submit", "template": "nope"}),
            _line({"value": 2}),
        ]
        results = await admission.admit(lines, {"400": 2})
        assert results[0] == "j1"
        assert results[1][0] == "invalid_job"
        assert results[2][0] == "unknown_template"
        assert results[3] == "j2"
        accepted = [e for e in out.events if e["event"] == "accepted"]
        assert [(e["job"], "id" in e) for e in accepted] == [("j1", False), ("j2", False)]
        rendered = metrics.render().decode()
        assert 'stepline_http_requests_total{code="202"} 2.0' in rendered
        assert 'stepline_http_requests_total{code="400"} 2.0' in rendered
        assert 'stepline_http_requests_total{code="422"} 1.0' in rendered
        assert 'stepline_http_requests_total{code="404"} 1.0' in rendered


async def test_a_full_queue_holds_the_batchs_answer_until_there_is_room() -> None:
    async with running_executor(workers=1, queue_size=1) as (ex, out):
        admission = Admission(ex, LoopShare(), Metrics(ex))
        first = (await admission.admit([_line({"sleep": 30})], {}))[0]
        await out.wait_for(lambda e: e["event"] == "started")
        assert await admission.admit([_line({"value": "queued"})], {}) == ["j2"]
        answers: list[object] = []

        async def admit() -> None:
            answers.append(await admission.admit([_line({"value": 3}), _line({"value": 4})], {}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(admit)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # waiting for room: no answer, nothing accepted
            assert [e["job"] for e in out.events if e["event"] == "accepted"] == ["j1", "j2"]
            ex.cancel(str(first))
        assert answers == [["j3", "j4"]]


async def test_concurrent_submits_over_http_each_get_their_own_job() -> None:
    async with http_server("--workers", "2") as (driver, client):
        bodies = [
            {"job": {"value": i}} if i % 5 else {"job": {"steps": [{"sleep": -1}]}}
            for i in range(60)
        ]
        answers: dict[int, tuple[int, dict[str, object]]] = {}

        async def post(i: int) -> None:
            response = await client.post("/jobs", json=bodies[i])
            answers[i] = (response.status_code, response.json())

        async with trio.open_nursery() as nursery:
            for i in range(len(bodies)):
                nursery.start_soon(post, i)
        ids = [answers[i][1]["job"] for i in range(60) if i % 5]
        assert all(answers[i][0] == 202 for i in range(60) if i % 5)
        assert all(answers[i][1]["code"] == "invalid_job" for i in range(0, 60, 5))
        assert len(set(ids)) == len(ids) == 48
        outputs: dict[object, object] = {}
        while len(outputs) < len(ids):
            event = await driver.wait_for("finished")
            outputs[event["job"]] = event["output"]
        assert all(outputs[answers[i][1]["job"]] == i for i in range(60) if i % 5)
        problem(await client.post("/jobs", content=b"{nope"), 400, "bad_json")
        # Refused in the front's process, counted by the executor's with the next batch: its
        # answer comes after the count.
        assert (await client.post("/jobs", json={"job": {"value": 0}})).status_code == 202
        metrics = (await client.get("/metrics")).text
        assert 'stepline_http_requests_total{code="202"} 49.0' in metrics
        assert 'stepline_http_requests_total{code="422"} 12.0' in metrics
        assert 'stepline_http_requests_total{code="400"} 1.0' in metrics
