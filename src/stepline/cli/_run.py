"""``stepline run FILE...``: run job files in-process and report, for humans and for scripts.

A file ending in ``.json`` holds one job; any other file (``.jsonl``, ``.ndjson``, ...) and ``-``
(stdin) hold JSON Lines, one job per line, blank lines ignored. Jobs may ``use`` templates given
with ``--template NAME=FILE``.

Every job of every file is read and validated before anything runs: a typo in the tenth file
must not surface after the first nine have deployed something. Then all jobs are submitted to one
in-process executor (:func:`stepline.open_executor`, ``--workers`` at a time) and followed
through their events by a view from :mod:`stepline.cli._progress`.

Exit status: 0 when every job succeeded, 1 when any did not, 2 when a file could not be read or
holds an invalid job (nothing was run), 130 on Ctrl-C (every job is cancelled first).
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio
from attrs import frozen

from .._errors import InvalidJob
from ..client._api import JobHandle, open_executor
from ..engine._jobs import JobState
from ..spec._validate import validate_job, validate_template
from ._progress import LiveView, PlainView, Tracked, View
from ._term import is_tty, use_color

__all__ = ["BadFile", "Entry", "load_entries", "load_templates", "main", "run_entries"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class BadFile(Exception):
    """A job file or template file that cannot be used; the message names file and line."""


@frozen
class Entry:
    """One job read from a file; ``label`` is ``file`` or ``file:line``, plus ``(name)``."""

    label: str
    job: Any


def _read(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFile(f"{path}: cannot read: {exc}") from None


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadFile(f"{where}: not JSON: {exc}") from None


def _label(where: str, job: Any) -> str:
    name = job.get("name") if isinstance(job, dict) else None
    return f"{where} ({name})" if isinstance(name, str) else where


def load_file(path: str) -> list[Entry]:
    """The jobs of one file (see the module doc for the two formats)."""
    text = _read(path)
    if path.endswith(".json"):
        job = _parse(text, path)
        return [Entry(_label(path, job), job)]
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            where = f"{path}:{number}"
            job = _parse(line, where)
            entries.append(Entry(_label(where, job), job))
    if not entries:
        raise BadFile(f"{path}: no jobs in this file")
    return entries


def load_templates(specs: Sequence[str]) -> dict[str, Any]:
    """``NAME=FILE`` pairs to templates, each checked as ``define`` would check it."""
    templates: dict[str, Any] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (name and sep and path):
            raise BadFile(f"--template {spec!r}: expected NAME=FILE")
        job = _parse(_read(path), path)
        try:
            validate_template(job, templates, name=name)
        except InvalidJob as exc:
            raise BadFile(f"{path}: invalid template: {exc.message}") from None
        templates[name] = job
    return templates


def load_entries(paths: Sequence[str], templates: Mapping[str, Any]) -> list[Entry]:
    """Every job of every file, validated; raises :class:`BadFile` listing every problem."""
    problems: list[str] = []
    entries: list[Entry] = []
    for path in paths:
        try:
            entries += load_file(path)
        except BadFile as exc:
            problems.append(str(exc))
    for entry in entries:
        try:
            validate_job(entry.job, templates=templates)
        except InvalidJob as exc:
            problems.append(f"{entry.label}: invalid job: {exc.message}")
    if problems:
        raise BadFile("\n".join(problems))
    return entries


async def run_entries(
    entries: Sequence[Entry], templates: Mapping[str, Any], view: View, *, workers: int
) -> bool:
    """Run every job, showing progress; True when every one succeeded."""
    queue = max(len(entries), 1)  # everything is submitted up front
    async with open_executor(workers=workers, queue_size=queue, heartbeat=0) as ex:
        for name, template in templates.items():
            await ex.define(name, template)
        jobs: list[Tracked] = [(e.label, await ex.submit(e.job)) for e in entries]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(view.animate, jobs)
            async with trio.open_nursery() as followers:
                for label, handle in jobs:
                    followers.start_soon(_follow, label, handle, view)
            nursery.cancel_scope.cancel()
    view.close(jobs)
    return all(handle.state is JobState.SUCCEEDED for _, handle in jobs)


async def _follow(label: str, handle: JobHandle, view: View) -> None:
    async for ev in handle.events():
        if ev["event"] == "started":
            view.started(label)
        elif ev["event"] == "finished":
            view.finished(label, ev)


def make_view(out: TextIO) -> View:
    """A live view on a terminal, plain lines anywhere else."""
    return LiveView(out, color=use_color(out)) if is_tty(out) else PlainView(out)


def main(paths: Sequence[str], templates: Sequence[str], *, workers: int) -> int:
    """The ``run`` subcommand; returns the exit status."""
    try:
        loaded = load_templates(templates)
        entries = load_entries(paths, loaded)
    except BadFile as exc:
        print(f"stepline run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    run = functools.partial(run_entries, entries, loaded, make_view(sys.stdout), workers=workers)
    ok = trio.run(_until_interrupted, run)
    if ok is None:
        print("stepline run: interrupted; every job was cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_FAILED


async def _until_interrupted(run: Callable[[], Awaitable[bool]]) -> bool | None:
    """``run()``'s result, or None when Ctrl-C cancelled it (cancelling every job: an orderly
    stop, where a KeyboardInterrupt could strike anywhere)."""
    ok: bool | None = None
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            ok = await run()
            nursery.cancel_scope.cancel()
    return ok


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return
