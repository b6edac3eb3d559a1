"""``GET /openapi.json``: the OpenAPI 3.1 document of every endpoint the front serves.

Written out as data rather than generated: the routes are few, and the document is the
contract that schemathesis checks the running server against (tests/web/test_openapi.py), so
a route or an answer that drifts from it fails a test.
"""

from __future__ import annotations

from typing import Any, Final

from .._version import __version__
from ._errors import STATUS_OF
from ._schemas import SCHEMAS, STATES

__all__ = ["openapi_document"]

_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_OBJECT: Final = {"type": "object"}


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    """Error answers for ``codes`` (grouped by their HTTP status), plus 401 for the token."""
    out: dict[str, Any] = {}
    for code in (*codes, "unauthorized"):
        status = str(STATUS_OF[code])
        out.setdefault(status, _json(_ERROR, f"refused: {code}"))
        if code not in out[status]["description"]:
            out[status]["description"] += f", {code}"
    return out


def _path_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
        "example": example,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_JOB_ID = _path_param("job", "a job id (j1, j2, ...)", "j1")
_SUBMIT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submit"}}},
}
# What a client (and schemathesis' stateful phase) can do next with the id a submit returns.
_JOB_LINKS: Final = {
    op: {"operationId": op, "parameters": {"job": "$response.body#/job"}}
    for op in ("getJob", "cancel", "logs", "graph")
}
_TEMPLATE_BODY = {"required": True, "content": {"application/json": {"schema": _OBJECT}}}

