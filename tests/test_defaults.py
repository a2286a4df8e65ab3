"""glasspool._defaults: the client, the pool and the CLI start from the same defaults."""

from __future__ import annotations

import doctest

from glasspool import Client, Pool, _defaults
from glasspool._defaults import (
    DEFAULT_EVICT_GRACE,
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_LIMIT,
    DEFAULT_LIMIT_PER_HOST,
)
from glasspool._pool.key import PoolKey
from glasspool._pool.state import PoolState
from glasspool.cli import build_parser
from glasspool.cli._get import GetOptions


def test_doctests_pass() -> None:
    result = doctest.testmod(_defaults)
    assert result.attempted > 0
    assert result.failed == 0


async def _never(key: PoolKey, connect_timeout: float | None) -> object:
    raise AssertionError("nothing connects here")


async def test_client_and_pool_defaults() -> None:
    async with Client() as client:
        stats = client.pool.stats()
        assert (stats.limit, stats.limit_per_host) == (DEFAULT_LIMIT, DEFAULT_LIMIT_PER_HOST)
    async with Client(limit=4) as small:
        assert small.pool.stats().limit_per_host == 4
    pool = Pool(_never)  # type: ignore[arg-type]
    assert (pool.stats().limit, pool.stats().limit_per_host) == (DEFAULT_LIMIT, None)
    await pool.aclose()
    state = PoolState()
    assert (state.limit, state.limit_per_host) == (DEFAULT_LIMIT, None)
    assert state.keepalive_expiry == DEFAULT_KEEPALIVE_EXPIRY
    assert state.evict_grace == DEFAULT_EVICT_GRACE


def test_the_cli_defaults() -> None:
    args = build_parser().parse_args(["get", "http://127.0.0.1/"])
    assert args.limit == DEFAULT_LIMIT == GetOptions(()).limit
    assert GetOptions(()).limit_per_host == DEFAULT_LIMIT_PER_HOST
