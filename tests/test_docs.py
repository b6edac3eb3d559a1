"""Every fenced example in README.md and docs/*.md is run or checked here, so the docs cannot
drift from the code.

The rules, by the block's info string (its first word is the language; every block has one):

* ``console``/``sh``: a line starting ``$ `` is a command (lines starting with a space, or after
  a line ending in ``\\``, continue it; ``#`` lines are comments); the lines after it are its
  expected stdout. ``$ cat FILE`` of a FILE that does not exist writes the lines shown into it
  first, so an example can show the input it feeds to the next command. Each command runs
  with ``bash -o pipefail`` in a fresh directory (holding a link to ``examples/``) with this
  venv's ``stepline`` first on PATH, and must exit 0, or N when its output ends with the line
  ``[exit N]``. A block without ``$`` lines is a script: each line is a command, run the same
  way, output unchecked.
  Output is compared line by line after blanking volatile fields (``ts``, ``elapsed``, ``next``,
  ``opened``, ``created``, ``started``, ``ended``, ``version``, and durations such as ``0.02s``);
  ``…`` in an expected line matches anything, and an expected line that is only ``…`` allows any
  lines where it stands. Events of different jobs may interleave differently from run to run, so
  lines are compared per job in order: a JSON line's job is its top-level ``job``, a text line's
  the first job file it names (``stepline run``'s report; indented lines go with the line above),
  and the lines of no job are compared in order too.
* ``json``: every JSON value in it (``…`` standing for an elided value is allowed) is checked:
  a command (``op``) must decode, and its job validate; an event (``event``) must be one that
  docs/protocol.md lists in an ``| event |`` table; an outcome (``job`` + ``state``) must have a
  final state; anything else is a job, a bare step or a fragment of job keys, and must validate
  (parameters may stay unresolved, as at ``define`` time).
* ``python``: the blocks of one file run in order in one namespace (top-level ``await`` runs
  under trio); a top-level ``job`` dict left behind must validate.
* ``text``: shown output, never run: it needs a ``norun`` marker.

A block that cannot run here says why in its info string, ``norun=REASON``, and the reason is
checked against the block (see :data:`JUSTIFIED`): ``install`` (it runs ``pip install``), ``slow``
(it sleeps a second or more, or plays ``stepline demo``), ``crash`` (it kills a server),
``endpoint`` (it calls an HTTP server on a fixed localhost port: :func:`test_endpoint_example`
runs it against a test server instead), ``network`` (it names a host outside, in a URL of any
scheme), ``needs:A,B`` (it uses files or programs that do not exist here),
``covered:TEST`` (a named test runs it: the test must name the document and the block's section),
``output-of:PATH`` (it shows what the script PATH prints, and PATH exists).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import frozen

from stepline.spec._validate import validate_job, validate_template
from stepline.wire._commands import Define, Schedule, Submit, decode_command

from .driver import ENV
from .http_server import Answer, HttpServer
from .test_protocol_reference import first_column

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROTOCOL = ROOT / "docs" / "protocol.md"


@frozen
class Block:
    """One fenced block of a document."""

    doc: Path
    line: int  # of the opening fence
    lang: str
    markers: dict[str, str]
    body: str
    heading: str  # the section it is in

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> Iterator[Block]:
    """The fenced blocks of ``doc``, with their language, markers and section."""
    lines = doc.read_text().splitlines()
    heading, i = "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("```"):
            words = line[3:].split()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            markers = dict(w.partition("=")[::2] for w in words[1:])
            body = "\n".join(lines[i + 1 : end]) + "\n"
            yield Block(doc, i + 1, words[0] if words else "", markers, body, heading)
            i = end
        i += 1


ALL = [b for doc in DOCS for b in blocks(doc)]
RUN = [b for b in ALL if "norun" not in b.markers]
NORUN = [b for b in ALL if "norun" in b.markers]


def ids(block: Block) -> str:
    return block.where


# -- norun markers must be justified -------------------------------------------------------------

_SLEEP = re.compile(r"\bsleep\s+(\d+(?:\.\d+)?)")
_URL_HOST = re.compile(r"[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([^/:\s\"']+)")
_LOCAL = {"127.0.0.1", "localhost"}


def _slow(block: Block, _: str) -> bool:
    sleeps = [float(s) for s in _SLEEP.findall(block.body)]
    return any(s >= 1 for s in sleeps) or "stepline demo" in block.body


def _needs(block: Block, names: str) -> bool:
    def absent(name: str) -> bool:
        here = [ROOT / name, ROOT / "examples" / name]
        return not any(p.exists() for p in here) and shutil.which(name) is None

    return all(n in block.body and absent(n) for n in names.split(","))


def _covered(block: Block, test: str) -> bool:
    path = ROOT / test
    if not (test.startswith("tests/") and path.is_file()):
        return False
    text = path.read_text()
    prefixes = (block.heading[:n] for n in range(len(block.heading), 4, -1))
    return block.doc.name in text and any(p in text for p in prefixes)


JUSTIFIED: dict[str, Callable[[Block, str], bool]] = {
    "install": lambda b, _: "pip install" in b.body,
    "slow": _slow,
    "crash": lambda b, _: " &" in b.body and "kill" in b.body,
    "endpoint": lambda b, _: any(h in _LOCAL for h in _URL_HOST.findall(b.body)),
    "network": lambda b, _: any(h not in _LOCAL for h in _URL_HOST.findall(b.body)),
    "needs": _needs,
    "covered": _covered,
    "output-of": lambda b, p: (ROOT / p).is_file() and "$ " not in b.body,
}


def test_every_block_has_a_language() -> None:
    assert [b.where for b in ALL if b.lang not in {"console", "sh", "json", "python", "text"}] == []
    assert [b.where for b in RUN if b.lang == "text"] == []


@pytest.mark.parametrize("block", NORUN, ids=ids)
def test_norun_is_justified(block: Block) -> None:
    reason, _, argument = block.markers["norun"].partition(":")
    assert reason in JUSTIFIED, f"{block.where}: unknown norun reason {reason!r}"
    assert JUSTIFIED[reason](block, argument), f"{block.where}: norun={reason} does not hold"


# -- console sessions ------------------------------------------------------------------------------


@frozen
class Exchange:
    command: str
    expected: list[str]


def session(body: str) -> list[Exchange]:
    """The commands of a console block and the output each is shown with."""
    lines = body.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return [Exchange(ln, []) for ln in lines if ln.strip() and not ln.startswith("#")]
    out: list[Exchange] = []
    for line in lines:
        if line.startswith("$ "):
            out.append(Exchange(line[2:], []))
        elif line.startswith("#") or not out:
            continue
        elif not out[-1].expected and (line[:1].isspace() or out[-1].command.endswith("\\")):
            out[-1] = Exchange(out[-1].command + "\n" + line, [])
        else:
            out[-1].expected.append(line)
    return out


_VOLATILE = re.compile(
    r'"(ts|elapsed|next|opened|created|started|ended)":\s*-?\d[\d.eE+-]*|"version":"[^"]*"'
)
_JOB = re.compile(r'^\{.*?"job":\s*"([^"]+)"')
_JOB_FILE = re.compile(r"(?<!\S)(\S+\.jsonl?(?::\d+)?)(?!\S)")
_DURATION = re.compile(r"(?<![\w.])\d+\.\d+s\b")
_EXIT = re.compile(r"\[exit (\d+)\]")
_CAT = re.compile(r"cat ([\w.-]+)")


def normal(line: str) -> str:
    line = _VOLATILE.sub(lambda m: m.group(0).split(":", 1)[0] + ":…", line.rstrip())
    return line if line.startswith("{") else _DURATION.sub("…s", line)


def matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in normal(expected).split("…"))
    return re.fullmatch(pattern, normal(actual), re.S) is not None


def job_of(line: str) -> str | None:
    """The job a line belongs to: an event's own ``job`` (not one nested in a status record),
    or the first job file a text line names."""
    if not line.startswith("{"):
        found = _JOB_FILE.search(line)
        return found.group(1) if found else None
    try:
        obj = next(json_values(line))
    except ValueError:
        found = _JOB.match(line)
        return found.group(1) if found else None
    return obj.get("job") if isinstance(obj, dict) and isinstance(obj.get("job"), str) else None


def by_job(lines: list[str]) -> list[tuple[str | None, str]]:
    """Each line with its job; an indented line belongs to the line above."""
    out: list[tuple[str | None, str]] = []
    for line in lines:
        job = out[-1][0] if out and line[:1].isspace() else job_of(line)
        out.append((job, line))
    return out


def mismatch(expected: list[str], actual: list[str]) -> str | None:
    """Why ``actual`` is not what ``expected`` shows, or None."""
    elided = "…" in (line.strip() for line in expected)
    shown = by_job([line for line in expected if line.strip() != "…"])
    got_all = by_job(actual)
    for job in dict.fromkeys([j for j, _ in shown + got_all]):
        want = [line for j, line in shown if j == job]
        got = [line for j, line in got_all if j == job]
        if elided:
            rest = iter(got)
            missing = [w for w in want if not any(matches(w, g) for g in rest)]
            if missing:
                return f"job {job}: no line like {missing[0]}"
        elif len(want) != len(got) or not all(map(matches, want, got)):
            return f"job {job}: expected\n" + "\n".join(want) + "\ngot\n" + "\n".join(got)
    return None


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env={**ENV, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_console(block: Block, body: str, cwd: Path) -> None:
    """Run a console block's commands in ``cwd`` and check each one's exit status and output."""
    (cwd / "examples").symlink_to(ROOT / "examples")
    exchanges = session(body)
    assert exchanges, f"{block.where}: no command"
    for exchange in exchanges:
        shown = _CAT.fullmatch(exchange.command)
        if shown and not (cwd / shown.group(1)).exists():
            (cwd / shown.group(1)).write_text("".join(f"{x}\n" for x in exchange.expected))
        expected, status = exchange.expected, 0
        if expected and (end := _EXIT.fullmatch(expected[-1])):
            expected, status = expected[:-1], int(end.group(1))
        proc = shell(exchange.command, cwd)
        assert proc.returncode == status, f"{block.where}: {exchange.command}\n{proc.stderr}"
        problem = mismatch(expected, proc.stdout.splitlines()) if expected else None
        assert problem is None, f"{block.where}: {exchange.command}\n{problem}"


@pytest.mark.parametrize("block", [b for b in RUN if b.lang in {"console", "sh"}], ids=ids)
def test_console_example(block: Block, tmp_path: Path) -> None:
    run_console(block, block.body, tmp_path)


_LOCAL_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):\d+(/[^\s\"']*)")
ENDPOINT = [b for b in NORUN if b.markers["norun"] == "endpoint" and b.lang == "console"]


@pytest.mark.parametrize("block", ENDPOINT, ids=ids)
def test_endpoint_example(block: Block, tmp_path: Path) -> None:
    """A block that calls a server on a fixed local port cannot run as written (the port may be
    taken), so it runs against a test server answering 200 on each path it names, its URLs
    pointed there; the output must be as shown."""
    with HttpServer() as server:
        for path in set(_LOCAL_URL.findall(block.body)):
            server.script(path, Answer(200, {"ok": True}))
        run_console(block, _LOCAL_URL.sub(lambda m: server.url(m.group(1)), block.body), tmp_path)
        assert server.requests, f"{block.where}: nothing called the endpoint"


# -- JSON ------------------------------------------------------------------------------------------


def json_values(body: str) -> Iterator[Any]:
    """The JSON values of a block, ``…`` standing for elided members and values."""
    text = re.sub(r",\s*…(?=\s*[}\]])", "", body)
    text = re.sub(r"(?<=[:\[])\s*…", "null", text)
    decoder, i = json.JSONDecoder(), 0
    while (i := len(text) - len(text[i:].lstrip())) < len(text):
        value, i = decoder.raw_decode(text, i)
        yield value


def documented_events() -> set[str]:
    """Event names in the first column of docs/protocol.md's ``| event |`` tables."""
    return first_column(PROTOCOL.read_text(), "| event |")


FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
JOB_KEYS = {"name", "timeout", "retry", "params", "on_finish", "limit", "keep_workspace"}


def check_json(value: Any, templates: dict[str, Any]) -> None:
    """Check one value of a ``json`` block; ``define`` adds to ``templates`` for later ones."""
    assert isinstance(value, dict), value
    if "op" in value:
        command, _ = decode_command(json.dumps(value).encode())
        if isinstance(command, Define):
            validate_template(command.job, templates, name=command.name)
            templates[command.name] = command.job
        elif isinstance(command, Submit | Schedule) and command.job is not None:
            validate_job(command.job, params=command.params, templates=templates)
    elif "event" in value:
        assert value["event"] in documented_events(), value["event"]
    elif "job" in value and "state" in value:
        assert value["state"] in FINAL
    elif set(value) <= JOB_KEYS:  # a fragment: the keys a job adds to its steps
        validate_job({"steps": [], **value}, allow_unresolved=True)
    else:
        validate_job(value, allow_unresolved=True)


@pytest.mark.parametrize("block", [b for b in RUN if b.lang == "json"], ids=ids)
def test_json_example(block: Block) -> None:
    values = list(json_values(block.body))
    assert values, block.where
    templates: dict[str, Any] = {}
    for value in values:
        check_json(value, templates)


