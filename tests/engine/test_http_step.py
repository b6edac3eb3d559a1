"""The `http` step against a real HTTP server on 127.0.0.1 (no mocked client).

These run on the real clock: trio's autojump clock would jump while a request waits on the
other thread's socket and fire timeouts at once (the same caveat as real subprocesses).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import trio

from stepline import InvalidJob
from stepline.spec._model import Http
from stepline.spec._outside import too_deep
from stepline.spec._validate import validate_job

from ..conftest import running_executor
from ..http_server import Answer, HttpServer, SilentServer, statuses


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as srv:
        yield srv


async def run_job(job: Any, **config: Any) -> dict[str, Any]:
    async with running_executor(**config) as (ex, out):
        record = await ex.submit(job)
        with trio.fail_after(5):
            return await out.finished(record.id)


async def test_get_json_is_decoded(server: HttpServer) -> None:
    url = server.script("/data", Answer(200, {"n": 1, "items": [1, 2]}, headers={"x-a": "b"}))
    finished = await run_job({"http": {"url": url}})
    assert finished["state"] == "succeeded", finished
    output = finished["output"]
    assert output["status"] == 200
    assert output["body"] == {"n": 1, "items": [1, 2]}
    assert output["headers"]["x-a"] == "b"
    assert server.received("/data")[0].method == "GET"


async def test_text_body_stays_text(server: HttpServer) -> None:
    url = server.script("/t", Answer(200, text="plain ünïcode"))
    finished = await run_job({"http": {"url": url}})
    assert finished["output"]["body"] == "plain ünïcode"


async def test_json_request_defaults_to_post_with_headers(server: HttpServer) -> None:
    url = server.script("/in", Answer(201, {"ok": True}))
    step = {"http": {"url": url, "json": {"x": "${params.x}"}, "headers": {"X-Token": "t"}}}
    finished = await run_job({"steps": [step], "params": {"x": 7}})
    assert finished["state"] == "succeeded", finished
    (request,) = server.received("/in")
    assert request.method == "POST"
    assert request.json() == {"x": 7}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-token"] == "t"
    assert request.headers["user-agent"].startswith("stepline/")


async def test_explicit_method_and_text_body(server: HttpServer) -> None:
    url = server.script("/p", Answer(200, {}))
    await run_job({"http": {"url": url, "method": "put", "body": "raw"}})
    (request,) = server.received("/p")
    assert (request.method, request.body) == ("PUT", b"raw")


async def test_unexpected_status_fails_with_http_status(server: HttpServer) -> None:
    url = server.script("/missing", Answer(404, {"error": "nope"}))
    finished = await run_job({"steps": [{"http": {"url": url}, "name": "fetch"}]})
    assert finished["state"] == "failed"
    error = finished["error"]
    assert error["type"] == "http_status"
    assert error["status"] == 404
    assert error["step"] == "steps[0]"
    assert error["name"] == "fetch"
    assert "nope" in error["body"]
    assert "404" in error["message"]


async def test_expect_accepts_listed_statuses_only(server: HttpServer) -> None:
    url = server.script("/gone", Answer(410, {"gone": True}))
    ok = await run_job({"http": {"url": url, "expect": [410]}})
    assert ok["state"] == "succeeded"
    assert ok["output"]["status"] == 410
    url = server.script("/fine", Answer(200, {}))
    bad = await run_job({"http": {"url": url, "expect": [204]}})
    assert bad["error"]["type"] == "http_status"


async def test_connection_error_fails_with_http_error() -> None:
    with HttpServer() as dead:
        url = dead.url("/x")  # the port is closed once the server is gone
    finished = await run_job({"http": {"url": url}})
    assert finished["state"] == "failed"
    assert finished["error"]["type"] == "http_error"
    assert "ConnectError" in finished["error"]["message"]


async def test_retry_modifier_retries_a_failed_request(server: HttpServer) -> None:
    url = server.script("/flaky", *statuses(503, 502, 200))
    finished = await run_job({"http": {"url": url}, "retry": {"attempts": 3, "backoff": 0.01}})
    assert finished["state"] == "succeeded", finished
    assert len(server.received("/flaky")) == 3


async def test_timeout_modifier_bounds_a_slow_request(server: HttpServer) -> None:
    url = server.script("/slow", Answer(200, {}, delay=10))
    start = trio.current_time()
    finished = await run_job({"http": {"url": url}, "timeout": 0.2})
    assert finished["error"]["type"] == "timeout"
    assert trio.current_time() - start < 2


async def test_cancel_interrupts_a_request(server: HttpServer) -> None:
    url = server.script("/slow", Answer(200, {}, delay=10))
    async with running_executor() as (ex, out):
        job = await ex.submit({"http": {"url": url}})
        with trio.fail_after(3):
            await out.wait_for(lambda e: e["event"] == "started")
            while not server.received("/slow"):
                await trio.sleep(0.01)
            ex.cancel(job.id)
            finished = await out.finished(job.id)
    assert finished["state"] == "cancelled"


async def test_body_is_capped(server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stepline.engine._http.BODY_CAP", 10)
    url = server.script("/big", Answer(200, {"data": "x" * 100}))
    finished = await run_job({"http": {"url": url}})
    output = finished["output"]
    assert output["truncated"] is True
    assert output["body"] == '{"data": "'  # a cut body is text, never half-parsed JSON


async def test_http_inside_par_with_other_steps(server: HttpServer) -> None:
    url = server.script("/a", Answer(200, [1]))
    finished = await run_job({"par": [{"http": {"url": url}}, {"value": 2}]})
    assert [finished["output"][0]["body"], finished["output"][1]] == [[1], 2]


@pytest.mark.parametrize(
    ("step", "path", "words"),
    [
        ({"http": "http://x"}, "steps[0].http", "expected an object"),
        ({"http": {}}, "steps[0].http", "missing 'url'"),
        ({"http": {"url": "ftp://x"}}, "steps[0].http.url", "http:// or https://"),
        ({"http": {"url": 5}}, "steps[0].http.url", "expected a string"),
        ({"http": {"url": "http://x", "verb": "GET"}}, "steps[0].http", "unknown key 'verb'"),
        ({"http": {"url": "http://x", "method": "BREW"}}, "steps[0].http.method", "one of"),
        ({"http": {"url": "http://x", "json": 1, "body": "b"}}, "steps[0].http", "at most one"),
        ({"http": {"url": "http://x", "expect": []}}, "steps[0].http.expect", "non-empty"),
        ({"http": {"url": "http://x", "expect": [99]}}, "steps[0].http.expect[0]", "at least"),
        ({"http": {"url": "http://x", "expect": [600]}}, "steps[0].http.expect[0]", "not an"),
        (
            {"http": {"url": "http://x", "headers": {"a": 1}}},
            "steps[0].http.headers.a",
            "expected a string",
        ),
        (
            {"http": {"url": "http://x", "headers": {"a": "b\nc"}}},
            "steps[0].http.headers.a",
            "CR, LF",
        ),
        ({"http": {"url": "http://x"}, "stdin": "x"}, "steps[0]", "unknown key 'stdin'"),
    ],
)
def test_validation_names_the_path(step: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(InvalidJob) as info:
        validate_job({"steps": [step]})
    assert info.value.path == path
    assert words in info.value.problem


def test_url_from_a_parameter() -> None:
    spec = validate_job({"http": {"url": "${params.u}/x"}}, params={"u": "https://h"})
    step = spec.body  # a bare step is the job's body
    assert isinstance(step, Http)
    assert step.url == "https://h/x"


@pytest.mark.parametrize(("levels", "state"), [(64, "succeeded"), (65, "failed")])
async def test_a_json_body_may_nest_as_deep_as_a_value(
    server: HttpServer, levels: int, state: str
) -> None:
    body = "[" * levels + "]" * levels
    url = server.script("/nested", Answer(text=body, content_type="application/problem+json"))
    finished = await run_job({"http": {"url": url}})
    assert finished["state"] == state, finished
    if state == "failed":
        assert finished["error"]["type"] == "invalid_output"
        assert "nested deeper than 64 levels" in finished["error"]["message"]
    else:
        assert orjson.dumps(finished["output"]["body"]) == body.encode()


def test_the_limit_is_the_validators() -> None:
    for levels in (64, 65):
        nested: Any = []
        for _ in range(levels - 1):
            nested = [nested]
        outside = too_deep(nested)
        try:
            validate_job({"value": nested})
            inside = None
        except InvalidJob as exc:
            inside = exc.problem
        assert outside == inside
    deep: Any = {}
    for _ in range(5000):  # far deeper than Python's recursion limit
        deep = {"k": deep}
    assert too_deep(deep) == "JSON nested deeper than 64 levels"


async def test_waiting_for_a_busy_host_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stepline.engine._http_client.HOST_CONNECTIONS", 2)
    monkeypatch.setattr("stepline.engine._http_client.POOL_WAIT", 0.2)
    with SilentServer() as dead:
        job = {"par": [{"http": {"url": dead.url(f"/{i}")}} for i in range(3)]}
        finished = await run_job(job)
        assert dead.accepted == 2
    error = finished["error"]
    assert error["type"] == "http_error", finished
    assert "HostBusy: no connection to http://127.0.0.1:" in error["message"]
    assert "within 0.2s: 2 requests to that host are in flight" in error["message"]


async def test_a_step_timeout_is_the_only_bound_on_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("stepline.engine._http_client.HOST_CONNECTIONS", 1)
    monkeypatch.setattr("stepline.engine._http_client.POOL_WAIT", 0.05)
    with SilentServer() as dead:
        step = {"http": {"url": dead.url()}, "timeout": 0.5}
        finished = await run_job({"par": [step, step]})
    assert finished["error"]["type"] == "timeout", finished
