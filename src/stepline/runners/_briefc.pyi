"""Types of the C module built from ``_briefc.c`` (see there, and ``_pool.py``)."""

from collections.abc import Sequence

API: int
FAILED: int
RUNNING: int
ENDED: int
WOKEN: int
SKIPPED: int

class Pool:
    def __init__(self, threads: int, /) -> None: ...
    def submit(
        self,
        token: int,
        argv: Sequence[str],
        paths: Sequence[bytes],
        env: Sequence[bytes] | None,
        cwd: str | None,
        stdin_fd: int,
        wait_ms: int,
        /,
    ) -> None: ...
    def interrupt(self, token: int, /) -> None: ...
    def collect(self) -> list[tuple[int, int, int, int, int, int, int]]: ...
    def fileno(self) -> int: ...
    def thread_ids(self) -> list[int]: ...
    def close(self) -> None: ...
