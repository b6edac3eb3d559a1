"""What one HTTP request costs the server, in CPU time: HTTP servers and frameworks side by side.

    python bench/http_request_cost.py                    # every variant, 5,000 requests each
    python bench/http_request_cost.py --requests 3000 --variants h11-bare stepline

Each variant is a server process answering ``POST /jobs`` (a small JSON body) with 202 and a
small JSON answer; a client process sends ``--requests`` of them over ``--connections``
keep-alive connections (each waits for its answer before the next). What is reported is the
server's own CPU time (user + system, from ``/proc``) over those requests, divided by their
number: it does not depend on how loaded the machine is the way a rate does, though a loaded
machine still adds cache misses and switches, so the load average is written beside.

- ``hypercorn-bare``: a bare ASGI app on Hypercorn's trio worker.
- ``hypercorn-starlette``: the same answer from a Starlette route on Hypercorn.
- ``h11-bare`` / ``h11-starlette``: the same two on the front's own server (``web/_server.py``).
- ``plain-h11``: a trio server on h11 with no ASGI at all (h11's own floor).
- ``stepline``: ``stepline serve --http 0``, a real submit of a trivial job (the executor's
  work included), from the tree this file is in; ``--src DIR`` measures another tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
VARIANTS = [
    "plain-h11",
    "h11-bare",
    "h11-starlette",
    "hypercorn-bare",
    "hypercorn-starlette",
    "stepline",
]
ANSWER = b'{"job":"j1"}'
BODY = b'{"job":{"value":0}}'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def env_for(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    return env


def start_server(variant: str, src: Path) -> tuple[subprocess.Popen[bytes], int]:
    if variant == "stepline":
        argv = [sys.executable, "-m", "stepline", "serve", "--http", "0", "--heartbeat", "0"]
        argv += ["--queue", "100000"]
    else:
        argv = [sys.executable, __file__, "--serve", variant]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env_for(src))
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    port = int(first["http"].rsplit(":", 1)[1]) if variant == "stepline" else first["port"]
    if variant == "stepline":  # the jobs' events: read, so stdout never fills
        subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc, port


def measure(variant: str, requests: int, connections: int, src: Path) -> dict[str, Any]:
    proc, port = start_server(variant, src)
    try:
        warm = run_client(port, min(500, requests), connections)
        assert warm == 0, f"{warm} answers were not 202"
        before = cpu_seconds(proc.pid)
        start = time.perf_counter()
        bad = run_client(port, requests, connections)
        wall = time.perf_counter() - start
        used = cpu_seconds(proc.pid) - before
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "variant": variant,
        "us_per_request": round(used / requests * 1e6),
        "requests_per_s": round(requests / wall),
        "not_202": bad,
        "loadavg_1min": round(os.getloadavg()[0], 1),
    }


def run_client(port: int, requests: int, connections: int) -> int:
    argv = [sys.executable, __file__, "--client", str(port), "--requests", str(requests)]
    argv += ["--connections", str(connections)]
    return int(subprocess.run(argv, capture_output=True, check=True).stdout)


# -- the client -------------------------------------------------------------------------------


def client_main(port: int, requests: int, connections: int) -> None:
    import trio

    request = (
        b"POST /jobs HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (port, len(BODY), BODY)
    )
    left = [requests]
    bad = [0]

    async def one_connection() -> None:
        stream, buffer = await trio.open_tcp_stream("127.0.0.1", port), b""
        async with stream:
            while left[0] > 0:
                left[0] -= 1
                await stream.send_all(request)
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive_some(1 << 16)
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += await stream.receive_some(1 << 16)
                buffer = buffer[length:]
                bad[0] += not head.startswith(b"HTTP/1.1 202")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(one_connection)

    trio.run(main)
    print(bad[0])


# -- the servers ------------------------------------------------------------------------------


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # Hypercorn asks; nothing to start
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def submit(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"job": "j1"}, 202)

    async def other(request: Request) -> JSONResponse:
        return JSONResponse({})

    routes = [Route("/", other), Route("/jobs", submit, methods=["POST"])]
    routes += [Route(f"/other/{i}", other) for i in range(16)]  # about the front's route count
    return Starlette(routes=routes)


async def plain_h11(listener: Any) -> None:
    import h11
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(1 << 16)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.SEND_BODY:
                        return
                elif isinstance(event, h11.EndOfMessage):
                    headers = [("content-type", "application/json")]
                    headers.append(("content-length", str(len(ANSWER))))
                    answer = conn.send(h11.Response(status_code=202, headers=headers))
                    answer += conn.send(h11.Data(data=ANSWER)) + conn.send(h11.EndOfMessage())
                    await stream.send_all(answer)
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return

    async with trio.open_nursery() as nursery, listener:
        while True:
            nursery.start_soon(handle, await listener.accept())


def serve_main(variant: str) -> None:
    import socket

    import trio

    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    app = starlette_app() if variant.endswith("starlette") else bare_app
    if variant.startswith("hypercorn"):
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        trio.run(serve, app, config)
        return
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    if variant == "plain-h11":
        trio.run(plain_h11, listener)
        return
    from stepline.web._server import serve_asgi

    async def run() -> None:
        await serve_asgi(app, listener, stop=trio.Event(), grace=1.0)

    trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--src", type=Path, default=SRC, help="the tree `stepline` runs from")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve)
    elif args.client:
        client_main(args.client, args.requests, args.connections)
    else:
        for _ in range(args.rounds):
            for variant in args.variants:
                print(json.dumps(measure(variant, args.requests, args.connections, args.src)))


if __name__ == "__main__":
    main()
