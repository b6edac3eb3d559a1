"""A job's shape for the dashboard to draw: its tasks and their ``needs``, or its steps in order.

Built from the validated spec (what runs, not what was sent). A job with ``steps`` is drawn as
the chain of its top-level steps.
"""

from __future__ import annotations

from typing import Any

from ..spec._graph import topological
from ..spec._model import Deferred, Graph, JobSpec, Seq, Step

__all__ = ["job_graph"]


def job_graph(spec: JobSpec) -> dict[str, Any]:
    """``{"kind": "tasks"|"steps", "nodes": [{"name", "needs"}]}``, each node after its needs."""
    body = spec.body.body if isinstance(spec.body, Deferred) else spec.body
    if isinstance(body, Graph):
        nodes = [
            {"name": task.name, "needs": list(task.needs), "if": task.when}
            for task in topological(body.tasks)
        ]
        return {"kind": "tasks", "nodes": nodes}
    steps = body.steps if isinstance(body, Seq) else (body,)
    chain: list[dict[str, Any]] = []
    for step in steps:
        label = _label(step)
        chain.append({"name": label, "needs": [chain[-1]["name"]] if chain else [], "if": None})
    return {"kind": "steps", "nodes": chain}


def _label(step: Step) -> str:
    """``steps[1] build``: the path keeps labels unique within the job, the name says what."""
    return f"{step.path or 'steps[0]'} {step.mods.name or type(step).__name__.lower()}"
