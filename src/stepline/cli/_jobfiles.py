"""Job files as ``run`` and ``check`` read them: every job of every file, validated up front.

A file ending in ``.json`` holds one job (the whole file is one JSON value, formatted as you
like); any other file (``.jsonl``, ``.ndjson``, ...) holds JSON Lines, one job per line, blank
lines ignored. ``-`` (stdin) is either: one JSON object, or JSON Lines. Jobs may ``use``
templates given as ``--template NAME=FILE``.

Every problem of every file is collected before anything is reported, so one run of ``check``
(or a refused ``run``) lists them all, each naming its file and line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from .._errors import InvalidJob
from ..spec._validate import validate_job, validate_template

__all__ = ["BadFile", "Entry", "load_entries", "load_file", "load_templates", "parse_params"]


class BadFile(Exception):
    """A job file or template file that cannot be used; the message names file and line."""


@frozen
class Entry:
    """One job read from a file; ``label`` is ``file`` or ``file:line``, plus ``(name)``."""

    label: str
    job: Any


def read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFile(f"{path}: cannot read: {exc}") from None


def parse_json(text: str, where: str, *, whole_file: bool = False) -> Any:
    """One JSON value; a ``.json`` file holding several gets told what to do instead."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if whole_file and exc.msg == "Extra data":
            raise BadFile(
                f"{where}: more than one JSON value (the next starts at line {exc.lineno}): "
                "a .json file holds one job; put one job per line in a .jsonl file to run several"
            ) from None
        raise BadFile(f"{where}: not JSON: {exc}") from None


def _label(where: str, job: Any) -> str:
    name = job.get("name") if isinstance(job, dict) else None
    return f"{where} ({name})" if isinstance(name, str) else where


def load_file(path: str) -> list[Entry]:
    """The jobs of one file (see the module doc for the two formats)."""
    text = read_text(path)
    if path == "-" and (whole := _one_value(text)) is not None:
        return [Entry(_label(path, whole), whole)]  # one job, formatted over several lines
    if path.endswith(".json"):
        job = parse_json(text, path, whole_file=True)
        return [Entry(_label(path, job), job)]
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            where = f"{path}:{number}"
            job = parse_json(line, where)
            entries.append(Entry(_label(where, job), job))
    if not entries:
        raise BadFile(f"{path}: no jobs in this file")
    return entries


def _one_value(text: str) -> Any:
    """The job when ``text`` is one JSON object (over any number of lines), else None."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def load_templates(specs: Sequence[str]) -> dict[str, Any]:
    """``NAME=FILE`` pairs to templates, each checked as ``define`` would check it."""
    templates: dict[str, Any] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (name and sep and path):
            raise BadFile(f"--template {spec!r}: expected NAME=FILE")
        job = parse_json(read_text(path), path, whole_file=True)
        try:
            validate_template(job, templates, name=name)
        except InvalidJob as exc:
            raise BadFile(f"{path}: invalid template: {exc.message}") from None
        templates[name] = job
    return templates


def parse_params(text: str | None) -> dict[str, Any] | None:
    """``--params JSON``: the parameters every job is submitted with."""
    if text is None:
        return None
    params = parse_json(text, "--params")
    if not isinstance(params, dict):
        raise BadFile("--params: expected a JSON object")
    return params


def load_entries(
    paths: Sequence[str],
    templates: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
) -> list[Entry]:
    """Every job of every file, validated as a submit with ``params`` would validate it;
    raises :class:`BadFile` listing every problem."""
    problems: list[str] = []
    entries: list[Entry] = []
    for path in paths:
        try:
            loaded = load_file(path)
        except BadFile as exc:
            problems.append(str(exc))
            continue
        for entry in loaded:
            try:
                validate_job(entry.job, params=params, templates=templates)
            except InvalidJob as exc:
                problems.append(f"{entry.label}: invalid job: {exc.message}")
        entries += loaded
    if problems:
        raise BadFile("\n".join(problems))
    return entries
