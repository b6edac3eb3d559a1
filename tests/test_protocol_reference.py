"""docs/protocol.md is the complete protocol reference: every op the decoder takes, every error
code the server answers with, and every event it writes is in one of its tables.

The names come from the code (the decoder's ``OPS``, the ``code`` of each ``CommandError``, the
event constructors' first arguments in ``src/stepline``), so a new op, code or event fails here
until the page documents it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

from stepline import _errors
from stepline.wire._commands import OPS

ROOT = Path(__file__).parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"
SRC = ROOT / "src" / "stepline"

# Made by the server for a bug in itself, not by raising a CommandError (server/_dispatch.py).
NOT_RAISED_CODES = {"internal"}
# The Python client's own: a gap it puts in a handle's history, never on the wire.
CLIENT_ONLY_EVENTS = {"dropped"}

CODE = r"`([a-z_]+)`"
_EMITTED = re.compile(r'\b(?:event|reply)\(\s*"([a-z_]+)"|"event":\s*"([a-z_]+)"')


def table_rows(text: str, header: str) -> Iterator[list[str]]:
    """The cells of each row of every table of ``text`` whose header line starts ``header``."""
    in_table = False
    for line in text.splitlines():
        if line.startswith(header):
            in_table = True
        elif in_table and line.startswith("|"):
            yield line.split("|")[1:-1]
        else:
            in_table = False


def first_column(text: str, header: str) -> set[str]:
    """The ``code`` names in the first column of the tables ``header`` starts (``| event |``)."""
    return {name for row in table_rows(text, header) for name in re.findall(CODE, row[0])}


def reply_events(text: str) -> set[str]:
    """The event named first in each row's ``reply event`` column of the commands table."""
    return {found[0] for row in table_rows(text, "| op |") if (found := re.findall(CODE, row[2]))}


def emitted_events() -> set[str]:
    """Every event kind the source builds: ``event("x", …)``, ``reply("x", …)`` and literal
    ``"event": "x"`` dicts."""
    kinds: set[str] = set()
    for path in SRC.rglob("*.py"):
        for a, b in _EMITTED.findall(path.read_text()):
            kinds.add(a or b)
    return kinds - CLIENT_ONLY_EVENTS


def wire_codes() -> set[str]:
    errors = [c for c in vars(_errors).values() if inspect.isclass(c)]
    return {c.code for c in errors if issubclass(c, _errors.CommandError) and c.code != "error"}


def test_every_op_is_in_the_commands_table() -> None:
    assert first_column(PROTOCOL.read_text(), "| op |") == set(OPS)


def test_every_error_code_is_in_the_errors_table() -> None:
    assert first_column(PROTOCOL.read_text(), "| code |") == wire_codes() | NOT_RAISED_CODES


def test_every_event_written_is_documented() -> None:
    text = PROTOCOL.read_text()
    documented = first_column(text, "| event |") | reply_events(text)
    assert emitted_events() - documented == set()
    assert documented - emitted_events() == set()  # none documented that nothing writes


def test_the_scan_finds_the_events_it_must() -> None:
    """The scan above is only as good as its pattern: it sees the lifecycle, the replies and
    the events built as literal dicts on the hot path."""
    assert {"ready", "accepted", "finished", "output", "pong", "logs", "bye"} <= emitted_events()
