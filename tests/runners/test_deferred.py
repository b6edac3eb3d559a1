"""The deferred runner: the real runner is made at the first start, and a hard stop holds."""

from __future__ import annotations

from stepline.runners._base import Launch, run_process
from stepline.runners._deferred import DeferredRunner, local_runner
from stepline.runners._fake import FakeRunner
from stepline.runners._sandbox import SandboxRunner


def test_nothing_is_made_until_the_first_start() -> None:
    made: list[FakeRunner] = []

    def make() -> FakeRunner:
        made.append(FakeRunner())
        return made[-1]

    runner = DeferredRunner(make)
    runner.kill_all()  # before any start: nothing to kill, nothing made
    assert (made, runner.made) == ([], False)
    runner.start(Launch(["cat"]))
    assert len(made) == 1
    assert runner.made
    assert made[0].launches == [Launch(["cat"])]
    assert made[0].killing  # the hard stop holds for processes started after it
    assert made[0].live[0].killed.is_set()
    runner.start(Launch(["true"]))
    assert len(made) == 1  # made once


async def test_starts_go_to_the_runner_made() -> None:
    runner = DeferredRunner(FakeRunner)
    result = await run_process(runner, Launch(["cat"], stdin="hi\n"))
    assert (result.returncode, result.stdout) == (0, "hi\n")


def test_the_default_is_the_sandbox_runner_over_the_local_one() -> None:
    made = local_runner()
    assert isinstance(made, SandboxRunner)
    assert type(made.host).__name__ == "LocalRunner"
