"""One dead endpoint cannot starve requests to the others.

A server that accepts connections and never answers is the worst case: without a timeout, each
request to it holds a connection forever. With one shared pool for every host, 100 such
requests took every connection, and a healthy endpoint got nothing. Connections are now bounded
per host, so the healthy one is still served while the dead one's requests wait.
"""

from __future__ import annotations

import pytest
import trio

from stepline.engine._http import HOST_CONNECTIONS

from ..driver import lifecycle_ok, serve
from ..http_server import Answer, HttpServer, SilentServer

pytestmark = pytest.mark.e2e


async def test_a_hundred_stuck_requests_leave_other_hosts_served() -> None:
    with SilentServer() as dead, HttpServer() as healthy:
        good = healthy.script("/ok", Answer(200, {"fine": True}))
        stuck = {"par": [{"http": {"url": dead.url(f"/{i}")}} for i in range(100)]}
        async with serve("--heartbeat", "0") as d:
            with trio.fail_after(60):
                await d.send({"op": "submit", "job": stuck, "id": "stuck"})
                stuck_id = (await d.wait_for("accepted", id="stuck"))["job"]
                while dead.accepted < HOST_CONNECTIONS:  # all it may have are taken
                    await trio.sleep(0.05)
                job = {"http": {"url": good}, "timeout": 15}
                await d.send({"op": "submit", "job": job, "id": "ok"})
                ok_id = (await d.wait_for("accepted", id="ok"))["job"]
                finished = await d.wait_for("finished", job=ok_id)
                assert dead.accepted == HOST_CONNECTIONS  # the other 84 wait for a slot
                await d.send({"op": "cancel", "job": stuck_id})
                cancelled = await d.wait_for("finished", job=stuck_id)
                await d.close_stdin()
                await d.rest()
            assert await d.proc.wait() == 0
    assert finished["state"] == "succeeded", finished
    assert finished["output"]["body"] == {"fine": True}
    assert cancelled["state"] == "cancelled"
    lifecycle_ok(d.events)
