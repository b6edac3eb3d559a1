"""``stepline check`` and ``stepline graph``: a job file's problems, and its graph, from a shell.

``check FILE...`` reads job files exactly as ``stepline run`` reads them (a ``.json`` file is one
job, any other file JSON Lines) and validates them as ``submit`` would (same messages, with the
path of the offending key), so a job can be checked in CI before it is ever sent: problems go
to stderr as ``FILE[:LINE]: invalid job: MESSAGE`` and the exit status is 2, as ``run`` exits
for them; otherwise it prints ``ok``.

``graph FILE --format dot|mermaid|json`` prints the tasks of a job, their steps and their
``needs`` edges, for Graphviz (``stepline graph job.json | dot -Tsvg > job.svg``), for Markdown
(paste the Mermaid text into a fenced ``mermaid`` block), or for other tools (JSON). Parameters
without a default are left as ``${params.X}`` in the picture, as at ``define`` time.

The drawing is built from the *validated* spec, so what you see is what would run (parameters
substituted, names checked); edges point from a task to the tasks that need it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .._errors import InvalidJob
from ..spec._graph import topological
from ..spec._model import (
    Deferred,
    Fail,
    Graph,
    JobSpec,
    Log,
    Par,
    Race,
    Run,
    Seq,
    Sleep,
    Step,
    Task,
    Try,
    Use,
    Value,
)
from ..spec._validate import validate_job

__all__ = ["add_graph_commands", "graph_model", "render_dot", "render_mermaid"]

_EXIT_OK, _EXIT_PROBLEM = 0, 2  # 2, as `run` exits for a file it refuses
_SUMMARY_WIDTH = 60


def add_graph_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check`` and ``graph`` on the ``stepline`` command line."""
    check = commands.add_parser(
        "check",
        help="validate job files as `run` reads them; exit 2 and print the problems if any",
        description="Validate job files as `run` reads them and `submit` checks them: "
        "FILE.json holds one job, other files (and -) JSON Lines. "
        "Exit status: 0 ok, 2 problems (the status `run` exits with for them).",
        allow_abbrev=False,
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="job file, or - for stdin")
    _add_common(check)
    check.add_argument("--params", metavar="JSON", help="parameters every job is submitted with")
    check.set_defaults(run=_check)

    graph = commands.add_parser(
        "graph",
        help="print the graph of a job's tasks (Graphviz dot, Mermaid or JSON)",
        description="Print a job's tasks, their steps and their edges.",
        allow_abbrev=False,
    )
    graph.add_argument("file", metavar="FILE", help="job file (JSON), or - for stdin")
    graph.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")
    _add_common(graph)
    graph.set_defaults(run=_graph)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--template",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="define a template for `use` steps (repeatable)",
    )


# -- the commands ---------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    from ._jobfiles import BadFile, load_entries, load_templates, parse_params  # start-up time

    try:
        templates = load_templates(args.template)
        load_entries(args.files, templates, parse_params(args.params))
    except BadFile as exc:
        return _fail(str(exc))
    print("ok")
    return _EXIT_OK


def _graph(args: argparse.Namespace) -> int:
    from ._jobfiles import BadFile, load_templates, parse_json, read_text  # start-up time

    try:
        templates = load_templates(args.template)
        job = parse_json(read_text(args.file), args.file, whole_file=True)
        spec = validate_job(job, templates=templates, allow_unresolved=True)
    except BadFile as exc:
        return _fail(str(exc))
    except InvalidJob as exc:
        return _fail(f"{args.file}: invalid job: {exc.message}")
    graph = graph_of(spec)
    if graph is None:
        return _fail(f"{args.file}: this job has 'steps', not 'tasks': there is no graph to draw")
    model = graph_model(graph, spec.name)
    _RENDER[args.format](model, sys.stdout)
    return _EXIT_OK


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return _EXIT_PROBLEM


# -- the model: tasks, steps and edges ------------------------------------------------------------


def graph_of(spec: JobSpec) -> Graph | None:
    """The graph of a job with ``tasks`` (None for a job with ``steps``)."""
    body = spec.body.body if isinstance(spec.body, Deferred) else spec.body
    return body if isinstance(body, Graph) else None


