"""``stepline demo --http``: the tour with the dashboard live, and a scene of its own.

The demo's ``stepline serve`` child gets ``--http``, so every scene's jobs appear on the page as
they run (the URL is printed first). A last scene goes through the HTTP front itself: a pipeline
graph submitted with ``POST /jobs`` (drawn on the page, task by task), a failing job whose
``alert`` waits on the page for its Ack button. Then the server stays up for the audience until
Enter (or end of input) on the demo's stdin.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import httpx

__all__ = ["PIPELINE", "Front", "wait_for_enter"]

PIPELINE: dict[str, Any] = {
    "name": "release",
    "stream": True,
    "tasks": {
        "build": {"steps": [{"run": "echo compiling; sleep 0.6; echo built app.whl"}]},
        "unit": {
            "needs": "build",
            "steps": [{"run": "for t in api cli db; do echo test_$t passed; sleep 0.3; done"}],
        },
        "lint": {"needs": "build", "steps": [{"run": "sleep 0.4; echo lint clean"}]},
        "publish": {"needs": ["unit", "lint"], "steps": [{"run": "echo published; sleep 0.3"}]},
    },
}

ALERTING: dict[str, Any] = {
    "name": "nightly-backup",
    "steps": [{"run": "echo 'error: backup target unreachable' >&2; exit 2"}],
    "on_finish": [{"alert": "nightly backup failed", "when": "failure"}],
}


class Front:
    """The demo's client of the HTTP front (plain REST, as any program would call it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=10)

    def close(self) -> None:
        self._http.close()

    def submit(self, job: dict[str, Any]) -> str:
        response = self._http.post("/jobs", json={"job": job})
        response.raise_for_status()
        job_id: str = response.json()["job"]
        return job_id

    def wait(self, job: str, timeout: float = 20) -> dict[str, Any]:
        """The job's record once it has finished (polled: the demo shows REST, not SSE)."""
        deadline = time.monotonic() + timeout
        while True:
            record: dict[str, Any] = self._http.get(f"/jobs/{job}").json()
            if record["state"] not in ("queued", "running") or time.monotonic() > deadline:
                return record
            time.sleep(0.1)

    def open_alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self._http.get("/alerts").json()["alerts"]
        return alerts


def wait_for_enter(url: str, out: TextIO, source: TextIO | None = None) -> None:
    """Keep the server (and the page) up until Enter or end of input."""
    stream = source if source is not None else sys.stdin
    out.write(f"\n   The dashboard stays live at {url}/ : press Enter to stop.\n")
    out.flush()
    try:
        stream.readline()
    except (OSError, ValueError):  # no usable stdin: nothing to wait for
        return
