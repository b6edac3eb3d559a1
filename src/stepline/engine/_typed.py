"""Typed outputs of ``run`` steps: ``"parse": "json" | "text" | "lines"``.

By default a ``run`` step's output is ``{"exit", "stdout", "stderr"}``; a step that prints a
result for the next one says how to read it instead, so the value a downstream task gets is the
data itself (``${tasks.plan.output.shards}``), not a string with a trailing newline to strip in
shell. Parsing happens only after a zero exit; a stdout that does not parse fails the step with
error type ``invalid_output`` (the same type an ``http`` step's bad JSON body gets), carrying the
stdout's tail so the cause is visible.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from .._errors import StepFailed
from ..spec._model import Run

__all__ = ["parse_output"]

_TAIL: Final = 4096


def parse_output(step: Run, stdout: str, truncated: bool) -> Any:
    """``stdout`` read as ``step.parse`` says; raises ``StepFailed`` when it cannot be."""
    mode = step.parse
    if truncated:
        raise _invalid(step, f"cannot parse stdout as {mode}: it was cut at the output cap", stdout)
    if mode == "json":
        try:
            return orjson.loads(stdout)
        except orjson.JSONDecodeError as exc:
            raise _invalid(step, f"stdout is not JSON: {exc}", stdout) from None
    text = stdout[:-1] if stdout.endswith("\n") else stdout
    if mode == "text":
        return text
    return text.split("\n") if text else []


def _invalid(step: Run, message: str, stdout: str) -> StepFailed:
    extra = {"stdout": stdout[-_TAIL:]}
    return StepFailed("invalid_output", message, step.path, step.mods.name, extra)