def graph_model(graph: Graph, name: str | None = None) -> dict[str, Any]:
    """Plain data for every renderer: tasks (each after its needs) and edges (need → task)."""
    tasks = topological(graph.tasks)
    return {
        "name": name,
        "limit": graph.limit,
        "tasks": [
            {"name": t.name, "needs": list(t.needs), "if": t.when, "steps": _summaries(t)}
            for t in tasks
        ],
        "edges": [{"from": need, "to": t.name, "if": t.when} for t in tasks for need in t.needs],
    }


def _summaries(task: Task) -> list[str]:
    return [summarize(step) for step in task.body.steps]


def summarize(step: Step) -> str:
    """One short line for a step: its name and kind when it has a name (the author's own
    summary), else what it does (``run: make test``, ``sleep 1.5``)."""
    kind = type(step).__name__.lower()
    describe = _SUMMARIES.get(type(step))
    if step.mods.name:
        text = f"{step.mods.name} ({kind})"
    else:
        text = describe(step) if describe is not None else kind
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 3] + "..."


def _run_text(step: Run) -> str:
    if step.argv[:2] == ("/bin/sh", "-c") and len(step.argv) == 3:
        return f"run: {step.argv[2]}"
    import shlex  # start-up time: `serve` imports this module for its parser

    return f"run: {shlex.join(step.argv)}"


def _nested(kind: str) -> Callable[[Any], str]:
    return lambda step: f"{kind} ({len(step.steps)} steps)"


_SUMMARIES: dict[type, Callable[[Any], str]] = {
    Run: _run_text,
    Sleep: lambda step: f"sleep {step.seconds}",
    Value: lambda step: "value",
    Log: lambda step: f"log: {step.message}",
    Fail: lambda step: f"fail: {step.message}",
    Seq: _nested("seq"),
    Par: _nested("par"),
    Race: _nested("race"),
    Try: lambda step: "try/catch",
    Use: lambda step: f"use: {step.template}",
    Graph: lambda step: f"tasks ({len(step.tasks)})",
}


# -- renderers ------------------------------------------------------------------------------------


def render_dot(model: dict[str, Any], out: TextIO) -> None:
    """Graphviz DOT: boxes for tasks (name, then one line per step), arrows need → task.

    An edge into a task with ``if: failure`` is dashed and red, into ``if: always`` dotted.
    """
    out.write(f"digraph {_dot_quote(model['name'] or 'job')} {{\n")
    out.write("  rankdir=LR;\n")
    out.write('  node [shape=box, style=rounded, fontname="Helvetica"];\n')
    for task in model["tasks"]:
        label = "\\n".join(_dot_escape(line) for line in [task["name"], *task["steps"]])
        out.write(f'  {_dot_quote(task["name"])} [label="{label}"];\n')
    for edge in model["edges"]:
        style = _DOT_EDGE_STYLE.get(edge["if"], "")
        out.write(f"  {_dot_quote(edge['from'])} -> {_dot_quote(edge['to'])}{style};\n")
    out.write("}\n")


_DOT_EDGE_STYLE = {
    "failure": ' [style=dashed, color=red, label="failure"]',
    "always": ' [style=dotted, label="always"]',
}


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def render_mermaid(model: dict[str, Any], out: TextIO) -> None:
    """A Mermaid flowchart (paste it into a fenced ``mermaid`` block in Markdown)."""
    ids = {task["name"]: f"t{i}" for i, task in enumerate(model["tasks"])}
    out.write("flowchart LR\n")
    for task in model["tasks"]:
        label = "<br/>".join(_mermaid_escape(line) for line in [task["name"], *task["steps"]])
        out.write(f'  {ids[task["name"]]}["{label}"]\n')
    for edge in model["edges"]:
        arrow = "-->" if edge["if"] == "success" else f"-. {edge['if']} .->"
        out.write(f"  {ids[edge['from']]} {arrow} {ids[edge['to']]}\n")


def _mermaid_escape(text: str) -> str:
    for char, entity in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, entity)
    return text.replace("\n", " ")


def render_json(model: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(model, indent=2) + "\n")


_RENDER: dict[str, Callable[[dict[str, Any], TextIO], None]] = {
    "dot": render_dot,
    "mermaid": render_mermaid,
    "json": render_json,
}
