"""Webhook triggers: ``POST /hooks/{name}`` submits a ``"hook": true`` template, HMAC-signed."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from .test_rest import http_server, problem

pytestmark = pytest.mark.e2e

DEPLOY = {"hook": True, "params": {"ref": "main"}, "steps": [{"value": "deploy ${params.ref}"}]}


def signed(body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Stepline-Signature": f"sha256={digest}", "content-type": "application/json"}


async def test_a_hook_submits_its_template_with_the_body_as_params() -> None:
    async with http_server() as (driver, client):
        await driver.send({"op": "define", "id": 1, "name": "deploy", "job": DEPLOY})
        await driver.wait_for("defined", id=1)
        response = await client.post("/hooks/deploy", json={"ref": "v1.2"})
        assert response.status_code == 202
        assert response.json()["ignored"] == []
        finished = await driver.wait_for("finished", job=response.json()["job"])
        assert finished["output"] == "deploy v1.2"
        empty = await client.post("/hooks/deploy")  # no body: the template's defaults
        finished = await driver.wait_for("finished", job=empty.json()["job"])
        assert finished["output"] == "deploy main"
        problem(await client.post("/hooks/deploy", json=[1]), 400, "bad_command")


async def test_a_hook_takes_the_params_its_template_reads_and_names_the_rest() -> None:
    """A sender's payload is its own (a push event has dozens of keys): keys the template does
    not take are left out and listed, where a submit of the same params is refused."""
    async with http_server() as (driver, client):
        await client.put("/templates/deploy", json=DEPLOY)
        payload = {"ref": "v3", "repository": {"full_name": "o/r"}, "pusher": "me"}
        response = await client.post("/hooks/deploy", json=payload)
        assert response.status_code == 202
        assert response.json()["ignored"] == ["pusher", "repository"]
        finished = await driver.wait_for("finished", job=response.json()["job"])
        assert finished["output"] == "deploy v3"
        refused = await client.post("/jobs", json={"template": "deploy", "params": payload})
        body = problem(refused, 422, "invalid_job")
        assert "no parameter 'repository'" in body["message"]


async def test_only_templates_marked_as_hooks_answer() -> None:
    async with http_server() as (_, client):
        await client.put("/templates/private", json={"steps": [{"value": 1}]})
        problem(await client.post("/hooks/private"), 404, "unknown_hook")
        problem(await client.post("/hooks/missing"), 404, "unknown_hook")
        body = problem(
            await client.put("/templates/x", json={**DEPLOY, "hook": "yes"}), 422, "invalid_job"
        )
        assert "hook" in body["message"]


async def test_with_a_secret_only_signed_requests_are_taken() -> None:
    async with http_server("--hook-secret", "shh") as (driver, client):
        await client.put("/templates/deploy", json=DEPLOY)
        body = json.dumps({"ref": "v2"}).encode()
        problem(await client.post("/hooks/deploy", content=body), 401, "bad_signature")
        wrong = signed(body, "guess")
        problem(
            await client.post("/hooks/deploy", content=body, headers=wrong), 401, "bad_signature"
        )
        tampered = signed(body, "shh")
        problem(
            await client.post("/hooks/deploy", content=body + b" ", headers=tampered),
            401,
            "bad_signature",
        )
        response = await client.post("/hooks/deploy", content=body, headers=signed(body, "shh"))
        assert response.status_code == 202
        finished = await driver.wait_for("finished", job=response.json()["job"])
        assert finished["output"] == "deploy v2"
