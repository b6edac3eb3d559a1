"""The dashboard in a real headless Chromium, against a real ``stepline serve --http``.

Each test opens the page the way a person would (``/?access_token=...``: the server has a
token), does something, and waits for the page to show it. Jobs that must be seen running are
held by a gate file the test creates when it has seen enough, so nothing depends on timing.
Every test fails on a script error or a failed request in the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .browser import chromium
from .server import RunningServer, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token"
WAIT = 15_000  # ms: how long the page may take to show a change (a bound, not a pause)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server("--http-token", TOKEN, "--alert-repeat", "3600") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def api(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def page(browser: Browser, server: RunningServer) -> Iterator[Page]:
    """The dashboard, loaded with the token and live; no script error or failed request."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    opened.goto(f"{server.url}/?access_token={TOKEN}")
    expect(opened.locator("#link")).to_have_attribute("data-state", "live", timeout=WAIT)
    yield opened
    context.close()
    assert problems == []


def gated(gate: Path, before: str = "", after: str = "") -> str:
    """A shell line that prints ``before``, waits for ``gate`` to exist, then prints ``after``."""
    return f"echo '{before}'; while [ ! -e '{gate}' ]; do sleep 0.02; done; echo '{after}'"


def submit(api: httpx.Client, job: dict[str, Any], name: str | None = None) -> str:
    body: dict[str, Any] = {"job": job} if name is None else {"job": job, "name": name}
    response = api.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job"]
    return job_id


def row_state(page: Page, job: str) -> Any:
    return page.locator(f"#row-{job} .badge")


def test_without_the_token_the_page_is_refused(browser: Browser, server: RunningServer) -> None:
    context = browser.new_context()
    response = context.new_page().goto(f"{server.url}/")
    assert response is not None
    assert response.status == 401
    context.close()


