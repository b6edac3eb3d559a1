"""Features loaded on first use: a failure to load one is a typed error, never ``internal``.

Much of stepline (the strict command decoder, cron, HTTP, matrices, callbacks, ...) is imported
the first time it is needed, to keep start-up short. An import reads files, so it can fail long
after start-up for reasons that have nothing to do with the request: no file descriptor left
(EMFILE, when running jobs hold every one), a file system error. Such a failure raised a raw
``OSError`` from deep inside the request: the command was answered ``internal``, or, in the
command decoder, the whole server stopped. Under :func:`loading` it is :class:`Unavailable`
(code ``unavailable``), which names the feature and the reason; the same request may succeed
later, and a partly imported module is imported again next time (Python drops it from
``sys.modules`` when its import fails).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ._errors import Unavailable

__all__ = ["close_match", "loading"]


@contextmanager
def loading(feature: str) -> Iterator[None]:
    """Run the imports (or first-use set-up) of ``feature``; a failure is :class:`Unavailable`."""
    try:
        yield
    except (OSError, ImportError) as exc:
        raise Unavailable(f"could not load {feature}: {_reason(exc)}") from exc


def close_match(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name closest to ``name``, for a "did you mean" hint; None if there is none, or
    if the matcher cannot be loaded (a message loses its hint rather than failing)."""
    try:
        with loading("the spelling matcher"):
            import difflib  # start-up time: needed only for a message
    except Unavailable:
        return None
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def _reason(exc: OSError | ImportError) -> str:
    """``Too many open files (EMFILE)``: the cause without the file's path, or the import's."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or 'error'} ({name})"
    return f"{type(exc).__name__}: {exc}"
