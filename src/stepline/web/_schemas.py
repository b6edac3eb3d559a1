"""The OpenAPI document's schemas: the shapes of request bodies and of answers.

Kept apart from the operations (:mod:`stepline.web._openapi`) that refer to them by
``$ref``: a shape is defined once, however many endpoints take or give it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SCHEMAS", "STATES"]

STATES: Final = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]

SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "Submit": {
        "type": "object",
        "description": "exactly one of job and template",
        "oneOf": [{"required": ["job"]}, {"required": ["template"]}],
        "additionalProperties": False,
        "properties": {
            "job": {"type": "object", "description": "a job spec (docs/protocol.md)"},
            "template": {"type": "string"},
            "params": {"type": "object"},
            "name": {"type": "string"},
        },
    },
    "Schedule": {
        "type": "object",
        "description": "exactly one of cron and every, exactly one of job and template",
        "allOf": [
            {"oneOf": [{"required": ["cron"]}, {"required": ["every"]}]},
            {"oneOf": [{"required": ["job"]}, {"required": ["template"]}]},
        ],
        "additionalProperties": False,
        "properties": {
            "cron": {"type": "string"},
            "every": {"type": "number", "exclusiveMinimum": 0},
            "tz": {"type": "string"},
            "job": {"type": "object"},
            "template": {"type": "string"},
            "params": {"type": "object"},
            "name": {"type": "string"},
            "overlap": {"type": "string", "enum": ["skip", "allow"]},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["job"],
        "properties": {"job": {"type": "string"}},
    },
    "HookAccepted": {
        "type": "object",
        "required": ["job", "ignored"],
        "properties": {
            "job": {"type": "string"},
            "ignored": {
                "type": "array",
                "items": {"type": "string"},
                "description": "keys of the body the template does not take, left out",
            },
        },
    },
    "Job": {
        "type": "object",
        "required": ["job", "state"],
        "properties": {
            "job": {"type": "string"},
            "state": {"type": "string", "enum": STATES},
            "name": {"type": ["string", "null"]},
            "elapsed": {"type": "number"},
            "output": {},
            "error": {"type": ["object", "null"]},
        },
    },
    "Logs": {
        "type": "object",
        "required": ["job", "lines", "next", "trimmed", "done"],
        "properties": {
            "job": {"type": "string"},
            "next": {"type": "integer"},
            "done": {"type": "boolean"},
            "trimmed": {"type": "integer"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["n", "ts", "stream", "line"],
                    "properties": {
                        "n": {"type": "integer"},
                        "ts": {"type": "number"},
                        "step": {"type": "string"},
                        "stream": {"type": "string"},
                        "line": {"type": "string"},
                    },
                },
            },
        },
    },
    "Graph": {
        "type": "object",
        "required": ["kind", "nodes"],
        "properties": {
            "kind": {"type": "string", "enum": ["tasks", "steps"]},
            "nodes": {"type": "array"},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["queued", "running", "finished", "workers", "queue_size"],
        "properties": {
            "queued": {"type": "integer"},
            "running": {"type": "integer"},
            "finished": {"type": "object"},
            "workers": {"type": "integer"},
            "queue_size": {"type": "integer"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["ok", "state"],
        "properties": {"ok": {"type": "boolean"}, "state": {"type": "string"}},
    },
}
