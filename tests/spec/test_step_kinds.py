"""Every step kind of the registry (``spec/_steps.STEP_KINDS``) through every other table: the
``stepline.steps`` builder, the validator, the engine's interpreters and ``stepline graph``'s
summaries. A new kind fails here until it has all of them (and an example below)."""

from __future__ import annotations

import keyword
from typing import Any

import pytest

from stepline import steps as s
from stepline.cli._graph import summarize
from stepline.engine._interpret import INTERPRETERS
from stepline.spec._keys import ALLOWED, KINDS
from stepline.spec._model import Deferred, Graph, Seq
from stepline.spec._steps import STEP_KINDS
from stepline.spec._validate import validate_job

TEMPLATES = {"greet": {"steps": [{"log": "hello ${params.who}"}]}}

# Each kind built with the builder, and the summary `stepline graph` shows for it.
EXAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "sleep": (s.sleep(1.5), "sleep 1.5"),
    "value": (s.value({"a": 1}), "value"),
    "log": (s.log("hello"), "log: hello"),
    "fail": (s.fail("broken"), "fail: broken"),
    "run": (s.run(["make", "test"], env={"A": "1"}, stream=True), "run: make test"),
    "seq": (s.seq(s.log("a"), s.log("b")), "seq (2 steps)"),
    "par": (s.par(s.log("a"), s.log("b"), limit=1), "par (2 steps)"),
    "race": (s.race(s.log("a"), s.log("b")), "race (2 steps)"),
    "try": (s.try_(s.fail("x"), catch=s.value(0)), "try/catch"),
    "use": (s.use("greet", who="x"), "use: greet"),
    "http": (
        s.http("https://example.com/hook", json={"a": 1}),
        "http: POST https://example.com/hook",
    ),
}


def builder(key: str) -> Any:
    return getattr(s, f"{key}_" if keyword.iskeyword(key) else key)


def test_every_kind_has_an_example_here() -> None:
    assert set(EXAMPLES) == set(STEP_KINDS) == KINDS


@pytest.mark.parametrize("key", sorted(STEP_KINDS))
def test_a_kind_goes_through_every_table(key: str) -> None:
    kind = STEP_KINDS[key]
    built, summary = EXAMPLES[key]
    assert key in builder(key).__name__.rstrip("_")
    assert key in built, "the builder makes a step of its own kind"
    spec = validate_job(built, templates=TEMPLATES, params={"who": "x"}).body
    assert type(spec) is kind.spec
    assert kind.spec in INTERPRETERS
    assert summarize(spec) == summary
    assert set(built) <= ALLOWED[key]


def test_the_interpreters_are_the_kinds_and_the_two_job_bodies() -> None:
    assert set(INTERPRETERS) == {kind.spec for kind in STEP_KINDS.values()} | {Graph, Deferred}


def test_a_job_of_tasks_with_callbacks_built_in_python() -> None:
    job = s.job(
        tasks={
            "build": s.task(s.run("make")),
            "test": s.task(
                s.run(["pytest", "-k", "${matrix.k}"]), needs="build", matrix={"k": "ab"}
            ),
            "report": s.task(s.log("failed"), needs=["test"], if_="failure"),
        },
        limit=2,
        on_finish=[
            s.notify("done"),
            s.alert("broken", when="failure"),
            s.webhook("https://example.com/hook", payload={"x": 1}, retry=2),
            s.run_callback("cat > outcome.json", when="always", timeout=5),
        ],
    )
    spec = validate_job(job)
    assert isinstance(spec.body, Graph)
    assert [t.name for t in spec.body.tasks] == ["build", "test[a]", "test[b]", "report"]
    assert [type(c).__name__ for c in spec.on_finish] == [
        "Notify",
        "Alert",
        "Webhook",
        "RunCallback",
    ]
    with pytest.raises(TypeError, match="not both"):
        s.job(s.log("x"), tasks={"a": s.task(s.log("y"))})


def test_a_job_of_steps_is_still_a_sequence() -> None:
    assert isinstance(validate_job(s.job(s.log("a"), s.log("b"))).body, Seq)
