"""``stepline.steps``: the Python builder produces exactly the protocol's JSON, which validates."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

import stepline
from stepline import steps as s
from stepline.spec._validate import validate_job

TEMPLATES = {"greet": {"params": {"who": "you"}, "steps": [{"value": "hi ${params.who}"}]}}


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (s.sleep(1.5), {"sleep": 1.5}),
        (s.value({"a": [1, None]}), {"value": {"a": [1, None]}}),
        (s.log("text"), {"log": "text"}),
        (s.fail("why"), {"fail": "why"}),
        (s.run(["make", "-j2"]), {"run": ["make", "-j2"]}),
        (s.run(("make",)), {"run": ["make"]}),
        (s.run("echo hi | wc -c"), {"run": "echo hi | wc -c"}),
        (
            s.run(["cat"], env={"A": "1"}, cwd="/tmp", stdin="in", grace=2),
            {"run": ["cat"], "env": {"A": "1"}, "cwd": "/tmp", "stdin": "in", "grace": 2},
        ),
        (s.seq(s.value(1), s.value(2)), {"seq": [{"value": 1}, {"value": 2}]}),
        (s.par(s.value(1), s.sleep(1)), {"par": [{"value": 1}, {"sleep": 1}]}),
        (s.par(s.value(1), limit=3), {"par": [{"value": 1}], "limit": 3}),
        (s.race(s.value(1), s.fail("x")), {"race": [{"value": 1}, {"fail": "x"}]}),
        (s.try_(s.fail("x")), {"try": {"fail": "x"}}),
        (s.try_(s.fail("x"), catch=s.value(0)), {"try": {"fail": "x"}, "catch": {"value": 0}}),
        (s.use("greet"), {"use": "greet"}),
        (s.use("greet", who="me"), {"use": "greet", "with": {"who": "me"}}),
        (s.retry(s.run("x"), 3), {"run": "x", "retry": {"attempts": 3}}),
        (
            s.retry(s.run("x"), 3, backoff=0.5, factor=3),
            {"run": "x", "retry": {"attempts": 3, "backoff": 0.5, "factor": 3}},
        ),
        (s.timeout(s.sleep(9), 2), {"sleep": 9, "timeout": 2}),
        (s.named(s.value(1), "one"), {"value": 1, "name": "one"}),
        (s.job(s.value(1)), {"steps": [{"value": 1}]}),
        (
            s.job(s.value(1), name="j", timeout=5, retry=2, params={"p": 1}),
            {
                "steps": [{"value": 1}],
                "name": "j",
                "timeout": 5,
                "retry": {"attempts": 2},
                "params": {"p": 1},
            },
        ),
        (
            s.job(s.value(1), retry={"attempts": 2, "backoff": 1}),
            {"steps": [{"value": 1}], "retry": {"attempts": 2, "backoff": 1}},
        ),
    ],
)
def test_each_builder_makes_exactly_the_protocol_json(built: Any, expected: Any) -> None:
    assert built == expected
    assert json.loads(json.dumps(built)) == expected  # plain JSON data, nothing else
    validate_job(built, templates=TEMPLATES)


def test_the_issue_example_round_trips_through_the_validator() -> None:
    job = s.seq(s.run(["make"]), s.retry(s.run("curl -fsS http://localhost/"), attempts=3))
    spec = validate_job(job)
    assert spec.body.path == "steps[0]"  # the bare `seq` step is the job's body
    assert job == {
        "seq": [{"run": ["make"]}, {"run": "curl -fsS http://localhost/", "retry": {"attempts": 3}}]
    }


def test_modifiers_stack_and_never_change_their_argument() -> None:
    base = s.run("flaky")
    built = s.named(s.timeout(s.retry(base, 4, backoff=1), 10), "fetch")
    assert base == {"run": "flaky"}
    assert built == {
        "run": "flaky",
        "retry": {"attempts": 4, "backoff": 1},
        "timeout": 10,
        "name": "fetch",
    }
    validate_job(built)


def test_a_list_where_separate_steps_belong_is_caught_early() -> None:
    with pytest.raises(TypeError, match=r"seq\(\) takes steps"):
        # The wrong types on purpose: the builder's own check at run time is under test.
        s.seq([s.value(1), s.value(2)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry\(\) takes steps"):
        s.retry("make", 3)  # type: ignore[arg-type]


def test_invalid_values_are_left_for_the_validator_to_name() -> None:
    with pytest.raises(stepline.InvalidJob, match=r"steps\[0\]\.par\[1\]\.sleep"):
        validate_job(s.job(s.par(s.value(1), s.sleep(-1))))


async def test_a_built_job_runs(autojump_clock: MockClock) -> None:
    job = s.job(
        s.log("start"),
        s.try_(s.timeout(s.sleep(60), 1), catch=s.value("caught")),
        s.race(s.seq(s.sleep(5), s.value("slow")), s.seq(s.sleep(1), s.value("fast"))),
        s.par(s.value("${params.p}"), s.use("greet", who="builder")),
        params={"p": "param"},
    )
    async with stepline.open_executor() as ex:
        await ex.define("greet", TEMPLATES["greet"])
        handle = await ex.submit(job)
        assert await handle.wait() == ["param", "hi builder"]
        assert trio.current_time() == pytest.approx(2)  # 1 s timeout, then the 1 s race


_leaves = st.one_of(
    st.floats(0, 10).map(s.sleep),
    st.integers(-(2**63), 2**63 - 1).map(s.value),  # the range the protocol encodes
    st.text().map(s.log),
    st.text().map(s.fail),
    st.lists(st.text(alphabet="abc", min_size=1), min_size=1).map(s.run),
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    many = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        many.map(lambda steps: s.seq(*steps)),
        st.builds(
            lambda steps, limit: s.par(*steps, limit=limit), many, st.none() | st.integers(1, 4)
        ),
        many.map(lambda steps: s.race(*steps)),
        st.builds(s.try_, children, st.none() | children),
        st.builds(s.retry, children, st.integers(1, 5), backoff=st.none() | st.floats(0, 2)),
        st.builds(s.timeout, children, st.floats(0, 100)),
        st.builds(s.named, children, st.text(min_size=1)),
    )


@given(st.recursive(_leaves, _extend, max_leaves=12))
def test_any_built_tree_is_plain_json_and_validates(step: dict[str, Any]) -> None:
    assert json.loads(json.dumps(step)) == step
    validate_job(s.job(step, name="generated"))
