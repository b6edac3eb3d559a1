"""The cluster side of the command line: ``--lease``/``--poll``/``--poll-only`` on ``serve``,
``stepline worker``, and opening a node for ``--state postgresql://...``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

import trio

from ..server._serve import Server
from ._settings import add_config_flags, config_from_args
from ._signals import with_late_signals

if TYPE_CHECKING:
    from ..cluster._node import ClusterNode
    from ._settings import Subcommands

__all__ = ["add_cluster_flags", "add_worker", "is_cluster_url", "open_node"]

log = logging.getLogger("stepline")

WORKER_QUEUE = 512
"""``stepline worker``'s default ``--queue``: the most jobs it claims ahead of its workers."""


def is_cluster_url(state: str) -> bool:
    """Whether ``--state`` names a PostgreSQL database (a cluster) rather than a file."""
    return state.startswith(("postgresql://", "postgres://"))


def _lease(text: str) -> float:
    value = float(text)
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.2 and 3600 seconds, got {text}")
    return value


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that matter only with ``--state postgresql://...``."""
    parser.add_argument(
        "--lease",
        type=_lease,
        default=10.0,
        metavar="S",
        help="with a PostgreSQL --state: a node that stops renewing its lease for this long is "
        "dead to the others, which rescue its running jobs",
    )
    parser.add_argument(
        "--poll",
        type=_lease,
        default=1.0,
        metavar="S",
        help="with a PostgreSQL --state: look for work this often even without a notification",
    )
    parser.add_argument(
        "--poll-only",
        action="store_true",
        help="with a PostgreSQL --state: no LISTEN (for poolers that break it); poll only",
    )


def add_worker(commands: Subcommands) -> None:
    from ._main import DefaultsFormatter

    worker = commands.add_parser(
        "worker",
        help="run jobs from a shared PostgreSQL queue, with no driver",
        description="Join the cluster on a PostgreSQL database and run its jobs; logs on stderr. "
        "SIGINT/SIGTERM cancel the running jobs and stop, as serve does.",
        formatter_class=DefaultsFormatter,
        allow_abbrev=False,
    )
    add_config_flags(worker)
    # A worker's queue holds only what it claims ahead: short jobs are claimed in batches of up
    # to this many (long ones never: cluster/_claims.py), and each claim costs the database a
    # statement, so a worker waits for fewer, larger claims than serve's default would allow.
    worker.set_defaults(queue_size=WORKER_QUEUE)
    worker.add_argument(
        "--state", metavar="URL", required=True, help="the cluster's database: postgresql://..."
    )
    worker.add_argument(
        "--on-restart",
        choices=["rerun", "fail"],
        default="rerun",
        help="jobs of a node that died are run again, or failed with error type `interrupted`",
    )
    add_cluster_flags(worker)
    worker.set_defaults(run=_worker)


async def open_node(args: argparse.Namespace) -> ClusterNode | None:
    """Join the cluster named by ``args.state``; None (after saying why) if it cannot be used."""
    from ..cluster._node import ClusterError, ClusterNode

    try:
        return await ClusterNode.open(
            args.state,
            lease=args.lease,
            poll=args.poll,
            poll_only=args.poll_only,
            on_restart=args.on_restart,
        )
    except ClusterError as exc:
        print(f"stepline: {exc}", file=sys.stderr)
        return None


def _worker(args: argparse.Namespace) -> int:
    if not is_cluster_url(args.state):
        print("stepline: worker needs --state postgresql://...", file=sys.stderr)
        return 2
    config = config_from_args(args)

    async def main() -> int:
        node = await open_node(args)
        if node is None:
            return 2
        print(f"stepline: worker {node.description} ready", file=sys.stderr)
        server = Server(config, _Silent(), _Discard(), cluster=node)
        return await server.run()

    return with_late_signals(lambda: trio.run(main))


class _Silent(trio.abc.ReceiveStream):
    """A worker's stdin: no commands, ever (it stops on a signal, not at EOF)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _Discard(trio.abc.SendStream):
    """A worker's protocol output (``ready``, ``bye``): nobody reads it; logs go to stderr."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
