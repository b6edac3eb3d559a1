"""``pytest --shard=K/N`` runs every N-th test starting at the K-th: N runs cover the suite once."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shard", default="1/1", help="K/N: run the K-th of N equal slices")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    k, n = (int(part) for part in config.getoption("shard").split("/"))
    dropped = [item for i, item in enumerate(items) if i % n != k - 1]
    config.hook.pytest_deselected(items=dropped)
    items[:] = [item for i, item in enumerate(items) if i % n == k - 1]
