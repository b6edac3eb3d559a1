"""A real ``stepline serve --http 0`` for tests that are not trio code (browser, schemathesis).

stdout is read by a thread for the whole run, so the server never blocks on a full pipe however
many events the test causes; the events are kept for the test to look at.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..driver import ENV, SERVE


class RunningServer:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdout is not None
        self.ready: dict[str, Any] = json.loads(proc.stdout.readline())
        assert self.ready["event"] == "ready", self.ready
        self.url: str = self.ready["http"]
        self.events: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._arrived:
                self.events.append(json.loads(line))
                self._arrived.notify_all()

    def wait_for(self, kind: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        """The first event of ``kind`` whose ``fields`` match, waiting for it if need be."""

        def found() -> dict[str, Any] | None:
            for event in self.events:
                if event["event"] == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
            return None

        with self._arrived:
            event = self._arrived.wait_for(found, timeout)
        assert event is not None, f"no {kind} {fields} in {timeout} s: {self.events[-5:]}"
        return event

    def stop(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: drain and exit
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)


@contextmanager
def running_server(*args: str) -> Iterator[RunningServer]:
    proc = subprocess.Popen(
        [*SERVE, "--http", "0", "--heartbeat", "0", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        server = RunningServer(proc)
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
