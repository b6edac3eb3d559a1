"""The ``stepline`` command line: a thin shell over the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import trio

from ._executor import Config
from ._serve import DEFAULT_MAX_LINE, Server
from ._stdio import open_stdin, open_stdout
from ._version import __version__

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run jobs sent as JSON lines on stdin")
    serve.add_argument("--workers", type=_positive_int, default=4, help="jobs running at once")
    serve.add_argument("--queue", type=_positive_int, default=64, help="accepted jobs waiting")
    serve.add_argument("--on-full", choices=["block", "reject"], default="block")
    serve.add_argument("--heartbeat", type=_seconds, default=1.0, help="progress interval; 0: off")
    serve.add_argument("--max-line", type=_positive_int, default=DEFAULT_MAX_LINE)
    serve.add_argument("--keep", type=_non_negative_int, default=1000, help="finished jobs kept")
    serve.add_argument("--trace", action="store_true", help="emit `step` events")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    config = Config(
        workers=args.workers,
        queue_size=args.queue,
        on_full=args.on_full,
        heartbeat=args.heartbeat,
        keep=args.keep,
        trace=args.trace,
    )

    async def main() -> int:
        server = Server(config, open_stdin(), open_stdout(), max_line=args.max_line)
        return await server.run()

    return trio.run(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stepline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="stepline: %(levelname)s: %(message)s",
    )
    sys.exit(args.run(args))
