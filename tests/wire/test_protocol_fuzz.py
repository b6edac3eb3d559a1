"""Protocol fuzzing: whatever arrives on stdin, each line gets exactly one answer.

Three kinds of garbage are generated — random bytes, random JSON values, and valid commands
damaged by mutations (a field dropped, a value of the wrong type, huge numbers, nesting deeper
than any limit, invalid UTF-8, NUL bytes and characters, lone surrogates, lines exactly at and
one byte over ``--max-line``) — and fed to the real reader, split into chunks at random places.

The expectation comes from an independent reading of PROTOCOL.md (:func:`expected_lines`): every
non-blank line yields exactly one reply or one ``error`` (a ``submit`` is answered by
``accepted``), in order, echoing the line's ``id`` when it had a valid one; blank lines yield
nothing; a line longer than ``--max-line`` is a ``line_too_long``. After the garbage, valid
commands must still work: a ``ping`` is answered, every job the garbage started can be
cancelled, a fresh job runs to success, and EOF ends the session with ``bye`` and status 0.

The executor runs with ``--allow-run none``: mutations rewrite argv, and a fuzzer must never be
able to start arbitrary programs on the machine running the tests.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, Final

import orjson
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stepline import Config
from stepline.server._serve import Server

from ..driver import lifecycle_ok, run_cli
from ..hypothesis_profiles import note, scaled

Event = dict[str, Any]
MAX_LINE: Final = 400
REPLIES: Final = frozenset(
    {
        "accepted",
        "error",
        "cancelling",
        "status",
        "defined",
        "stats",
        "pong",
        "shutting_down",
        "scheduled",
        "unscheduled",
        "acked",
    }
)
# Ops the garbage must not contain by accident: they end the session, or (once implemented)
# start jobs later on their own, which would break the one-line-one-reply accounting.
SESSION_OPS: Final = frozenset({"shutdown", "schedule"})
CONFIG: Final = Config(workers=2, queue_size=64, on_full="reject", heartbeat=0, allow_run="none")

# -- the reference reading of the transport rules ----------------------------------------------

TOO_LONG: Final = b"<too long>"


def expected_lines(data: bytes, max_line: int) -> list[bytes]:
    """The lines PROTOCOL.md says ``data`` holds: split on ``\\n``, one trailing ``\\r``
    dropped, blank lines skipped, over-long lines as :data:`TOO_LONG`; a final line without
    ``\\n`` still counts."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    lines = []
    for part in parts:
        line = part[:-1] if part.endswith(b"\r") else part
        if len(line) > max_line:
            lines.append(TOO_LONG)
        elif line.strip():
            lines.append(line)
    return lines