_PATHS: Final[dict[str, Any]] = {
    "/jobs": {
        "post": {
            "summary": "Submit a job (a spec, or a template with params)",
            "operationId": "submit",
            "requestBody": _SUBMIT_BODY,
            "responses": {
                "202": {
                    **_json({"$ref": "#/components/schemas/Accepted"}, "accepted"),
                    "links": _JOB_LINKS,
                },
                **_errors(
                    "bad_json", "invalid_job", "unknown_template", "line_too_long", "queue_full"
                ),
            },
        },
        "get": {
            "summary": "Job records, most recent first",
            "operationId": "listJobs",
            "parameters": [
                _query(
                    "state",
                    {"type": "array", "items": {"type": "string", "enum": STATES}},
                    "only jobs in one of these states (repeat the parameter)",
                ),
                _query("name", {"type": "string"}, "only jobs of this name"),
                _query("since", {"type": "number"}, "only jobs created at or after (Unix time)"),
                _query("limit", {"type": "integer", "minimum": 0}, "at most this many (100)"),
                _query(
                    "before",
                    {"type": "string"},
                    "only jobs accepted before this one (the previous page's next)",
                ),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["jobs", "next"],
                        "properties": {
                            "jobs": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Job"},
                            },
                            "next": {
                                "type": ["string", "null"],
                                "description": "the cursor for the next, older page (before=)",
                            },
                        },
                    },
                    "the records",
                ),
                **_errors("bad_command", "unknown_job"),
            },
        },
    },
    "/jobs/{job}": {
        "get": {
            "summary": "One job's status record",
            "operationId": "getJob",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Job"}, "the record"),
                **_errors("unknown_job"),
            },
        }
    },
    "/jobs/{job}/cancel": {
        "post": {
            "summary": "Cancel a job; its finished event (state cancelled) follows",
            "operationId": "cancel",
            "parameters": [_JOB_ID],
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["job", "state"],
                        "properties": {"job": {"type": "string"}, "state": {"type": "string"}},
                    },
                    "cancelling",
                ),
                **_errors("unknown_job", "already_finished"),
            },
        }
    },
    "/jobs/{job}/logs": {
        "get": {
            "summary": "A job's output lines numbered above `after`",
            "operationId": "logs",
            "parameters": [
                _JOB_ID,
                _query("after", {"type": "integer", "minimum": 0}, "the last line already read"),
            ],
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Logs"}, "the lines"),
                **_errors("unknown_job", "bad_command"),
            },
        }
    },
    "/jobs/{job}/graph": {
        "get": {
            "summary": "A job's tasks and their needs (or its steps in order), for drawing",
            "operationId": "graph",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Graph"}, "the graph"),
                **_errors("unknown_job"),
            },
        }
    },
    "/templates/{name}": {
        "put": {
            "summary": 'Define a template (`"hook": true` lets POST /hooks/{name} submit it)',
            "operationId": "define",
            "parameters": [_path_param("name", "the template's name", "deploy")],
            "requestBody": _TEMPLATE_BODY,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["template"],
                        "properties": {"template": {"type": "string"}},
                    },
                    "defined",
                ),
                **_errors("bad_json", "invalid_job", "line_too_long"),
            },
        }
    },
    "/schedules": {
        "post": {
            "summary": "Schedule a job (cron or every)",
            "operationId": "schedule",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Schedule"}}
                },
            },
            "responses": {
                "201": _json(
                    {
                        "type": "object",
                        "required": ["schedule", "next"],
                        "properties": {"schedule": {"type": "string"}, "next": {"type": "number"}},
                    },
                    "scheduled",
                ),
                **_errors(
                    "bad_json", "invalid_job", "unknown_template", "line_too_long", "shutting_down"
                ),
            },
        },
        "get": {
            "summary": "Live schedules",
            "operationId": "listSchedules",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"schedules": {"type": "array"}}}, "schedules"
                ),
                **_errors(),
            },
        },
    },
    "/schedules/{schedule}": {
        "delete": {
            "summary": "Remove a schedule",
            "operationId": "unschedule",
            "parameters": [_path_param("schedule", "a schedule id", "s1")],
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"schedule": {"type": "string"}}}, "removed"
                ),
                **_errors("unknown_schedule"),
            },
        }
    },
    "/alerts": {
        "get": {
            "summary": "Open alerts, oldest first",
            "operationId": "listAlerts",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"alerts": {"type": "array"}}}, "open"
                ),
                **_errors(),
            },
        }
    },
    "/alerts/{alert}/ack": {
        "post": {
            "summary": "Acknowledge an open alert",
            "operationId": "ack",
            "parameters": [_path_param("alert", "an alert id", "a1")],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"alert": {"type": "string"}, "job": {"type": "string"}},
                    },
                    "acked",
                ),
                **_errors("unknown_alert", "already_acked"),
            },
        }
    },
    "/stats": {
        "get": {
            "summary": "Counts: queued, running, finished by state; workers, queue size",
            "operationId": "stats",
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Stats"}, "the counts"),
                **_errors(),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "200 while jobs are taken, 503 once shutting down",
            "operationId": "healthz",
            "responses": {
                "200": _json({"$ref": "#/components/schemas/Health"}, "taking jobs"),
                "503": _json({"$ref": "#/components/schemas/Health"}, "shutting down"),
                **_errors(),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus text: jobs by state, queue depth, job durations",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(),
            },
        }
    },
    "/events": {
        "get": {
            "summary": "Server-Sent Events of every protocol event (resumable: Last-Event-ID)",
            "operationId": "events",
            "parameters": [
                _query("job", {"type": "string"}, "only this job's events"),
                _query(
                    "after", {"type": "integer", "minimum": 0}, "replay kept events above this id"
                ),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "the last event id received (sent by browsers on reconnect)",
                },
            ],
            "responses": {
                "200": {
                    "description": "an endless stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors("bad_command"),
            },
        }
    },
    "/hooks/{name}": {
        "post": {
            "summary": 'Submit template `name` (defined with `"hook": true`), the body as params',
            "operationId": "hook",
            "parameters": [
                _path_param("name", "the template's name", "deploy"),
                {
                    "name": "X-Stepline-Signature",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "sha256=HEX, the HMAC-SHA256 of the body (with --hook-secret)",
                },
            ],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _OBJECT}},
            },
            "responses": {
                "202": _json({"$ref": "#/components/schemas/HookAccepted"}, "accepted"),
                **_errors(
                    "unknown_hook",
                    "bad_signature",
                    "bad_json",
                    "invalid_job",
                    "line_too_long",
                    "queue_full",
                ),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": _json(_OBJECT, "the OpenAPI document"), **_errors()},
        }
    },
    "/": {
        "get": {
            "summary": "The dashboard",
            "operationId": "dashboard",
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **_errors(),
            },
        }
    },
}


def openapi_document(*, token: bool) -> dict[str, Any]:
    """The document; with a token set, every operation requires the bearer scheme."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "stepline",
            "version": __version__,
            "description": "The HTTP front of `stepline serve --http` (docs/http.md).",
        },
        "paths": _PATHS,
        "components": {"schemas": SCHEMAS},
    }
    if token:
        doc["components"] = {
            **doc["components"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        }
        doc["security"] = [{"bearer": []}]
    return doc
