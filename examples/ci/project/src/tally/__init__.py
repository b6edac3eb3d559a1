"""tally: counting words and numbers in text (the project examples/ci/pipeline.json tests)."""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["mean", "numbers", "top_words", "words"]

_WORD = re.compile(r"[a-z']+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order."""
    return _WORD.findall(text.lower())


def top_words(text: str, n: int = 3) -> list[tuple[str, int]]:
    """The ``n`` most frequent words with their counts (ties: first seen first)."""
    return Counter(words(text)).most_common(n)


def numbers(text: str) -> list[float]:
    """Every number written in ``text``, as floats."""
    return [float(match) for match in _NUMBER.findall(text)]


def mean(values: list[float]) -> float:
    """The arithmetic mean; an empty list has none."""
    if not values:
        raise ValueError("the mean of no values")
    return sum(values) / len(values)
