"""Per-job event histories: bounded, lifecycle events kept, gaps reported, readers independent."""

from __future__ import annotations

import pytest

from stepline.client._history import EventHistory, HistoryReader, HistoryRouter


def ev(kind: str, job: str = "j1", **fields: object) -> dict[str, object]:
    return {"event": kind, "ts": 1.0, "job": job, **fields}


def drain(reader: HistoryReader) -> list[dict[str, object]]:
    out = []
    while (event := reader.pop()) is not None:
        out.append(event)
    return out


def test_a_reader_gets_everything_in_order_and_stops_after_finished() -> None:
    history = EventHistory("j1")
    reader = HistoryReader(history)
    history.append(ev("accepted"))
    history.append(ev("started"))
    assert [e["event"] for e in drain(reader)] == ["accepted", "started"]
    ended_early = reader.ended
    assert not ended_early
    history.append(ev("log", message="x"))
    history.append(ev("finished", state="succeeded", elapsed=2.0))
    assert [e["event"] for e in drain(reader)] == ["log", "finished"]
    assert reader.ended
    assert history.state == "succeeded"
    assert history.elapsed == 2.0


def test_eviction_keeps_lifecycle_events_and_marks_the_gap() -> None:
    history = EventHistory("j1", capacity=5)
    history.append(ev("accepted"))
    history.append(ev("started"))
    for i in range(10):
        history.append(ev("log", message=str(i)))
    history.append(ev("finished", state="failed"))
    events = drain(HistoryReader(history))
    assert [e["event"] for e in events] == [
        "accepted",
        "started",
        "dropped",
        "log",
        "log",
        "finished",
    ]
    assert events[2] == {"event": "dropped", "ts": events[2]["ts"], "job": "j1", "count": 8}
    assert [e["message"] for e in events[3:5]] == ["8", "9"]
    assert history.evicted == 8


def test_a_reader_behind_an_eviction_is_told_how_much_it_missed() -> None:
    history = EventHistory("j1", capacity=4)
    reader = HistoryReader(history)
    history.append(ev("accepted"))
    history.append(ev("log", message="0"))
    assert [e["event"] for e in drain(reader)] == ["accepted", "log"]
    for i in range(1, 6):
        history.append(ev("log", message=str(i)))
    rest = drain(reader)
    assert [e.get("count", e.get("message")) for e in rest] == [2, "3", "4", "5"]


def test_state_follows_the_lifecycle() -> None:
    history = EventHistory("j1")
    assert (history.state, history.elapsed, history.done) == ("queued", 0.0, False)
    history.append(ev("accepted"))
    history.append(ev("started"))
    assert history.state == "running"
    assert history.elapsed > 0  # the `started` event's ts is long past
    history.append(ev("finished", state="cancelled", elapsed=0.5))
    assert (history.state, history.elapsed, history.done) == ("cancelled", 0.5, True)


def test_capacity_must_hold_the_lifecycle() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        EventHistory("j1", capacity=3)


def test_the_router_creates_at_accepted_and_lets_go_at_finished() -> None:
    router = HistoryRouter(EventHistory)
    assert router.route({"event": "pong", "ts": 1.0}) is None
    assert router.route(ev("started", job="j9")) is None  # no `accepted` first: a stray
    history = router.route(ev("accepted"))
    assert history is not None
    assert router.get("j1") is history
    assert router.route(ev("finished", state="succeeded")) is history
    assert router.get("j1") is None
    assert router.live() == []
    assert [e["event"] for e in drain(HistoryReader(history))] == ["accepted", "finished"]
