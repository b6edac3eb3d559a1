"""The ``stepline`` command line: a thin shell over the library."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from .._version import __version__
from ..server._serve import DEFAULT_MAX_LINE, Front, Server
from ..wire._stdio import open_stdin, open_stdout, reserve_standard_fds
from ._cluster import add_cluster_flags, add_worker, is_cluster_url, open_node
from ._settings import add_config_flags, config_from_args
from ._signals import restore_default_signals, with_late_signals

if TYPE_CHECKING:
    from ..cluster._node import ClusterNode
    from ..store._store import Store
    from ._settings import Subcommands

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def _add_serve(commands: Subcommands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run jobs sent as JSON lines on stdin",
        description="Read newline-JSON commands on stdin, write newline-JSON events on stdout "
        "(the protocol: docs/protocol.md).",
        formatter_class=DefaultsFormatter,
        allow_abbrev=False,
    )
    add_config_flags(serve)  # the executor's settings: one flag per Config field
    serve.add_argument(
        "--max-line",
        type=_positive_int,
        default=DEFAULT_MAX_LINE,
        metavar="BYTES",
        help="longest command line accepted; a longer one is discarded and answered with a "
        "line_too_long error",
    )
    serve.add_argument(
        "--state",
        metavar="PATH|URL",
        default=None,
        help="SQLite file that keeps accepted jobs and templates across crashes, or a "
        "postgresql:// URL: a node of a cluster sharing that database (docs/cluster.md) "
        "(default: none, everything in memory)",
    )
    serve.add_argument(
        "--on-restart",
        choices=["rerun", "fail"],
        default="rerun",
        help="with --state: jobs that were running when stepline died are run "
        "again, or failed with error type `interrupted`",
    )
    add_cluster_flags(serve)
    _add_http_flags(serve)
    serve.set_defaults(run=_serve)


def _add_http_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        default=None,
        help="also serve HTTP: REST, live events, webhooks and a dashboard (docs/http.md); "
        "HOST is 127.0.0.1 unless given, and any other needs a token (default: off)",
    )
    serve.add_argument(
        "--http-token",
        metavar="TOKEN",
        default=os.environ.get("STEPLINE_HTTP_TOKEN"),
        help="with --http: every request needs Authorization: Bearer TOKEN "
        "(default: $STEPLINE_HTTP_TOKEN, else none)",
    )
    serve.add_argument(
        "--hook-secret",
        metavar="SECRET",
        default=None,
        help="with --http: POST /hooks/NAME needs X-Stepline-Signature: sha256=HMAC of the body "
        "(default: none, hooks are not signed)",
    )


def _serve(args: argparse.Namespace) -> int:
    if 1 in reserve_standard_fds():  # before anything can open a file onto fd 0 or 1
        logging.getLogger("stepline").error("stdout is closed: nowhere to write the protocol")
        return 1
    config = config_from_args(args)
    front = None
    if args.http is not None:
        front = _http_front(args)
        if front is None:
            return 2

    async def main() -> int:
        try:
            store, node = await _open_state(args)
        except _NotStarted:
            return 2
        server = Server(
            config,
            open_stdin(),
            open_stdout(),
            max_line=args.max_line,
            store=store,
            on_restart=args.on_restart,
            cluster=node,
            front=front,
        )
        return await server.run()

    _tune_collector()
    return with_late_signals(lambda: trio.run(main))


class _NotStarted(Exception):
    """What ``--state`` names cannot be used; the reason is on stderr already (exit status 2)."""


async def _open_state(args: argparse.Namespace) -> tuple[Store | None, ClusterNode | None]:
    """Where ``serve`` keeps its jobs: nowhere but memory, an SQLite store, or a cluster's
    database (a node of it); raises :class:`_NotStarted` when that cannot be opened."""
    if args.state is None:
        return None, None
    if is_cluster_url(args.state):
        node = await open_node(args)
        if node is None:
            raise _NotStarted
        return None, node
    from ..store import Store, StoreError  # start-up time: --state only

    try:
        store = await Store.open(
            args.state, keep=args.keep, write_ahead_start=args.on_restart == "fail"
        )
    except StoreError as exc:  # foreign, corrupt, newer, locked: never a silent reset
        print(f"stepline: {exc}", file=sys.stderr)
        raise _NotStarted from None
    return store, None


def _http_front(args: argparse.Namespace) -> Front | None:
    """The HTTP front ``--http`` asks for, its socket bound; None (reported) if it cannot be."""
    try:  # start-up time and the optional extra: loaded only with --http
        from ..web._front import BadBind, HttpFront, HttpOptions, parse_bind
    except ImportError as exc:
        print(
            f"stepline: --http needs the http extra ({exc}): pip install 'stepline[http]'",
            file=sys.stderr,
        )
        return None
    try:
        host, port = parse_bind(args.http)
        options = HttpOptions(
            host=host,
            port=port,
            token=args.http_token or None,
            hook_secret=args.hook_secret,
            max_body=args.max_line,
        )
        return HttpFront(options)
    except BadBind as exc:
        print(f"stepline: {exc}", file=sys.stderr)
        return None


def _tune_collector() -> None:
    """Fewer cycle collections in the server process, which this command owns (a program that
    embeds the executor keeps its own settings: only the CLI calls this).

    A job allocates a few dozen containers that almost all die by reference counting, yet every
    generation-0 collection (each 700 net allocations by default) walks the young objects still
    alive, such as the queued jobs: a visible share of a trivial job (NOTES.md, Performance). With
    a 10,000 threshold and the start-up objects frozen out of later full collections, cyclic
    garbage waits at most 10,000 allocations longer to be freed.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    collect_from_now()


