"""A bare trio job loop: the baselines that stepline's throughput and memory are measured against.

Two writer designs, chosen with ``--writer``; everything else is shared in spirit:

``--writer channel``
    The baseline the trivial scenario's throughput target is defined against ("a reader that
    splits lines and parses JSON, a memory channel, N worker tasks and one writer emitting the
    same three events per job"), written the straightforward way. See :func:`serve_channel` for
    exactly what it does.

``--writer batched`` (the default, so existing callers keep the floor)
    The tuned floor: the same work with the per-event channel removed. It does the least that
    ``stepline serve`` must do for a trivial ``{"op": "submit", "job": {"value": i}}`` line,
    built the way the field notes say is fast, and nothing else:

    * stdin is read in 64 KiB chunks and split by hand (not ``trio.wrap_file`` line iteration,
      which is two orders of magnitude slower), each line is parsed with orjson;
    * jobs go through one bounded memory channel to ``--workers`` worker tasks, queued with
      ``send_nowait`` (one scheduler pass per chunk, not per line);
    * every job produces the same three events as stepline (``accepted``, ``started``,
      ``finished``, each a JSON line with ``ts``), appended synchronously to a list that one
      writer task (woken through a ``ParkingLot``) encodes and writes in batches with a single
      ``send_all``: no channel, and no checkpoint, per event;
    * ``ready`` is the first line and ``bye`` the last, so the benchmark drives it exactly like
      ``stepline serve``;
    * the cycle collector is tuned as ``stepline serve`` tunes it (start-up objects frozen,
      a 10,000-allocation threshold), so the floor keeps every trick stepline uses.

Neither has validation, a job table, per-job cancel scopes or a backpressure policy: the gap
between these and stepline is the price of stepline's own machinery, which is the number the
benchmark exists to show. With ``--hold`` the workers start only at EOF on stdin, so every job
sits in the channel: the benchmark uses that (with the default writer) to measure the bare memory
cost of a queued job.

Both streams are wrapped in ``trio.lowlevel.FdStream`` on ``dup``-ed descriptors. That sets
O_NONBLOCK on the shared file description (see the field notes); harmless for the private pipes
the benchmark creates, but do not run this from an interactive terminal.
"""

from __future__ import annotations

import argparse
import gc
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
    """``--writer batched``: the tuned floor described at the top of this module."""
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


# -- --writer channel: the target's straightforward baseline -----------------------------------

EVENT_BUFFER = 1024  # the event channel's bound: trio channels are bounded, as a rule


async def serve_channel(workers: int, queue: int, hold: bool) -> None:
    """The baseline the throughput target describes, built the straightforward way.

    * ``read_jobs_channel`` is the batched loop's reader: stdin in 64 KiB chunks, lines split by
      hand, each parsed with orjson, each job queued with :func:`put`. Per line it sends
      ``accepted`` to the event channel with a plain ``await send``.
    * One bounded memory channel of jobs (``--queue``) feeds ``--workers`` worker tasks, each
      taking jobs with ``async for`` and sending ``started`` and ``finished`` with ``await send``.
    * ONE writer task owns stdout and is fed by a bounded memory channel (``EVENT_BUFFER``),
      with exactly one ``send`` per event. It receives them one by one (``async for``); after
      each receive it also takes what is already waiting with ``receive_nowait`` and writes that
      batch with one ``send_all``, so it makes a system call per wake-up rather than per line.

    That is the target's design ("a reader that splits lines and parses JSON, a memory channel, N
    worker tasks and one writer emitting the same three events per job"), and it differs from
    ``--writer batched`` only in how events reach the writer: every event costs a channel
    ``send``, i.e. a checkpoint and a trip through the scheduler, which the target names as "the
    cost to beat". Draining what is already waiting is what a single writer on a pipe naturally
    does with a trio channel; a ``send_all`` per line would add a system call and a second
    checkpoint per event and measure the pipe rather than the job loop.

    The job channel keeps the reader's ``put`` (``send_nowait``, ``await send`` only when full)
    rather than a second ``await send`` per line. trio runs each runnable task once per
    scheduler pass, so two sends per line would hold the reader to one line per two passes
    whatever the other tasks do: on this machine that measured about 8,000 jobs/s at 100,000
    jobs (against about 36,000 for the floor in the same minute), far below the "about 21,000
    jobs/s" the target quotes for its straightforward version. With ``put`` the per-event sends
    are what is left to pay for, as the target describes, and the rate lands in that range.
    ``ready`` is sent before any other task starts and ``bye`` after they have all finished, so
    they are the first and last lines.
    """
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(os.dup(1))
    events, events_out = trio.open_memory_channel[Event](EVENT_BUFFER)
    send, receive = trio.open_memory_channel[Job](queue)
    eof = trio.Event()
    go = eof if hold else trio.Event()
    if not hold:
        go.set()
    async with trio.open_nursery() as outer:
        outer.start_soon(channel_writer, stdout, events_out)
        async with events:
            await events.send(
                {"event": "ready", "ts": time.time(), "workers": workers, "queue_size": queue}
            )
            async with trio.open_nursery() as inner, receive:
                for _ in range(workers):
                    inner.start_soon(worker_channel, receive.clone(), events, go)
                inner.start_soon(read_jobs_channel, stdin, send, events, eof)
            await events.send({"event": "bye", "ts": time.time()})