def expected_id(line: bytes) -> object:
    """The ``id`` a reply to ``line`` must echo, or None when it has none to echo."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    rid = obj.get("id")
    if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        return rid
    return None


def starts_a_session_op(chunk: bytes) -> bool:
    """Whether any line in ``chunk`` is a command in :data:`SESSION_OPS`."""
    for line in chunk.split(b"\n"):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("op"), str) and obj["op"] in SESSION_OPS:
            return True
    return False


# -- garbage -----------------------------------------------------------------------------------

CORPUS: Final[list[dict[str, Any]]] = [
    {"op": "ping", "id": 1},
    {"op": "stats", "id": "s"},
    {"op": "status"},
    {"op": "status", "job": "j1", "id": 3},
    {"op": "cancel", "job": "j1", "id": 4},
    {"op": "submit", "id": "a", "job": {"steps": [{"sleep": 0.01}, {"value": {"k": [1, 2]}}]}},
    {
        "op": "submit",
        "job": {
            "par": [{"value": 1}, {"log": "x"}],
            "limit": 1,
            "retry": {"attempts": 2, "backoff": 0.1, "factor": 2},
        },
    },
    {
        "op": "submit",
        "id": 7,
        "job": {
            "race": [{"sleep": 100}, {"try": {"fail": "x"}, "catch": {"value": "c"}}],
            "timeout": 5,
            "name": "r",
        },
    },
    {
        "op": "submit",
        "job": {"run": ["echo", "hi"], "env": {"A": "b"}, "cwd": "/", "stdin": "x", "grace": 1},
    },
    {
        "op": "define",
        "name": "t",
        "id": "d",
        "job": {"params": {"x": 0}, "steps": [{"value": "${params.x}"}]},
    },
    {"op": "submit", "template": "t", "params": {"x": 1}, "name": "n"},
    {"op": "submit", "job": {"steps": [{"use": "t", "with": {"x": 2}}, {"seq": []}]}},
    {"op": "ack", "alert": "a1", "id": 12},
    {"op": "unschedule", "schedule": "s1", "id": "u"},
]
HUGE: Final = [10**30, -(10**30), 2**63, 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324, 0.1]
BAD_BYTES: Final = [b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x00", b"\x1b[2J"]
DEEP_MARK: Final = "\u2603DEEP\u2603"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(HUGE)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)  # lone surrogates
    | st.sampled_from(["", "\x00", "${params.x}", "$${", "j1", "steps[0]"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree, as a tuple of keys and indices (the root is ``()``)."""
    found = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += _paths(value, (*prefix, index))
    return found


def _replace(obj: Any, path: tuple[Any, ...], new: Callable[[Any], Any]) -> Any:
    """A copy of ``obj`` with the value at ``path`` replaced by ``new(old)`` (dropped when
    ``new`` returns the ``_DROP`` sentinel)."""
    if not path:
        return new(obj)
    head, *rest = path
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    child = _replace(copy[head], tuple(rest), new)
    if child is _DROP:
        del copy[head]
    else:
        copy[head] = child
    return copy


_DROP: Final = object()


@st.composite
def tree_mutation(draw: st.DrawFn, command: dict[str, Any]) -> Any:
    """One structural mutation somewhere in the command's JSON tree."""
    path = draw(st.sampled_from(_paths(command)))
    how = draw(st.sampled_from(["drop", "retype", "huge", "deep", "nul", "surrogate"]))
    if how == "drop" and path:
        return _replace(command, path, lambda _: _DROP)
    if how == "huge":
        number = draw(st.sampled_from(HUGE))
        return _replace(command, path, lambda _: number)
    if how == "deep":
        return _replace(command, path, lambda _: DEEP_MARK)
    if how == "nul":
        return _replace(command, path, lambda old: f"{old}\x00" if isinstance(old, str) else "\0")
    if how == "surrogate":
        return _replace(command, path, lambda _: "\ud800x")
    value = draw(json_values)
    return _replace(command, path, lambda _: value)


def encode(obj: Any, depth: int) -> bytes:
    """JSON text the way a sloppy client might write it: NaN allowed, surrogates escaped, and
    the deep-nesting marker expanded by text (``json.dumps`` itself would hit its recursion
    limit long before 1100 levels)."""
    text = json.dumps(obj, allow_nan=True)
    deep = "[" * depth + "1" + "]" * depth
    return text.replace(json.dumps(DEEP_MARK), deep).encode()


@st.composite
def byte_mutation(draw: st.DrawFn, line: bytes) -> bytes:
    """Damage at the byte level: bad UTF-8, control bytes, truncation, duplication."""
    at = draw(st.integers(0, len(line)))
    how = draw(st.sampled_from(["insert", "truncate", "duplicate", "flip"]))
    if how == "insert":
        return line[:at] + draw(st.sampled_from(BAD_BYTES)) + line[at:]
    if how == "truncate":
        return line[:at]
    if how == "duplicate":
        return line[:at] + line[at // 2 : at] + line[at:]
    if not line:
        return line
    index = min(at, len(line) - 1)
    return line[:index] + bytes([line[index] ^ draw(st.integers(1, 255))]) + line[index + 1 :]


@st.composite
def mutated_command(draw: st.DrawFn) -> bytes:
    command: Any = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(0, 2))):
        if isinstance(command, dict):
            command = draw(tree_mutation(command))
    line = encode(command, draw(st.sampled_from([10, 64, 65, 300, 1100])))
    if draw(st.booleans()):
        line = draw(byte_mutation(line))
    return line


