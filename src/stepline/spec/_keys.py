"""The keys a step of each kind and a job may hold, and the hint for a key nothing expects.

A job from a pipe is written by hand or by another program, often after another tool's
vocabulary: an unknown key gets the hint that fits where it stands (a typo of a key of that level,
a key that belongs one level up or down, or a word other tools use: ``cmd`` -> ``run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .._errors import InvalidJob
from .._lazy import close_match
from ._steps import STEP_KINDS
from ._text import show_key

__all__ = [
    "ALLOWED",
    "JOB_KEYS",
    "KINDS",
    "STEP_KEYS",
    "kind_of",
    "unknown_key",
]

KINDS: Final = frozenset(STEP_KINDS)
"""The step kinds: a step object holds exactly one of these keys."""

_MODIFIER_KEYS: Final = ("name", "timeout", "retry")

ALLOWED: Final = {k: frozenset((k, *_MODIFIER_KEYS, *s.options)) for k, s in STEP_KINDS.items()}
"""The keys a step of each kind may hold: its kind, the modifiers and its own options."""

STEP_KEYS: Final = frozenset().union(*ALLOWED.values())
"""Every key some step may hold."""

JOB_KEYS: Final = frozenset(
    (
        *("steps", "tasks", "name", "timeout", "retry", "params", "on_finish", "limit"),
        *("keep_workspace", "stream", "env", "cwd", "artifacts"),
        "hook",  # a template that POST /hooks/{name} may submit (the HTTP front)
        *("limits", "runner"),
    )
)
"""The keys of a job object."""

_ALIASES: Final[Mapping[str, str]] = {
    # words other tools use for what stepline calls otherwise: no spelling is close enough
    **dict.fromkeys(("cmd", "command", "exec", "shell", "sh", "script", "args", "argv"), "run"),
    **dict.fromkeys(("parallel", "paralel", "parralel", "concurrent", "all", "fanout"), "par"),
    **dict.fromkeys(("sequence", "serial", "series"), "seq"),
    **dict.fromkeys(("environment", "environ", "vars"), "env"),
    **dict.fromkeys(("dir", "workdir", "working_dir", "directory", "chdir"), "cwd"),
    **dict.fromkeys(("input", "inputs", "parameters", "args_for", "arguments"), "with"),
    **dict.fromkeys(("template", "call", "include", "uses"), "use"),
    **dict.fromkeys(("retries", "attempts", "repeat"), "retry"),
    **dict.fromkeys(("timeout_s", "time_limit", "deadline", "timelimit"), "timeout"),
    **dict.fromkeys(("wait", "delay"), "sleep"),
    **dict.fromkeys(("concurrency", "max_parallel", "jobs", "workers"), "limit"),
}
_CLOSE_ENOUGH: Final = 0.75  # difflib's 0.6 offered 'params' for 'paralel', 'cwd' for 'cmd'


def _closest(key: str, known: frozenset[str]) -> str | None:
    """The key a typo most likely meant: the closest spelling, else a word another tool uses
    for it (or a misspelling of that word: 'enviroment')."""
    word = key.lower()
    close = close_match(word, sorted(known), _CLOSE_ENOUGH)
    if close is not None:
        return close
    alias = close_match(word, _ALIASES, 0.85)
    return _ALIASES[alias] if alias is not None and _ALIASES[alias] in known else None


def _owners(key: str) -> str:
    """The step kinds that take ``key``: ``'a run step'``, ``'a par or use step'``."""
    kinds = sorted(kind for kind, allowed in ALLOWED.items() if key in allowed)
    return f"a {' or '.join(kinds)} step"


def unknown_key(key: object, kind: str | None = None, *, job: bool = False) -> str:
    """The message for a key nothing expects here (a ``kind`` step's, a step whose kind is not
    known yet, or a ``job`` object's), with a hint: a typo, a key that belongs one level up or
    down, or a word another tool uses. A key is never suggested as a fix for itself."""
    where = f" for a {kind} step" if kind else ""
    message = f"unknown key {show_key(key)}{where}"
    if type(key) is not str:
        return message
    here = ALLOWED[kind] if kind else JOB_KEYS if job else STEP_KEYS
    if key in STEP_KEYS and key not in KINDS and not (job and key in JOB_KEYS):
        return message + f": it belongs on {_owners(key)}"
    if key in JOB_KEYS and not job:
        return message + ': it is a job key; put the step in a job\'s "steps" list to use it'
    if key in KINDS and job:
        return message + f': a {key} step goes in the job\'s "steps" list'
    close = _closest(key, here) or _closest(key, STEP_KEYS if job else JOB_KEYS)
    if close is None or close == key:
        return message
    if close in here:
        return message + f" (did you mean {close!r}?)"
    if close in KINDS:
        return message + f" (did you mean a {close!r} step?)"
    if close in JOB_KEYS:
        return message + f" (did you mean the job key {close!r}?)"
    return message + f" (did you mean {close!r}, a key of {_owners(close)}?)"


def _no_kind(raw: Mapping[Any, Any]) -> str:
    """Why a step object has no kind: a misspelt key, or the kind was simply left out."""
    for key in raw:
        if key not in STEP_KEYS:
            return unknown_key(key)
    kinds = ", ".join(sorted(KINDS))
    return f"{'empty step' if not raw else 'no step kind'}: expected one of {kinds}"


def kind_of(raw: Mapping[Any, Any], path: str) -> str:
    """The one kind key of a step with several keys; every other key must suit that kind."""
    kinds = [key for key in raw if key in KINDS]
    if not kinds:
        raise InvalidJob(path, _no_kind(raw))
    if len(kinds) > 1:
        raise InvalidJob(path, f"more than one step kind: {', '.join(map(repr, kinds))}")
    kind: str = kinds[0]
    allowed = ALLOWED[kind]
    for key in raw:
        if key not in allowed:
            raise InvalidJob(path, unknown_key(key, kind))
    return kind
