"""Fixtures of the runner tests: each brief step's start both ways (C and Python), the C start
required, a long wait for a silent end."""

from __future__ import annotations

import os

import pytest

from stepline.runners import _early, _spawn

from .pool_tools import HANG


def require_brief_c() -> None:
    """Skip where the C start (``runners/_briefc.c``) was not built; in CI, fail instead: CI
    installs with a compiler, so a missing build there is a broken build, not a choice."""
    if not _spawn.BRIEF_IN_C:
        if os.environ.get("CI"):
            pytest.fail("runners/_briefc.c was not built: the install's compile failed")
        pytest.skip("runners/_briefc.c is not built here (no C compiler at install)")


@pytest.fixture
def brief_c() -> None:
    """The test needs the C start (:func:`require_brief_c`)."""
    require_brief_c()


@pytest.fixture
def long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait for a silent end that only a hang outlasts: a loaded machine may take longer than
    ``WAIT`` to run even ``sh -c 'exit 3'``, and then the step is (rightly) captured on the
    loop."""
    monkeypatch.setattr(_early, "WAIT", HANG)


@pytest.fixture(params=["C start", "Python start"])
def start(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test with brief steps started in C (``_briefc.c``) and the Python way."""
    if request.param == "C start":
        require_brief_c()
    else:
        monkeypatch.setattr(_spawn, "BRIEF_IN_C", False)
    return str(request.param)
