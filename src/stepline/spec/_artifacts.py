"""A job's ``artifacts``: glob patterns of workspace files to keep when the job ends.

Patterns are relative to the job's workspace (``junit-*.xml``, ``reports/**/*.html``; ``**``
matches any number of directories). They are checked at submit time so a pattern can never
reach outside the workspace: an absolute pattern, or one with a ``..`` part, is ``invalid_job``.
The engine (:mod:`stepline.engine._artifacts`) copies the matching files out before the
workspace is removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .._errors import InvalidJob

if TYPE_CHECKING:
    from ._fields import Fields

__all__ = ["MAX_PATTERNS", "parse_artifacts"]

MAX_PATTERNS: Final = 100


def parse_artifacts(v: Fields, raw: Any, base: str) -> tuple[str, ...]:
    """The job-level ``artifacts``: a list of relative glob patterns (strings)."""
    where = f"{base}.artifacts" if base else "artifacts"
    value = v.resolve(raw, base, "artifacts")
    if type(value) is str:
        value = [value]  # one pattern alone, as `needs` takes one name
    if type(value) is not list:
        raise InvalidJob(where, "expected a list of glob patterns (relative to the workspace)")
    if len(value) > MAX_PATTERNS:
        raise InvalidJob(where, f"more than {MAX_PATTERNS} patterns")
    check = v if value is raw else v.literal
    return tuple(_pattern(check, item, where, i) for i, item in enumerate(value))


def _pattern(v: Fields, raw: object, where: str, i: int) -> str:
    at = f"{where}[{i}]"
    pattern = v.string(raw, at, "", no_nul=True)
    if not pattern:
        raise InvalidJob(at, "a pattern must not be empty")
    if pattern.startswith("/"):
        raise InvalidJob(at, f"{pattern!r} is outside the workspace: patterns are relative to it")
    if ".." in pattern.split("/"):
        raise InvalidJob(at, f"{pattern!r} reaches outside the workspace ('..')")
    return pattern
