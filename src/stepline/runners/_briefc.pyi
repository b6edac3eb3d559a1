"""Types of the C module built from ``_briefc.c`` (see there, and ``_spawn.spawn_brief``)."""

from collections.abc import Sequence

API: int

def start_brief(
    argv: Sequence[str],
    paths: Sequence[bytes],
    env: Sequence[bytes] | None,
    cwd: str | None,
    program: str,
    stdin_fd: int,
    wake_fd: int,
    wait_ms: int,
    /,
) -> tuple[int, int, int, int]: ...