@st.composite
def sized_ping(draw: st.DrawFn) -> bytes:
    """A ping exactly at, or one byte over, ``MAX_LINE`` (with ``\\r`` on some)."""
    size = MAX_LINE + draw(st.sampled_from([0, 1, -1]))
    head = b'{"op":"ping","id":"'
    line = head + b"x" * (size - len(head) - 2) + b'"}'
    assert len(line) == size
    return line + b"\r" if draw(st.booleans()) else line


lines = st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    mutated_command(),
    mutated_command(),
    sized_ping(),
    st.sampled_from([b"", b"   ", b"\r", b"\t \r", b"{}", b"[]", b"null", b"\xef\xbb\xbf{}"]),
    st.builds(lambda n: b"x" * n, st.integers(MAX_LINE - 2, MAX_LINE * 3)),
)
garbage = st.lists(lines, max_size=25).map(
    lambda ls: [line for line in ls if not starts_a_session_op(line)]
)

# -- an in-process session ---------------------------------------------------------------------


class ChunkStream(trio.abc.ReceiveStream):
    """Stdin that hands the reader exactly the chunks the test chose, so line boundaries fall
    wherever Hypothesis put them rather than wherever buffering merged writes."""

    def __init__(self) -> None:
        self.send, self._receive = trio.open_memory_channel[bytes](float("inf"))
        self._left = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._left:
            try:
                self._left = await self._receive.receive()
            except trio.EndOfChannel:
                return b""
        else:
            await trio.lowlevel.checkpoint()
        cut = len(self._left) if max_bytes is None else max_bytes
        chunk, self._left = self._left[:cut], self._left[cut:]
        return chunk

    async def aclose(self) -> None:
        await self._receive.aclose()


