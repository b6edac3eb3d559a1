"""The line splitter: framing, the length cap, and a final line without a newline."""

from __future__ import annotations

import trio
import trio.testing

from stepline.wire._framing import LineSplitter, TooLong, read_lines


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
