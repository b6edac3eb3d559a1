"""``GET /metrics``: Prometheus text, parsed with prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .test_rest import http_server

pytestmark = pytest.mark.e2e


async def test_metrics_count_jobs_by_state_queue_depth_and_durations() -> None:
    async with http_server("--workers", "1") as (driver, client):
        await client.post("/jobs", json={"job": {"value": 1}})
        await client.post("/jobs", json={"job": {"fail": "no"}})
        await client.post("/jobs", json={"job": {"sleep": 30}})
        await client.post("/jobs", json={"job": {"value": 4}})  # waits behind the sleep
        await driver.wait_for("started", job="j3")
        response = await client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        assert samples[("stepline_jobs", (("state", "running"),))] == 1
        assert samples[("stepline_jobs", (("state", "queued"),))] == 1
        assert samples[("stepline_queue_depth", ())] == 1
        assert samples[("stepline_jobs_finished", (("state", "succeeded"),))] == 1
        assert samples[("stepline_jobs_finished", (("state", "failed"),))] == 1
        assert samples[("stepline_job_duration_seconds_count", (("state", "succeeded"),))] == 1
        assert samples[("stepline_job_duration_seconds_count", (("state", "failed"),))] == 1
        assert samples[("stepline_events_total", (("event", "accepted"),))] == 4
        assert samples[("stepline_http_requests_total", (("code", "202"),))] == 4
        assert samples[("stepline_workers", ())] == 1
        await client.post("/jobs/j3/cancel")
