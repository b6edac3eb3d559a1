"""A bare trio job loop: the floor that stepline's throughput and memory are measured against.

It does the least that ``stepline serve`` must do for a trivial ``{"op": "submit", "job":
{"value": i}}`` line, built the way the field notes say is fast, and nothing else:

* stdin is read in 64 KiB chunks and split by hand (not ``trio.wrap_file`` line iteration, which
  is two orders of magnitude slower), each line is parsed with orjson;
* jobs go through one bounded memory channel to ``--workers`` worker tasks;
* every job produces the same three events as stepline (``accepted``, ``started``, ``finished``,
  each a JSON line with ``ts``), handed to one writer task that encodes and writes them in
  batches with a single ``send_all``;
* ``ready`` is the first line and ``bye`` the last, so the benchmark drives it exactly like
  ``stepline serve``.

There is no validation, no job table, no per-job cancel scope, no backpressure: the gap between
this and stepline is the price of stepline's own machinery, which is the number the benchmark
exists to show. With ``--hold`` the workers start only at EOF on stdin, so every job sits in the
channel: the benchmark uses that to measure the bare memory cost of a queued job.

Both streams are wrapped in ``trio.lowlevel.FdStream`` on ``dup``-ed descriptors. That sets
O_NONBLOCK on the shared file description (see the field notes); harmless for the private pipes
the benchmark creates, but do not run this from an interactive terminal.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import orjson
import trio

CHUNK = 65536
Event = dict[str, Any]
Job = tuple[str, Any]


class Writer:
    """One task owns stdout; producers append synchronously and it writes batches."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._pending: list[Event] = []
        self._idle = trio.lowlevel.ParkingLot()
        self._closed = False

    def emit(self, event: Event) -> None:
        self._pending.append(event)
        if len(self._pending) == 1:
            self._idle.unpark_all()

    def close(self) -> None:
        self._closed = True
        self._idle.unpark_all()

    async def run(self) -> None:
        while self._pending or not self._closed:
            if not self._pending:
                await self._idle.park()
                continue
            batch, self._pending = self._pending, []
            option = orjson.OPT_APPEND_NEWLINE
            await self._stream.send_all(b"".join([orjson.dumps(ev, option=option) for ev in batch]))


def split_lines(partial: bytes, chunk: bytes | bytearray) -> tuple[list[bytes], bytes]:
    """Complete lines in ``partial + chunk`` and the unfinished rest."""
    *lines, rest = (partial + chunk).split(b"\n")
    return lines, rest


async def put(send: trio.MemorySendChannel[Job], job: Job) -> None:
    """Queue without a scheduler round trip per job; wait only when the channel is full.

    ``await send.send`` yields on every call, so a chunk of 1,500 lines would cost 1,500 trips
    through the scheduler; ``receive_some`` already checkpoints once per chunk.
    """
    try:
        send.send_nowait(job)
    except trio.WouldBlock:
        await send.send(job)


async def read_jobs(
    stdin: trio.abc.ReceiveStream,
    send: trio.MemorySendChannel[Job],
    writer: Writer,
    eof: trio.Event,
) -> None:
    """Parse submits into the channel, announcing each with ``accepted``; close it at EOF."""
    count = 0
    partial = b""
    async with send:
        while True:
            chunk = await stdin.receive_some(CHUNK)
            lines, partial = split_lines(partial, chunk or b"\n")
            for line in lines:
                if line.strip():
                    count += 1
                    job_id = f"j{count}"
                    writer.emit({"event": "accepted", "ts": time.time(), "job": job_id})
                    await put(send, (job_id, orjson.loads(line)["job"]))
            if not chunk:
                break
    eof.set()


async def worker(jobs: trio.MemoryReceiveChannel[Job], writer: Writer, go: trio.Event) -> None:
    """Run trivial jobs. Like stepline's ``value`` step the job itself never yields: the
    worker's one checkpoint per job is the channel receive."""
    await go.wait()
    async with jobs:
        async for job_id, job in jobs:
            started = trio.current_time()
            writer.emit({"event": "started", "ts": time.time(), "job": job_id})
            elapsed = trio.current_time() - started
            writer.emit(
                {
                    "event": "finished",
                    "ts": time.time(),
                    "job": job_id,
                    "state": "succeeded",
                    "elapsed": elapsed,
                    "output": job.get("value"),
                }
            )


async def serve(workers: int, queue: int, hold: bool) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    writer = Writer(trio.lowlevel.FdStream(os.dup(1)))
    send, receive = trio.open_memory_channel[Job](queue)
    eof = trio.Event()
    go = eof if hold else trio.Event()
    if not hold:
        go.set()
    async with trio.open_nursery() as outer:
        outer.start_soon(writer.run)
        writer.emit({"event": "ready", "ts": time.time(), "workers": workers, "queue_size": queue})
        async with trio.open_nursery() as inner, receive:
            for _ in range(workers):
                inner.start_soon(worker, receive.clone(), writer, go)
            inner.start_soon(read_jobs, stdin, send, writer, eof)
        writer.emit({"event": "bye", "ts": time.time()})
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--hold", action="store_true", help="workers start only at EOF")
    args = parser.parse_args()
    trio.run(serve, args.workers, args.queue, args.hold)


if __name__ == "__main__":
    main()
