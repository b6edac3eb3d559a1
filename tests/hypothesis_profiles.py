"""Hypothesis profiles for the property tests, chosen with ``HYPOTHESIS_PROFILE``.

* ``ci`` (the default, so also what CI gets): derandomized, so every run of the suite tries
  the same examples and a failure reproduces exactly; no per-example deadline, because a loaded
  2-core machine makes example timing meaningless and a deadline would only add flakiness; no
  example database, so nothing a previous run left behind changes what runs.
* ``dev``: random examples, five times as many, with the database (failures are replayed first).
* ``thorough``: fifty times as many, for a long run before a release or after touching the core.

Registered here rather than in ``conftest.py`` (shared by every engineer) and applied only to
the tests that ask for them through :func:`scaled`, which also sizes them: each profile
multiplies a per-test budget instead of forcing one ``max_examples`` on tests of very different
cost.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context

__all__ = ["PROFILE", "note", "scaled"]

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_FACTOR = {"ci": 1, "dev": 5, "thorough": 50}

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
for _name in ("dev", "thorough"):
    settings.register_profile(
        _name, deadline=None, print_blob=True, suppress_health_check=_SLOW_IS_FINE
    )

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "ci"  # so CI=true, with nothing else set: ci
if PROFILE not in _FACTOR:
    raise RuntimeError(f"HYPOTHESIS_PROFILE={PROFILE!r}: expected one of {', '.join(_FACTOR)}")


def scaled(examples: int) -> settings:
    """This test's budget in the ``ci`` profile, multiplied for the longer profiles.

    The profile is applied per test (as the parent of these settings) rather than loaded
    globally, so importing this module never changes how other modules' Hypothesis tests run.
    """
    return settings(settings.get_profile(PROFILE), max_examples=examples * _FACTOR[PROFILE])


def note(label: str) -> None:
    """Count ``label`` in the statistics (``pytest --hypothesis-show-statistics``): they show
    whether the generated examples really reach the cases a test is about. A no-op outside a
    Hypothesis test, so helpers that call it can also be used from plain tests."""
    if currently_in_test_context():
        event(label)
