"""Start-up: `stepline serve` imports only what reaching `ready` needs; features load on use.

Callbacks, alerts, schedules, `http` steps, `--state`, the embedding API and the other
subcommands are imported when first used (see NOTES.md, Performance). These tests pin that, and
check that a trigger service made on first use behaves as one made at start would have.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import trio

import stepline
from stepline import Config, Executor
from stepline.server._dispatch import dispatch
from stepline.triggers._attach import Triggers
from stepline.wire._commands import Ack, Schedule, Stats, Status

from ..conftest import MemoryOutbox

Event = dict[str, Any]

NOT_AT_START = {
    "stepline.triggers._alerts",
    "stepline.client._api",
    "stepline.client._async",
    "stepline.spec._callbacks",
    "stepline.triggers._callbacks",
    "stepline.client._sync",
    "stepline.cli._demo",
    "stepline.store._pipeline",
    "stepline.store._recovery",
    "stepline.cli._run",
    "stepline.cli._graph",  # `check` and `graph`: serve builds only its own subparser
    "stepline.triggers._schedules",
    "stepline.store",
    "stepline.store._sqlite",
    "stepline.steps",
    "stepline.engine._http",  # the executor holds only its client (_http_client.py)
    "stepline.runners._local",  # the process layer: made at the first `run` step
    "stepline.runners._sandbox",
    "stepline.runners._tree",
    "stepline.runners._cgroup",
    "stepline.runners._spawn",
    "stepline.runners._capture",
    "stepline.wire._commands",  # the command classes: at the first line not a plain submit
    "stepline.web",
    "stepline.web._app",
    "starlette",
    "h11",
    "prometheus_client",
    "cattrs",
    "httpx",
    "sqlite3",
    "zoneinfo",
}


def imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_the_serve_path_imports_no_feature_module() -> None:
    loaded = imported_by("import stepline.cli._main\nstepline.cli._main.build_parser('serve')")
    assert "stepline.engine._executor" in loaded
    assert sorted(loaded & NOT_AT_START) == []


GENERATED_AT_START = {"stepline.engine._status_filter.StatusFilter"}  # a status query, apart

LIST_GENERATED = """
import attrs, sys
for name, module in list(sys.modules.items()):
    for cls in vars(module).values() if name.startswith("stepline.") else ():
        if isinstance(cls, type) and cls.__module__ == name and attrs.has(cls):
            made = [f for f in ("__repr__", "__eq__") if "<attrs generated" in str(
                getattr(getattr(cls, f), "__code__", None))]
            if made:
                print(f"{name}.{cls.__qualname__}")
"""


def test_the_classes_built_at_start_share_their_repr_and_eq() -> None:
    """attrs compiles each class's methods from source: those made at start share
    ``stepline._record``'s ``__repr__``/``__eq__`` and compile only their ``__init__``."""
    serve = "import stepline.cli._main\nstepline.cli._main.build_parser('serve')"
    script = f"{serve}\n{LIST_GENERATED}"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert set(result.stdout.split()) == GENERATED_AT_START


COLLECTOR_PROBE = """
import gc, sys
from stepline.cli import _entry, _main
def report(*_args):
    print(gc.isenabled(), gc.get_freeze_count() > 0)
    return 0
_main.with_late_signals = report  # serve: where the server would start
_main._run = report  # run: where the jobs would start
sys.argv = ["stepline", *sys.argv[1:]]
_entry.main()
"""


@pytest.mark.parametrize("command", [["serve"], ["run", "jobs.json"]])
def test_the_program_loads_without_collections_and_runs_with_them(command: list[str]) -> None:
    """The entry point turns cycle collection off while the program loads; the command runs
    with it on again, the start-up objects frozen out of it."""
    result = subprocess.run(
        [sys.executable, "-c", COLLECTOR_PROBE, *command],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["True", "True"]


def test_the_package_loads_its_exports_on_first_use() -> None:
    assert "stepline.client._api" not in imported_by("import stepline")
    loaded = imported_by("from stepline import Client, open_executor, steps")
    assert {"stepline.client._api", "stepline.client._sync", "stepline.steps"} <= loaded


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = stepline.nothing  # type: ignore[attr-defined]  # the missing name under test
    assert set(stepline.__all__) <= set(dir(stepline))


def reply(out: MemoryOutbox, rid: str) -> Event:
    (event,) = [e for e in out.events if e.get("id") == rid]
    return event


async def test_triggers_never_used_report_none() -> None:
    out = MemoryOutbox()
    ex = Executor(Config(heartbeat=0), out)
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await dispatch(ex, Status(), "status")
        await dispatch(ex, Stats(), "stats")
        await dispatch(ex, Ack("a1"), "ack")
        ex.shutdown("drain")
    status, stats = reply(out, "status"), reply(out, "stats")
    assert (status["alerts"], status["schedules"]) == ([], [])
    assert (stats["alerts"], stats["schedules"], stats["callbacks_pending"]) == ([], 0, 0)
    assert reply(out, "ack")["code"] == "unknown_alert"


async def test_schedules_first_used_after_shutdown_are_refused() -> None:
    out = MemoryOutbox()
    ex = Executor(Config(heartbeat=0), out)
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        ex.shutdown("drain")
    await dispatch(ex, Schedule(every=10, job={"steps": [{"value": 1}]}), "s")
    assert reply(out, "s")["code"] == "shutting_down"
