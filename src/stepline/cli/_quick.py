"""The quick mode of ``stepline run``: one command over many arguments, no JSON to write.

::

    stepline run [-j N] -- COMMAND... [::: ARG...]

runs COMMAND once per ARG — or, without ``:::``, once per line of stdin (blank lines skipped) —
as GNU parallel and ``xargs -P`` do. In COMMAND, ``{}`` is replaced by the argument and ``{#}``
by its number (from 1); without ``{}`` the argument is appended. COMMAND given as several words
runs directly (no shell: ``{}`` may sit inside a word, ``out/{}.gz``); given as one word with
spaces it is a shell line, and the argument is shell-quoted where it goes. Every job runs in the
current directory.

Each job's output lines are written tagged with its argument (``ARG<TAB>line``, GNU parallel's
``--tag``), stdout to stdout and stderr to stderr, a job's lines together once it has finished;
a job that did not succeed is reported on stderr. Everything else — ``--halt``, ``--timeout``,
``--json``, signals, the exit status (0 only if every job succeeded) — is ``stepline run``'s.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import trio

from ..wire._events import Event
from ._jobfiles import BadFile, Entry
from ._report import Track, counts_line, describe_error
from ._term import Output, paint, use_color

__all__ = ["QuickView", "quick_entries"]

SEPARATOR = ":::"
_ARG, _NUMBER = "{}", "{#}"


def quick_entries(words: Sequence[str], stdin: TextIO) -> list[Entry]:
    """The jobs of ``COMMAND... [::: ARG...]``; each entry's label is its argument."""
    if SEPARATOR in words:
        at = words.index(SEPARATOR)
        command, arguments = list(words[:at]), list(words[at + 1 :])
        if SEPARATOR in arguments:
            raise BadFile("only one ::: group of arguments is supported")
    else:
        if stdin.isatty():
            raise BadFile("no ::: ARG... and stdin is a terminal: give arguments or pipe lines in")
        command, arguments = list(words), [line for line in stdin.read().splitlines() if line]
    if not command:
        raise BadFile("no command after --")
    if not arguments:
        raise BadFile("no arguments: nothing to run")
    cwd = os.getcwd()
    return [
        Entry(argument, {"name": argument, "steps": [_run_step(command, argument, n, cwd)]})
        for n, argument in enumerate(arguments, 1)
    ]


def _run_step(command: list[str], argument: str, number: int, cwd: str) -> dict[str, Any]:
    if len(command) == 1 and any(c.isspace() for c in command[0]):
        line = command[0]
        if _ARG not in line:
            line += " " + _ARG
        line = line.replace(_ARG, shlex.quote(argument)).replace(_NUMBER, str(number))
        return {"run": line, "cwd": cwd}
    if not any(_ARG in word for word in command):
        command = [*command, _ARG]
    argv = [word.replace(_ARG, argument).replace(_NUMBER, str(number)) for word in command]
    return {"run": argv, "cwd": cwd}


class QuickView:
    """Each job's output, tagged, once it has finished; failures and notes on stderr."""

    def __init__(self, out: Output, err: TextIO | None = None, *, quiet: bool = False) -> None:
        self._out = out
        self._err = err if err is not None else sys.stderr
        self._quiet = quiet
        self._color = use_color(out.stream)

    def started(self, track: Track) -> None:
        pass

    def event(self, track: Track, ev: Event) -> None:
        pass

    def finished(self, track: Track) -> None:
        finished = track.finished or {}
        source = finished.get("output") if finished.get("state") == "succeeded" else None
        source = source if isinstance(source, dict) else finished.get("error") or {}
        tag = paint(track.label, "cyan", self._color)
        self._out.write(_tagged(tag, source.get("stdout")))
        self._write_err(_tagged(track.label, source.get("stderr")))
        if finished.get("state") != "succeeded":
            error = describe_error(finished.get("error") or {})
            self._write_err(f"stepline run: {track.label}: {finished.get('state')}: {error}\n")

    def note(self, text: str) -> None:
        self._write_err(f"stepline run: {text}\n")

    async def animate(self, tracks: Sequence[Track]) -> None:
        await trio.sleep_forever()

    def close(self, tracks: Sequence[Track]) -> None:
        failed = [t.label for t in tracks if t.finished and t.finished["state"] != "succeeded"]
        if failed and not self._quiet:
            self.note(f"{counts_line(tracks)} (not succeeded: {', '.join(failed)})")

    def _write_err(self, text: str) -> None:
        if text:
            self._err.write(text)
            self._err.flush()


def _tagged(tag: str, text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    return "".join(f"{tag}\t{line}\n" for line in text.splitlines())