async def channel_writer(
    stream: trio.abc.SendStream, events: trio.MemoryReceiveChannel[Event]
) -> None:
    """Receive events one by one; write each with whatever else is already waiting."""
    option = orjson.OPT_APPEND_NEWLINE
    async with events:
        async for event in events:
            batch = [event]
            while True:
                try:
                    batch.append(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await stream.send_all(b"".join([orjson.dumps(ev, option=option) for ev in batch]))


async def read_jobs_channel(
    stdin: trio.abc.ReceiveStream,
    send: trio.MemorySendChannel[Job],
    events: trio.MemorySendChannel[Event],
    eof: trio.Event,
) -> None:
    """Parse submits into the job channel, announcing each with ``accepted``; close it at EOF.

    :func:`read_jobs` with one line changed (the ``accepted`` event is sent, not appended). A copy
    on purpose: a callback or generator to share the loop would add a call per line to the very
    loops whose cost is being measured.
    """
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
                    await events.send({"event": "accepted", "ts": time.time(), "job": job_id})
                    await put(send, (job_id, orjson.loads(line)["job"]))
            if not chunk:
                break
    eof.set()


async def worker_channel(
    jobs: trio.MemoryReceiveChannel[Job], events: trio.MemorySendChannel[Event], go: trio.Event
) -> None:
    """Run trivial jobs (which never yield), sending two events per job."""
    await go.wait()
    async with jobs:
        async for job_id, job in jobs:
            started = trio.current_time()
            await events.send({"event": "started", "ts": time.time(), "job": job_id})
            elapsed = trio.current_time() - started
            await events.send(
                {
                    "event": "finished",
                    "ts": time.time(),
                    "job": job_id,
                    "state": "succeeded",
                    "elapsed": elapsed,
                    "output": job.get("value"),
                }
            )


# -- --writer nursery: the in-process floor ----------------------------------------------------

NURSERY_RESULTS = 64  # the results channel's bound, the same as the job channel's


async def serve_nursery(workers: int, queue: int, hold: bool) -> None:
    """The floor a program gets from trio alone: jobs in, results out, no protocol.

    What a Python program would write to run trivial jobs in-process with trio: the reader
    splits stdin and parses each line with orjson, and puts the job on a bounded channel
    (``--queue``; the target's floor uses 8 workers and 64); ``--workers`` tasks each take a job,
    compute its result and put it on a second bounded channel (:data:`NURSERY_RESULTS`); one
    writer drains that channel and writes a ``finished`` line per job (whatever is already
    waiting goes in one ``send_all``). No ``accepted``/``started`` events, no job table, no
    validation: only the work itself and the pipes, ``ready`` to ``bye`` as the benchmark
    drives ``stepline serve``. Both channels use ``send_nowait`` and wait only when full, as
    :func:`put` does; the collector is tuned as ``stepline serve`` tunes it.
    """
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(os.dup(1))
    ready = {"event": "ready", "ts": time.time(), "workers": workers, "queue_size": queue}
    await stdout.send_all(orjson.dumps(ready, option=orjson.OPT_APPEND_NEWLINE))
    results, results_out = trio.open_memory_channel[Event](NURSERY_RESULTS)
    send, receive = trio.open_memory_channel[Job](queue)
    eof = trio.Event()
    go = eof if hold else trio.Event()
    if not hold:
        go.set()
    async with trio.open_nursery() as outer:
        outer.start_soon(result_writer, stdout, results_out)
        async with results, trio.open_nursery() as inner, receive:
            for _ in range(workers):
                inner.start_soon(worker_nursery, receive.clone(), results.clone(), go)
            inner.start_soon(read_jobs_nursery, stdin, send, eof)
    bye = {"event": "bye", "ts": time.time()}
    await stdout.send_all(orjson.dumps(bye, option=orjson.OPT_APPEND_NEWLINE))


async def read_jobs_nursery(
    stdin: trio.abc.ReceiveStream, send: trio.MemorySendChannel[Job], eof: trio.Event
) -> None:
    """Parse submits into the job channel; close it at EOF."""
    count = 0
    partial = b""
    async with send:
        while True:
            chunk = await stdin.receive_some(CHUNK)
            lines, partial = split_lines(partial, chunk or b"\n")
            for line in lines:
                if line.strip():
                    count += 1
                    await put(send, (f"j{count}", orjson.loads(line)["job"]))
            if not chunk:
                break
    eof.set()


async def worker_nursery(
    jobs: trio.MemoryReceiveChannel[Job], results: trio.MemorySendChannel[Event], go: trio.Event
) -> None:
    """Compute each job's result and put it on the results channel."""
    await go.wait()
    async with jobs, results:
        async for job_id, job in jobs:
            result = {"event": "finished", "job": job_id, "state": "succeeded"}
            result["output"] = job.get("value")
            try:
                results.send_nowait(result)
            except trio.WouldBlock:
                await results.send(result)


async def result_writer(
    stream: trio.abc.SendStream, results: trio.MemoryReceiveChannel[Event]
) -> None:
    """Write each result with whatever else is already waiting, in one ``send_all``."""
    option = orjson.OPT_APPEND_NEWLINE
    async with results:
        async for result in results:
            data = bytearray(orjson.dumps(result, option=option))
            while True:
                try:
                    data += orjson.dumps(results.receive_nowait(), option=option)
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await stream.send_all(data)


SERVES = {"batched": serve, "channel": serve_channel, "nursery": serve_nursery}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--hold", action="store_true", help="workers start only at EOF")
    parser.add_argument(
        "--writer",
        choices=list(SERVES),
        default="batched",
        help="batched: the tuned floor (default); channel: one channel send per event;"
        " nursery: jobs in, results out on a second channel, no protocol events",
    )
    args = parser.parse_args()
    if (
        args.writer != "channel"
    ):  # the floors: as stepline's CLI does: as stepline's CLI does (_cli._tune_collector)
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
    trio.run(SERVES[args.writer], args.workers, args.queue, args.hold)


if __name__ == "__main__":
    main()