def test_a_job_appears_live_runs_and_finishes(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    job = submit(api, {"steps": [{"run": gated(gate)}]}, name="held")
    expect(row_state(page, job)).to_have_text("running", timeout=WAIT)
    expect(page.locator(f"#row-{job} td.name")).to_have_text("held", timeout=WAIT)
    expect(page.locator("#count-running b")).not_to_have_text("0", timeout=WAIT)
    gate.touch()
    expect(row_state(page, job)).to_have_text("succeeded", timeout=WAIT)
    expect(page.locator(f"#row-{job} button.cancel")).to_be_hidden()


def test_a_job_submitted_from_the_page(page: Page, server: RunningServer) -> None:
    from playwright.sync_api import expect

    page.fill("#job-spec", '{"name": "from-page", "steps": [{"value": 7}]}')
    page.click("#submit-job")
    expect(page.locator("#submit-result")).to_contain_text("accepted j", timeout=WAIT)
    job = page.locator("#submit-result a").inner_text()
    expect(row_state(page, job)).to_have_text("succeeded", timeout=WAIT)
    finished = server.wait_for("finished", job=job)
    assert finished["output"] == 7


def test_a_rows_link_survives_its_jobs_updates(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    """A row is updated in place: a link rebuilt under the pointer between a click's press and
    its release loses the click (seen as a failed-job page that never opened)."""
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    job = submit(api, {"steps": [{"run": gated(gate)}]})
    expect(row_state(page, job)).to_have_text("running", timeout=WAIT)
    link = page.locator(f"#row-{job} a").element_handle()
    gate.touch()
    expect(row_state(page, job)).to_have_text("succeeded", timeout=WAIT)
    assert link.evaluate("a => a.isConnected")


def test_a_failed_jobs_error_is_shown_on_its_page(page: Page, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    script = "echo applying; echo 'error: column exists' >&2; exit 3"
    job = submit(api, {"steps": [{"run": script, "name": "migrate"}]})
    expect(row_state(page, job)).to_have_text("failed", timeout=WAIT)
    page.click(f"#row-{job} a")
    error = page.locator("#job-error")
    expect(error).to_be_visible(timeout=WAIT)
    expect(error.locator(".error-type")).to_have_text("failure")
    expect(error).to_contain_text("exited with status 3")
    expect(error).to_contain_text("steps[0] (migrate)")
    expect(error.locator("pre.stderr")).to_have_text("error: column exists\n")
    expect(page.locator("#job-graph .node")).to_have_attribute("data-state", "failed")


def test_a_jobs_output_lines_arrive_as_they_are_written(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    job = submit(api, {"stream": True, "steps": [{"run": gated(gate, "first", "second")}]})
    page.goto(page.url.split("#")[0] + f"#job={job}")
    lines = page.locator("#job-lines .line")
    expect(lines).to_have_count(1, timeout=WAIT)
    expect(lines.nth(0)).to_contain_text("first")
    expect(page.locator("#job-state")).to_have_text("running")
    gate.touch()
    expect(lines).to_have_count(2, timeout=WAIT)
    expect(lines.nth(1)).to_contain_text("second")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=WAIT)
    expect(page.locator("#line-count")).to_have_text("2 lines")


def test_a_graphs_tasks_are_drawn_with_their_states(page: Page, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    tasks = {
        "build": {"steps": [{"value": "app"}]},
        "test": {"needs": "build", "steps": [{"fail": "1 test failed"}]},
        "deploy": {"needs": "test", "steps": [{"value": "shipped"}]},
    }
    job = submit(api, {"tasks": tasks})
    page.goto(page.url.split("#")[0] + f"#job={job}")
    expect(page.locator("#job-state")).to_have_text("failed", timeout=WAIT)
    node = page.locator("#job-graph .node")
    expect(node.and_(page.locator("[data-node=build]"))).to_have_attribute(
        "data-state", "succeeded"
    )
    expect(node.and_(page.locator("[data-node=test]"))).to_have_attribute("data-state", "failed")
    expect(node.and_(page.locator("[data-node=deploy]"))).to_have_attribute("data-state", "skipped")
    expect(page.locator("#job-timeline .gantt-row")).to_have_count(4)  # the job and 3 tasks


def test_a_running_job_is_cancelled_from_the_page(
    page: Page, api: httpx.Client, server: RunningServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    job = submit(api, {"steps": [{"run": gated(tmp_path / "never")}]})
    expect(row_state(page, job)).to_have_text("running", timeout=WAIT)
    page.click(f"#row-{job} button.cancel")
    expect(row_state(page, job)).to_have_text("cancelled", timeout=WAIT)
    assert server.wait_for("finished", job=job)["state"] == "cancelled"


def test_an_alert_is_acked_from_the_page(
    page: Page, api: httpx.Client, server: RunningServer
) -> None:
    from playwright.sync_api import expect

    job = submit(
        api,
        {"steps": [{"fail": "no"}], "on_finish": [{"alert": "backup failed", "when": "failure"}]},
    )
    alert = server.wait_for("alert", job=job)["alert"]
    item = page.locator(f"#alert-{alert}")
    expect(item).to_contain_text("backup failed", timeout=WAIT)
    item.locator("button.ack").click()
    expect(item).to_have_count(0, timeout=WAIT)
    assert alert not in [a["alert"] for a in api.get("/alerts").json()["alerts"]]


def test_a_job_beyond_the_table_is_opened_by_its_id(page: Page, api: httpx.Client) -> None:
    """The table keeps the newest jobs only, says so, and opens any other job by its id."""
    from playwright.sync_api import expect

    job = submit(api, {"steps": [{"value": "old"}]}, name="older")
    expect(page.locator("#rows-note")).to_contain_text("The newest 300 jobs are listed")
    page.fill("#find-job-id", job)
    page.click("#find-job button")
    expect(page.locator("#job-page")).to_be_visible(timeout=WAIT)
    expect(page.locator("#job-id")).to_have_text(job)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=WAIT)


def test_older_jobs_are_paged_below_the_table(page: Page, api: httpx.Client) -> None:
    """Past the live table's newest 300 rows, older jobs load a page at a time (GET /jobs with
    the cursor), each opening its job's page."""
    from playwright.sync_api import expect

    for i in range(410):  # more than the table and one older page, whatever ran before
        submit(api, {"value": i}, name="bulk")
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(300, timeout=WAIT)
    newest = api.get("/jobs", params={"limit": 300}).json()
    expect(rows.last).to_have_attribute("data-job", newest["jobs"][-1]["job"], timeout=WAIT)
    first = api.get("/jobs", params={"limit": 100, "before": newest["next"]}).json()
    second = api.get("/jobs", params={"limit": 100, "before": first["next"]}).json()
    older = page.locator("#older-jobs tbody tr")
    page.click("#older-more")
    expect(older).to_have_count(100, timeout=WAIT)
    assert older.first.get_attribute("data-job") == first["jobs"][0]["job"]
    page.click("#older-more")
    expect(older).to_have_count(100 + len(second["jobs"]), timeout=WAIT)
    assert older.nth(100).get_attribute("data-job") == second["jobs"][0]["job"]
    assert second["next"] is None  # fewer than 500 jobs in all: the second page is the last
    expect(page.locator("#older-more")).to_be_hidden()
    older.first.locator("a").click()
    expect(page.locator("#job-id")).to_have_text(first["jobs"][0]["job"], timeout=WAIT)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=WAIT)
