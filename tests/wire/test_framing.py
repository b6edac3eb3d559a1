"""The line splitter: framing, the length cap, and a final line without a newline."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from stepline.wire._framing import LineSplitter, TooLong, read_lines

from ..hypothesis_profiles import scaled


def feed_all(chunks: list[bytes], max_line: int = 10) -> list[bytes | TooLong]:
    splitter = LineSplitter(max_line)
    out: list[bytes | TooLong] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    out.extend(splitter.finish())
    return out


def test_lines_split_across_chunks() -> None:
    assert feed_all([b"ab", b"c\nde", b"f\n"]) == [b"abc", b"def"]


def test_crlf_blank_lines_and_final_line_without_newline() -> None:
    assert feed_all([b"a\r\n\n  \r\n\tb\r\nlast"]) == [b"a", b"\tb", b"last"]


def test_line_at_the_cap_is_kept_and_over_it_is_reported() -> None:
    assert feed_all([b"0123456789\n01234567890\nok\n"]) == [b"0123456789", TooLong(11), b"ok"]


def test_cr_does_not_count_towards_the_cap() -> None:
    assert feed_all([b"0123456789\r\n"]) == [b"0123456789"]


def test_over_long_line_is_discarded_while_it_streams_in() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"x" * 8) == []
    assert splitter.feed(b"x" * 8) == []
    # nothing of the long line is held (no public view of the buffer: it is what is measured)
    assert splitter._partial == b""  # noqa: SLF001
    assert splitter.feed(b"x" * 100_000) == []
    assert splitter.feed(b"y\nnext\n") == [TooLong(100_017), b"next"]


def test_over_long_final_line_at_eof() -> None:
    assert feed_all([b"ok\n", b"z" * 50]) == [b"ok", TooLong(50)]


async def test_read_lines_from_a_stream() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(b'{"op":"ping"}\n{"op":')
    await send.send_all(b'"stats"}')
    await send.aclose()
    batches = [batch async for batch in read_lines(receive, 100)]
    assert [line for batch in batches for line in batch] == [b'{"op":"ping"}', b'{"op":"stats"}']


def _reference(data: bytes, max_line: int) -> list[bytes | str]:
    """What the splitter must give, read off the whole input at once: each line (the last one
    even without a newline) less one trailing ``\\r``; blank ones dropped; one over the cap
    reported as too long ("long")."""
    out: list[bytes | str] = []
    for raw in data.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if len(line) > max_line:
            out.append("long")
        elif line.strip():
            out.append(line)
    return out


@given(
    st.lists(
        st.sampled_from([b"", b" ", b"\r", b"\r\n", b"\n", b"\n\n", b"ab", b"x" * 7, b"\t\n"]),
        max_size=40,
    ),
    st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=10),
    st.integers(min_value=1, max_value=9),
)
@scaled(300)
def test_any_chunking_gives_the_lines_of_the_whole(
    pieces: list[bytes], cuts: list[int], max_line: int
) -> None:
    data = b"".join(pieces)
    splitter = LineSplitter(max_line)
    got: list[bytes | TooLong] = []
    at, turn = 0, 0
    while at < len(data):
        size = cuts[turn % len(cuts)]
        got += splitter.feed(data[at : at + size])
        at, turn = at + size, turn + 1
    got += splitter.finish()
    assert [("long" if isinstance(x, TooLong) else x) for x in got] == _reference(data, max_line)
