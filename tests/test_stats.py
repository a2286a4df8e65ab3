"""glasspool._stats: the snapshots and their one table renderer (the CLI prints it too)."""

from __future__ import annotations

import doctest

import pytest

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


def test_hosts_accept_a_key_its_text_or_a_host_name_alike() -> None:
    b = PoolKey("https", "127.0.0.1", 8443)
    c = PoolKey("http", "other.example", 80)
    one, two, three = (glasspool.HostStats(None, 0, n, 0, 0, 9, 1, 0, 0, 1) for n in (1, 2, 3))
    hosts = HostsView({A: one, b: two, c: three})
    assert hosts[A] is hosts.get(A) is hosts[str(A)] is hosts.get(str(A)) is one
    assert hosts.get("https://127.0.0.1:8443") is two and "https://127.0.0.1:8443" in hosts
    assert hosts["other.example"] is hosts.get("other.example") is three
    missing = PoolKey("http", "missing.example", 80)
    assert hosts.get(missing) is None and hosts.get("nowhere", one) is one
    # a host name two keys share is ambiguous: [] says so, get() gives the default
    assert "127.0.0.1" in hosts and hosts.get("127.0.0.1") is None
    with pytest.raises(KeyError, match="matches 2 pool keys"):
        hosts["127.0.0.1"]