# -- Python ----------------------------------------------------------------------------------------

PY_DOCS = sorted({b.doc for b in RUN if b.lang == "python"})


@pytest.mark.parametrize("doc", PY_DOCS, ids=lambda d: d.name)
def test_python_examples(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    for block in [b for b in RUN if b.lang == "python" and b.doc == doc]:
        code = compile(block.body, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits at top level

            async def main(code: Any = code) -> None:
                await eval(code, namespace)

            trio.run(main)
        else:
            exec(code, namespace)
        if isinstance(namespace.get("job"), dict):
            validate_job(namespace["job"])


# -- links -----------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.*)$", re.M)


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub makes of a document's headings: lower case, punctuation but ``-`` and
    ``_`` dropped, spaces made ``-``."""
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in _HEADING.findall(doc.read_text())
    }


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "NOTES.md"], ids=lambda d: d.name)
def test_links_resolve(doc: Path) -> None:
    """Every relative link of a document names a file that exists, and a heading of it when it
    has a ``#fragment``."""
    broken = []
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here (no network in tests)
        path, _, fragment = target.partition("#")
        file = doc.parent / path if path else doc
        if not file.exists() or (
            fragment and file.suffix == ".md" and fragment not in anchors(file)
        ):
            broken.append(target)
    assert broken == [], f"{doc.name}: broken links"


def test_the_link_check_sees_anchors() -> None:
    assert {"transport", "callbacks-on_finish", "shutdown-and-exit-status"} <= anchors(PROTOCOL)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    """A page no one links to is a page no one reads: the README is where readers start."""
    linked = {
        target.partition("#")[0] for target in _LINK.findall((ROOT / "README.md").read_text())
    }
    assert [d.name for d in DOCS[1:] if f"docs/{d.name}" not in linked] == []
