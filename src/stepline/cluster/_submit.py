"""A submit made ready for the shared table: validated here, encoded as the stored request.

Used by the ``submit`` command (:mod:`._commands`) and by schedule firings
(:mod:`._schedules`): both validate on the node that receives them, so a bad job is refused
before anything is written, and the node that claims it validates the stored request again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from attrs import frozen

from ..store._admit import encode_request
from ..wire._events import RequestId
from ._templates import refresh_templates

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["Staged", "prepare"]


@frozen
class Staged:
    """A validated submit, waiting for the transaction that inserts it."""

    name: str | None
    request: bytes
    request_id: RequestId
    extra: dict[str, Any]


async def prepare(
    node: ClusterNode,
    job: Any,
    template: str | None,
    params: Mapping[str, Any] | None,
    name: str | None,
    request_id: RequestId,
    extra: dict[str, Any],
) -> Staged:
    """Validate a submit as one process would (a template defined on another node is read
    first) and encode the request a claiming node will run it from; nothing is written yet."""
    executor = node.executor
    executor.check_accepting()
    if template is not None and template not in executor.templates:
        await refresh_templates(node, node.commands_conn)  # defined on another node just now?
    spec = executor.validate(job, template, params)
    raw = job if template is None else executor.templates[template]
    request = encode_request(raw, params, spec, executor.templates, request_id)
    return Staged(name if name is not None else spec.name, request, request_id, extra)
