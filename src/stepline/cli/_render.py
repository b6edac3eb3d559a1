"""Drawing a job model (:func:`stepline.cli._graph.job_model`) as Graphviz DOT, Mermaid or JSON.

DOT draws each node as a box whose rows are the task's name and its steps; a ``use`` step is a
framed box of its own inside it, naming the template and listing its arguments; the instances
of a matrix task sit in a dashed cluster titled with the matrix names, and an arrow to or from
the matrix task is drawn once, at the cluster's frame; a task switched off by ``if: false`` is
grey and dashed. Edges go from a task to the tasks that need it: dashed red into an
``if: failure`` task, dotted into an ``if: always`` one. The labels are Graphviz
HTML-like labels, so every text is entity-escaped and ``dot`` never sees a raw ``<`` or ``"``.
Mermaid gets the same picture with subgraphs for matrices and text lines for ``use`` boxes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ._graph import fit

__all__ = ["RENDERERS", "render_dot", "render_json", "render_mermaid"]

_ARG_WIDTH = 40  # characters of one `use` argument's value


def _groups(model: dict[str, Any]) -> Iterator[tuple[str | None, list[dict[str, Any]]]]:
    """The nodes in model order, a matrix task's instances gathered at its first one."""
    seen: dict[str, list[dict[str, Any]]] = {}
    order: list[tuple[str | None, list[dict[str, Any]]]] = []
    for node in model["tasks"]:
        group = node.get("group")
        if group is None:
            order.append((None, [node]))
        elif group in seen:
            seen[group].append(node)
        else:
            seen[group] = [node]
            order.append((group, seen[group]))
    yield from order


def _unit_edges(model: dict[str, Any]) -> list[tuple[str, str, str, bool, bool]]:
    """The edges to draw: ``(from, to, if, from_group, to_group)`` between *units*, a matrix
    task's instances counting as one unit (its group). Every instance of a task has the same
    needs, and a need on a matrix task is a need on all its instances, so the instance edges
    between two units are always all pairs: one arrow says it (the model keeps them all)."""
    unit = {node["name"]: node.get("group") for node in model["tasks"]}
    drawn: dict[tuple[str, str, str, bool, bool], None] = {}
    for edge in model["edges"]:
        tail, head = unit[edge["from"]], unit[edge["to"]]
        key = (
            tail or edge["from"],
            head or edge["to"],
            edge["if"],
            tail is not None,
            head is not None,
        )
        drawn[key] = None
    return list(drawn)


def _title(model: dict[str, Any], node: dict[str, Any]) -> str | None:
    """A task's name; none for a step of a ``steps`` job (its label says it all)."""
    return node["name"] if model["kind"] == "tasks" else None


