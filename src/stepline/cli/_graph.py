"""``stepline check`` and ``stepline graph``: a job file's problems, and its graph, from a shell.

``check FILE...`` reads job files exactly as ``stepline run`` reads them (a ``.json`` file is one
job, any other file JSON Lines) and validates them as ``submit`` would (same messages, with the
path of the offending key), so a job can be checked in CI before it is ever sent: problems go
to stderr as ``FILE[:LINE]: invalid job: MESSAGE`` and the exit status is 2, as ``run`` exits
for them; otherwise it prints ``ok``.

``graph FILE --format dot|mermaid|json`` prints the tasks of a job (each matrix instance, each
``use`` with its arguments), their steps and their ``needs`` edges — or a ``steps`` job's
sequence — for Graphviz (``stepline graph job.json | dot -Tsvg > job.svg``), for Markdown
(paste the Mermaid text into a fenced ``mermaid`` block), or for other tools (JSON). Parameters
without a default are left as ``${params.X}`` in the picture, as at ``define`` time.

The drawing is built from the *validated* spec, so what you see is what would run (parameters
substituted, matrices expanded, names checked); edges point from a task to the tasks that need
it. :func:`job_model` builds plain data; :mod:`._render` draws it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import InvalidJob
from ..spec._graph import topological
from ..spec._model import (
    Deferred,
    Fail,
    Graph,
    Http,
    JobSpec,
    Log,
    Par,
    Race,
    Run,
    Seq,
    Sleep,
    Step,
    Try,
    Use,
    Value,
)
from ..spec._validate import validate_job

if TYPE_CHECKING:
    from ._settings import Subcommands

__all__ = [
    "SUMMARY_LINES",
    "SUMMARY_WIDTH",
    "add_graph_commands",
    "fit",
    "graph_model",
    "job_model",
    "step_model",
]

_EXIT_OK, _EXIT_PROBLEM = 0, 2  # 2, as `run` exits for a file it refuses
SUMMARY_WIDTH = 48  # characters of a line of a step's label
SUMMARY_LINES = 3  # lines of a step's label


def add_graph_commands(commands: Subcommands) -> None:
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
        description="Print a job's tasks (matrix instances, `use` sections with their "
        "arguments), their steps and their edges; a job with steps is drawn as its sequence.",
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
    from ._render import RENDERERS

    try:
        templates = load_templates(args.template)
        job = parse_json(read_text(args.file), args.file, whole_file=True)
        spec = validate_job(job, templates=templates, allow_unresolved=True)
    except BadFile as exc:
        return _fail(str(exc))
    except InvalidJob as exc:
        return _fail(f"{args.file}: invalid job: {exc.message}")
    RENDERERS[args.format](job_model(spec), sys.stdout)
    return _EXIT_OK


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return _EXIT_PROBLEM


# -- the model: nodes, their steps, and edges ----------------------------------------------------


def job_model(spec: JobSpec) -> dict[str, Any]:
    """Plain data for every renderer. A job with ``tasks`` gives one node per task (a matrix
    task's instances each, with ``group`` and ``matrix``), each after its needs; a job with
    ``steps`` gives one node per top-level step, each needing the one before (the sequence)."""
    body = spec.body.body if isinstance(spec.body, Deferred) else spec.body
    if isinstance(body, Graph):
        return graph_model(body, spec.name)
    steps = body.steps if isinstance(body, Seq) else (body,)
    nodes: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        needs = [nodes[-1]["name"]] if nodes else []
        nodes.append(_node(step.path or f"steps[{i}]", needs, "success", (step,)))
    return {
        "name": spec.name,
        "kind": "steps",
        "limit": None,
        "tasks": nodes,
        "edges": _edges(nodes),
    }


def graph_model(graph: Graph, name: str | None = None) -> dict[str, Any]:
    """The model of a graph: its tasks (each after its needs) and edges (need → task)."""
    nodes = [
        _node(t.name, list(t.needs), t.when, t.body.steps, t.group, t.matrix)
        for t in topological(graph.tasks)
    ]
    return {
        "name": name,
        "kind": "tasks",
        "limit": graph.limit,
        "tasks": nodes,
        "edges": _edges(nodes),
    }


def _node(
    name: str,
    needs: list[str],
    when: str,
    steps: Sequence[Step],
    group: str | None = None,
    matrix: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "group": group,
        "matrix": dict(matrix) if matrix is not None else None,
        "needs": needs,
        "if": when,
        "steps": [step_model(step) for step in steps],
    }


def _edges(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"from": need, "to": n["name"], "if": n["if"]} for n in nodes for need in n["needs"]]


def step_model(step: Step) -> dict[str, Any]:
    """``{"kind", "label"}`` for a step; a ``use`` adds ``template`` and ``with`` (drawn as a
    box of its own)."""
    model: dict[str, Any] = {"kind": type(step).__name__.lower(), "label": summarize(step)}
    if isinstance(step, Use):
        model["template"] = step.template
        model["with"] = dict(step.args)
    return model


def summarize(step: Step) -> str:
    """One short line for a step: its name and kind when it has a name (the author's own
    summary), else what it does (``run: pytest -q tests``, ``sleep 1.5``)."""
    kind = type(step).__name__.lower()
    if step.mods.name:
        return fit([step.mods.name, f"({kind})"])
    describe = _SUMMARIES.get(type(step))
    return describe(step) if describe is not None else kind


def fit(words: Sequence[str], width: int = SUMMARY_WIDTH, lines: int = SUMMARY_LINES) -> str:
    """``words`` joined by spaces into at most ``lines`` lines of about ``width`` characters
    (joined by newlines), cut at a word boundary and saying how many words were left out
    (``pytest -q … +3``); a word too long alone is cut in its middle, so both ends stay
    readable."""
    rows: list[list[str]] = [[]]
    used = 0
    taken = 0
    for word in words:
        word = _middle_cut(word, width)
        if used + len(word) > width and rows[-1]:
            if len(rows) == lines:
                break
            rows.append([])
            used = 0
        rows[-1].append(word)
        used += len(word) + 1
        taken += 1
    text = "\n".join(" ".join(row) for row in rows)
    left = len(words) - taken
    return f"{text} … +{left}" if left else text


def _middle_cut(word: str, width: int) -> str:
    if len(word) <= width:
        return word
    half = (width - 1) // 2
    return f"{word[:half]}…{word[-half:]}"


def _run_text(step: Run) -> str:
    """A shell line as written; an argv with its program's base name, and paths under the
    step's ``cwd`` relative to it (``/venv/bin/python /repo/x.py`` → ``python x.py``)."""
    if step.argv[:2] == ("/bin/sh", "-c") and len(step.argv) == 3:
        return "run: " + fit(step.argv[2].split())
    words = [os.path.basename(step.argv[0]) or step.argv[0]]
    words += [_relative(arg, step.cwd) for arg in step.argv[1:]]
    import shlex  # start-up time: `serve` imports this module for its parser

    return "run: " + fit([shlex.quote(word) for word in words])


def _relative(arg: str, cwd: str | None) -> str:
    """``arg`` (or the value of ``--opt=arg``) relative to ``cwd`` when it is a path below."""
    if not cwd or not cwd.startswith("/"):
        return arg
    option, equals, value = arg.rpartition("=") if "=" in arg else ("", "", arg)
    root = cwd.rstrip("/") + "/"
    if value.startswith(root):
        value = value[len(root) :]
    return f"{option}{equals}{value}"


def _nested(kind: str) -> Callable[[Any], str]:
    return lambda step: f"{kind} ({len(step.steps)} steps)"


_SUMMARIES: dict[type, Callable[[Any], str]] = {
    Run: _run_text,
    Sleep: lambda step: f"sleep {step.seconds}",
    Value: lambda step: "value",
    Log: lambda step: fit(["log:", *step.message.split()]),
    Fail: lambda step: fit(["fail:", *step.message.split()]),
    Seq: _nested("seq"),
    Par: _nested("par"),
    Race: _nested("race"),
    Try: lambda step: "try/catch",
    Use: lambda step: f"use: {step.template}",
    Http: lambda step: f"http: {step.method} {step.url}",
    Graph: lambda step: f"tasks ({len(step.tasks)})",
}
