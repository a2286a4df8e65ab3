"""glasspool._stats: the snapshots and their one table renderer (the CLI prints it too)."""

from __future__ import annotations

import doctest

import glasspool
from glasspool import PoolKey, _stats
from glasspool._stats import TABLE_COLUMNS, HostsView

A = PoolKey("http", "127.0.0.1", 8001)


def test_doctests_pass() -> None:
    result = doctest.testmod(_stats)
    assert result.attempted > 0
    assert result.failed == 0


def test_stats_table_rows_and_columns() -> None:
    host = glasspool.HostStats(5, 1, 2, 3, 4, 0, 0, 0, 0, 0)
    stats = glasspool.PoolStats(25, 5, 6, 1, 2, 3, 4, 19, HostsView({A: host}))
    rows = stats.table(lambda k: "host A").splitlines()
    assert rows[0].split() == ["open", "in", "use", "idle", "connecting", "waiting", "available"]
    assert rows[1].split()[-6:] == ["6", "2", "3", "1", "4", "19"]
    assert rows[2].startswith("host A http://127.0.0.1:8001 (limit 5)")
    assert rows[2].split()[-6:] == ["6", "2", "3", "1", "4", "0"]


def test_stats_table_without_names_or_limits() -> None:
    host = glasspool.HostStats(None, 0, 1, 0, 0, 9, 1, 0, 0, 1)
    rows = glasspool.PoolStats(10, None, 1, 0, 1, 0, 0, 9, HostsView({A: host})).table()
    lines = rows.splitlines()
    assert len(lines) == 3 and not rows.endswith("\n")
    assert lines[0].split() == " ".join(TABLE_COLUMNS).split()
    assert lines[2].startswith("http://127.0.0.1:8001  ")