def collect_from_now() -> None:
    """Cycle collections from now on, if the entry point turned them off while the program
    loaded (an embedding program, or a test calling :func:`main`, keeps its own).

    Loading allocates tens of thousands of objects that live as long as the process (modules,
    classes, functions), and each collection during it walked them again: a visible share of
    ``serve``'s start-up (NOTES.md, Performance). What loading left unreachable (mostly the
    classes attrs replaced by their slotted versions) is frozen with the rest rather than
    freed: a fixed cost in memory for the life of the process.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _add_run(commands: Subcommands) -> None:
    run = commands.add_parser(
        "run",
        help="run job files and report; exit 0 only if every job succeeded",
        usage="stepline run [options] FILE...\n       stepline run [options] -- COMMAND... "
        "[::: ARG...]",
        description="Run job files: FILE.json holds one job, other files (and -) JSON Lines. "
        "Or run COMMAND once per ARG (per line of stdin without :::), {} replaced by the "
        "argument (appended when absent) and {#} by its number; output lines tagged with it. "
        "Exit status: 0 all succeeded, 1 some did not, 2 invalid files (nothing run), "
        "130/143 interrupted by SIGINT/SIGTERM (every job cancelled).",
        formatter_class=DefaultsFormatter,
        allow_abbrev=False,
    )
    run.add_argument("files", nargs="*", metavar="FILE", help="job file, or - for stdin")
    _add_run_flags(run)
    _add_report_flags(run)
    run.set_defaults(run=_run)


def _add_run_flags(run: argparse.ArgumentParser) -> None:
    """How ``run`` runs the jobs: workers, templates, parameters, bounds, state, artifacts."""
    run.add_argument(
        "-j", "--workers", type=_positive_int, default=4, metavar="N", help="jobs running at once"
    )
    run.add_argument(
        "--template",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="define a template for `use` steps (repeatable)",
    )
    run.add_argument("--params", metavar="JSON", help="parameters every job is submitted with")
    run.add_argument(
        "--timeout", type=_seconds, metavar="S", help="stop any job still running after S seconds"
    )
    run.add_argument(
        "--halt", action="store_true", help="the first job that does not succeed cancels the rest"
    )
    run.add_argument(
        "--state",
        metavar="FILE",
        default=None,
        help="keep the batch in this SQLite file; run the same command again after a crash "
        "to resume it: jobs that succeeded are not run again, unfinished and failed ones are "
        "(default: none, a run lives in memory)",
    )
    run.add_argument(
        "--artifacts",
        default="stepline-artifacts",
        metavar="DIR",
        help="directory jobs' artifacts are copied to (DIR/JOBID/)",
    )


def _add_report_flags(run: argparse.ArgumentParser) -> None:
    """What ``run`` shows of the jobs it runs."""
    shown = run.add_mutually_exclusive_group()
    shown.add_argument(
        "--json", action="store_true", help="write every event as a JSON line, nothing else"
    )
    shown.add_argument(
        "-q", "--quiet", action="store_true", help="show only the jobs that did not succeed"
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="whole outputs and tails, and `log` lines"
    )


def _run(args: argparse.Namespace) -> int:
    from . import _run as runfiles  # start-up time: `serve` never needs the embedding API

    return runfiles.main(args)


def _add_demo(commands: Subcommands) -> None:
    demo = commands.add_parser(
        "demo",
        help="a short narrated tour of stepline (a few seconds)",
        formatter_class=DefaultsFormatter,
        allow_abbrev=False,
    )
    demo.add_argument(
        "--pause",
        type=_seconds,
        default=None,
        help="seconds between scenes (default: 0.4 on a terminal, else 0)",
    )
    demo.add_argument(
        "--scene",
        metavar="NAME",
        help="play one scene: bounded-workers, parallel-fan-out, race, retry-that-recovers, "
        "timeout, cancel",
    )
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="three nodes on one PostgreSQL (a throwaway server unless --state): one is "
        "killed and the others rescue its jobs",
    )
    demo.add_argument(
        "--state",
        metavar="URL",
        help="with --cluster: the postgresql:// database to use instead of a throwaway server",
    )
    demo.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="serve the dashboard there while the demo runs (a scene of its own goes through "
        "the HTTP front), and keep it up until Enter; 0 picks a free port",
    )
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.cluster:
        from . import _demo_cluster  # start-up time: `serve` never needs the client

        return _demo_cluster.main(state=args.state, pause=args.pause)
    from . import _demo

    return _demo.main(pause=args.pause, scene=args.scene, http=args.http)


class DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` with each option's default, where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        spelt_out = "%(default)" in text or "(default: " in text  # _settings spells some out
        if spelt_out or default in (None, False, [], argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def _add_graph_commands(commands: Subcommands) -> None:
    from ._graph import add_graph_commands  # start-up time: only `check` and `graph` need it

    add_graph_commands(commands)  # check, graph (cli/_graph.py)


_ADDERS: dict[str, Callable[[Subcommands], None]] = {
    "serve": _add_serve,
    "worker": add_worker,
    "run": _add_run,
    "demo": _add_demo,
    "check": _add_graph_commands,
    "graph": _add_graph_commands,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; given ``command``, a word naming one of the commands, only
    that command's subparser is built (building them all was most of argparse's share of
    ``serve``'s start-up). The usage line names every command either way, so help and errors
    read the same."""
    parser = argparse.ArgumentParser(prog="stepline", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"stepline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    if command not in _ADDERS:
        commands = parser.add_subparsers(dest="command", required=True)
        for add in dict.fromkeys(_ADDERS.values()):
            add(commands)
        return parser
    every = "{" + ",".join(_ADDERS) + "}"  # what the usage line shows with them all
    _ADDERS[command](parser.add_subparsers(dest="command", required=True, metavar=every))
    return parser


def _command_word(argv: list[str]) -> int | None:
    """Where the command (``serve``, ``run``, ...) is: the first word not an option (the
    options before it, ``-v`` and ``--version``, take no value)."""
    return next((i for i, word in enumerate(argv) if not word.startswith("-")), None)


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``run ... -- COMMAND...``: the words after ``--`` are quick mode's command, which
    argparse must not read (``-j`` in the command is the command's)."""
    position = _command_word(argv)
    if position is None or argv[position] != "run" or "--" not in argv[position:]:
        return argv, None
    split = argv.index("--", position)
    return argv[:split], argv[split + 1 :]


def main(argv: Sequence[str] | None = None) -> None:
    words, command = _split_command(list(sys.argv[1:] if argv is None else argv))
    position = _command_word(words)
    args = build_parser(None if position is None else words[position]).parse_args(words)
    args.quick = command
    if args.command != "serve":  # serve does it as it tunes the collector (_tune_collector)
        collect_from_now()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="stepline: %(levelname)s: %(message)s",
    )
    if args.command not in ("serve", "run"):  # they stop in order; the others need not
        restore_default_signals()
    sys.exit(args.run(args))
