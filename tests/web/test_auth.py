"""The token: required for every endpoint once set, and for any bind beyond loopback."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

from ..driver import ENV, SERVE, serve

pytestmark = pytest.mark.e2e


async def test_with_a_token_every_endpoint_needs_it() -> None:
    async with serve("--http", "0", "--http-token", "s3cret", "--heartbeat", "0") as driver:
        url = driver.events[0]["http"]
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for method, path in [
                ("GET", "/"),
                ("GET", "/jobs"),
                ("POST", "/jobs"),
                ("GET", "/events"),
                ("GET", "/metrics"),
                ("GET", "/openapi.json"),
                ("GET", "/healthz"),
                ("POST", "/hooks/x"),
            ]:
                refused = await client.request(method, path)
                assert refused.status_code == 401, path
                assert refused.json()["code"] == "unauthorized"
                assert refused.headers["www-authenticate"] == "Bearer"
            wrong = await client.get("/jobs", headers={"Authorization": "Bearer s3cre"})
            assert wrong.status_code == 401
            ok = await client.get("/jobs", headers={"Authorization": "Bearer s3cret"})
            assert (ok.status_code, ok.json()) == (200, {"jobs": [], "next": None})
            by_query = await client.get("/stats", params={"access_token": "s3cret"})
            assert by_query.status_code == 200
            assert (await client.get("/static/app.js")).status_code == 200  # no data in it


def test_binding_beyond_loopback_without_a_token_is_refused() -> None:
    env = {k: v for k, v in ENV.items() if k != "STEPLINE_HTTP_TOKEN"}
    done = subprocess.run(
        [*SERVE, "--http", "0.0.0.0:0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "needs a token" in done.stderr


async def test_the_token_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENV, "STEPLINE_HTTP_TOKEN", "from-env")  # the child's environment
    async with serve("--http", "0", "--heartbeat", "0") as driver:
        url = driver.events[0]["http"]
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/stats")).status_code == 401
            headers = {"Authorization": "Bearer from-env"}
            assert (await client.get("/stats", headers=headers)).status_code == 200


def test_a_port_in_use_is_a_clear_start_up_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SERVE, "--http", str(port)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=ENV,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"--http 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