class Session:
    """A ``Server`` on in-memory streams, with the events it wrote parsed as they come."""

    def __init__(self) -> None:
        self.stdin = ChunkStream()
        self._out_send, self._out_receive = trio.testing.memory_stream_one_way_pair()
        self.server = Server(
            CONFIG, self.stdin, self._out_send, max_line=MAX_LINE, handle_signals=False
        )
        self.events: list[Event] = []
        self._changed = trio.Event()
        self.status: int | None = None

    async def run(self) -> None:
        """Serve until EOF on stdin; then close stdout so the event reader ends too."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_events)
            self.status = await self.server.run()
            await self._out_send.aclose()

    async def _read_events(self) -> None:
        buffer = b""
        while chunk := await self._out_receive.receive_some():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.events += [orjson.loads(line) for line in complete]
            self._changed.set()
            self._changed = trio.Event()
        assert buffer == b"", "stdout must end with a complete line"

    def send(self, data: bytes) -> None:
        self.stdin.send.send_nowait(data)

    def command(self, obj: dict[str, Any]) -> None:
        self.send(orjson.dumps(obj) + b"\n")

    async def wait_for(self, predicate: Callable[[Event], bool]) -> Event:
        while True:
            for ev in self.events:
                if predicate(ev):
                    return ev
            await self._changed.wait()


async def drive(chunks: list[bytes]) -> tuple[Session, list[Event]]:
    """Feed the garbage, then prove the session still works; returns the session and the
    replies that answered the garbage."""
    session = Session()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            for chunk in chunks:
                session.send(chunk)
            session.send(b'{"op":"ping","id":"__after__"}\n')
            await session.wait_for(lambda e: e.get("id") == "__after__")
            answers = [e for e in session.events if _is_reply(e)][:-1]
            await _cancel_everything(session)
            session.command({"op": "submit", "id": "__final__", "job": {"value": 42}})
            final = await session.wait_for(lambda e: e.get("id") == "__final__")
            assert final["event"] == "accepted", final
            done = await session.wait_for(
                lambda e: e["event"] == "finished" and e["job"] == final["job"]
            )
            assert (done["state"], done.get("output")) == ("succeeded", 42), done
            session.stdin.send.close()  # EOF: drain and exit
    return session, answers


async def _cancel_everything(session: Session) -> None:
    """Cancel whatever the garbage started, so the final job gets a worker at once."""
    finished = {e["job"] for e in session.events if e["event"] == "finished"}
    running = [
        e["job"] for e in session.events if e["event"] == "accepted" and e["job"] not in finished
    ]
    for n, job in enumerate(running):
        session.command({"op": "cancel", "job": job, "id": f"__c{n}__"})
    for n in range(len(running)):
        await session.wait_for(_has_id(f"__c{n}__"))


def _has_id(rid: str) -> Callable[[Event], bool]:
    return lambda event: event.get("id") == rid


def _is_reply(event: Event) -> bool:
    return event["event"] in REPLIES and not (event["event"] == "accepted" and "schedule" in event)


def check_answers(data: bytes, answers: list[Event]) -> None:
    """One answer per non-blank line, in order, with the right code and ``id``."""
    expected = expected_lines(data, MAX_LINE)
    assert len(answers) == len(expected), (expected, answers)
    for line, answer in zip(expected, answers, strict=True):
        note(f"answer: {answer.get('code', answer['event'])}")
        if line is TOO_LONG:
            assert (answer["event"], answer["code"]) == ("error", "line_too_long"), answer
            continue
        assert answer.get("id") == expected_id(line), (line, answer)
        if answer["event"] == "error":
            assert isinstance(answer["message"], str), answer
            assert answer["message"], answer


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# -- the tests ---------------------------------------------------------------------------------


@scaled(200)
@given(garbage, st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
def test_every_line_gets_exactly_one_answer(
    lines: list[bytes], cuts: list[int], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    # The line after the garbage must stand alone: end an unterminated last line here.
    data += b"" if data.endswith(b"\n") or not data else b"\n"
    session, answers = trio.run(drive, chunked(data, cuts))
    check_answers(data, answers)
    assert session.status == 0
    assert session.events[0]["event"] == "ready"
    assert session.events[-1]["event"] == "bye"
    assert all(isinstance(e["ts"], float) for e in session.events)
    lifecycle_ok(session.events)


@scaled(4)
@given(garbage)
def test_the_real_cli_answers_every_line_too(lines: list[bytes]) -> None:
    """The same garbage through the real process (reader, stdio, orjson output), batched."""
    data = b"".join(line + b"\n" for line in lines)
    stop = b'{"op":"ping","id":"__after__"}\n{"op":"shutdown","mode":"cancel","id":"__stop__"}\n'
    events, rc, stderr = run_cli(
        [data + stop], "--max-line", str(MAX_LINE), "--allow-run", "none", "--heartbeat", "0"
    )
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    replies = [e for e in events if _is_reply(e)]
    assert [e.get("id") for e in replies[-2:]] == ["__after__", "__stop__"]
    check_answers(data, replies[:-2])
    assert events[-1]["event"] == "bye"
    lifecycle_ok(events)


def test_reference_reading_of_the_transport_rules() -> None:
    """The test's own oracle, on the cases PROTOCOL.md spells out."""
    assert expected_lines(b"a\r\n\n  \nb\r\r\nc", 10) == [b"a", b"b\r", b"c"]
    assert expected_lines(b"x" * 11 + b"\n" + b"x" * 10 + b"\r\n", 10) == [TOO_LONG, b"x" * 10]
    assert expected_id(b'{"id": true}') is None
    assert expected_id(b'{"id": 18446744073709551616}') is None  # parsed as a float
    assert expected_id(b'{"op": "ping", "id": "p"}') == "p"