def _argument(key: str, value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"{key}: {fit([text], _ARG_WIDTH, 1)}"


# -- DOT ------------------------------------------------------------------------------------------


def render_dot(model: dict[str, Any], out: TextIO) -> None:
    """Graphviz DOT (``stepline graph job.json | dot -Tsvg > job.svg``)."""
    out.write(f"digraph {_dot_quote(model['name'] or 'job')} {{\n")
    out.write("  rankdir=LR;\n")
    if any(node.get("group") for node in model["tasks"]):
        out.write("  compound=true;\n")  # arrows may end at a matrix's frame
    out.write('  node [shape=box, style=rounded, fontname="Helvetica"];\n')
    out.write('  edge [fontname="Helvetica", fontsize=10];\n')
    for group, nodes in _groups(model):
        indent = "  "
        if group is not None:
            names = ", ".join(nodes[0]["matrix"] or {})
            out.write(f"  subgraph {_dot_quote('cluster_' + group)} {{\n")
            out.write(f"    label=<{_html(group)} <i>(matrix: {_html(names)})</i>>;\n")
            out.write('    style="dashed,rounded"; fontname="Helvetica";\n')
            indent = "    "
        for node in nodes:
            out.write(f"{indent}{_dot_node(model, node)}\n")
        if group is not None:
            out.write("  }\n")
    _dot_edges(model, out)
    out.write("}\n")


def _dot_edges(model: dict[str, Any], out: TextIO) -> None:
    """One arrow per pair of units; a matrix's first instance stands for its frame."""
    first: dict[str, str] = {}
    for node in model["tasks"]:
        first.setdefault(node.get("group") or node["name"], node["name"])
    for tail, head, when, from_group, to_group in _unit_edges(model):
        attrs = [_DOT_EDGE_STYLE[when]] if when in _DOT_EDGE_STYLE else []
        attrs += [f"ltail={_dot_quote('cluster_' + tail)}"] if from_group else []
        attrs += [f"lhead={_dot_quote('cluster_' + head)}"] if to_group else []
        style = f" [{', '.join(attrs)}]" if attrs else ""
        out.write(f"  {_dot_quote(first[tail])} -> {_dot_quote(first[head])}{style};\n")


def _dot_node(model: dict[str, Any], node: dict[str, Any]) -> str:
    rows = []
    title = _title(model, node)
    if title is not None:
        rows.append(f"<tr><td><b>{_html(title)}</b></td></tr>")
    if node["if"] == "never":
        rows.append('<tr><td><font color="grey40">switched off (if: false)</font></td></tr>')
    for step in node["steps"]:
        rows.append(_dot_step(step))
    table = '<table border="0" cellborder="0" cellspacing="2">' + "".join(rows) + "</table>"
    extra = (
        ', style="rounded,dashed", color=grey50, fontcolor=grey40' if node["if"] == "never" else ""
    )
    return f"{_dot_quote(node['name'])} [label=<{table}>{extra}];"


def _dot_step(step: dict[str, Any]) -> str:
    if step["kind"] != "use":
        lines = [_html(line) for line in step["label"].split("\n")]
        return f'<tr><td align="left">{_BR.join(lines)}<br align="left"/></td></tr>'
    lines = [f"use <b>{_html(step['template'])}</b>"]
    lines += [_html(_argument(key, value)) for key, value in step["with"].items()]
    text = _BR.join(lines) + _BR
    return f'<tr><td border="1" bgcolor="#eef2fa" align="left">{text}</td></tr>'


_BR = '<br align="left"/>'  # a line break that left-aligns the line before it
_DOT_EDGE_STYLE = {
    "failure": 'style=dashed, color=red, label="failure"',
    "always": 'style=dotted, label="always"',
}


def _html(text: str) -> str:
    """Text for a Graphviz HTML-like label: entities for the markup characters, no newline."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        text = text.replace(char, entity)
    return text.replace("\n", " ")


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{escaped}"'


# -- Mermaid --------------------------------------------------------------------------------------


def render_mermaid(model: dict[str, Any], out: TextIO) -> None:
    """A Mermaid flowchart (paste it into a fenced ``mermaid`` block in Markdown)."""
    ids = {node["name"]: f"t{i}" for i, node in enumerate(model["tasks"])}
    out.write("flowchart LR\n")
    off = []
    groups: dict[str, str] = {}  # a matrix task's subgraph id: arrows may end at it
    for g, (group, nodes) in enumerate(_groups(model)):
        indent = "  "
        if group is not None:
            names = ", ".join(nodes[0]["matrix"] or {})
            groups[group] = f"g{g}"
            out.write(f'  subgraph g{g} ["{_mermaid_escape(f"{group} (matrix: {names})")}"]\n')
            indent = "    "
        for node in nodes:
            lines = _mermaid_lines(model, node)
            label = "<br/>".join(_mermaid_escape(line) for line in lines)
            out.write(f'{indent}{ids[node["name"]]}["{label}"]\n')
            if node["if"] == "never":
                off.append(ids[node["name"]])
        if group is not None:
            out.write("  end\n")
    for tail, head, when, from_group, to_group in _unit_edges(model):
        arrow = "-->" if when in ("success", "never") else f"-. {when} .->"
        source = groups[tail] if from_group else ids[tail]
        target = groups[head] if to_group else ids[head]
        out.write(f"  {source} {arrow} {target}\n")
    if off:
        out.write("  classDef off stroke-dasharray: 5 5, color: #999\n")
        out.write(f"  class {','.join(off)} off\n")


def _mermaid_lines(model: dict[str, Any], node: dict[str, Any]) -> list[str]:
    title = _title(model, node)
    lines = [title] if title is not None else []
    if node["if"] == "never":
        lines.append("switched off (if: false)")
    for step in node["steps"]:
        lines += step["label"].split("\n")
        if step["kind"] == "use":
            lines += [f"  {_argument(key, value)}" for key, value in step["with"].items()]
    return lines


def _mermaid_escape(text: str) -> str:
    for char, entity in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, entity)
    return text.replace("\n", " ")


# -- JSON -----------------------------------------------------------------------------------------


def render_json(model: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(model, indent=2) + "\n")


RENDERERS: dict[str, Callable[[dict[str, Any], TextIO], None]] = {
    "dot": render_dot,
    "mermaid": render_mermaid,
    "json": render_json,
}
