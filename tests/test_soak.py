"""A 30-second soak (``benchmarks/soak.py``): mixed load with faults; flat memory and fds.

Marked ``soak``: it runs by default (also in CI); deselect it with ``-m "not soak"``.
The soak runs in its own process, so its RSS and descriptor counts are its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.soak

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
SECONDS = 30
HARD_CAP_S = 150  # the soak's own time, the last requests' timeouts, startup, slow CI


async def run_soak(seconds: float) -> dict[str, Any]:
    """Run the soak script with ``--json`` and return its report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SOAK),
        "--seconds",
        str(seconds),
        "--json",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(HARD_CAP_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the soak ran past its {HARD_CAP_S}s cap") from None
    assert proc.returncode in (0, 1), err.decode()[-3000:]
    report: dict[str, Any] = json.loads(out)
    report["stderr"] = err.decode()
    return report


async def test_soak_holds_limits_and_keeps_memory_and_descriptors_flat() -> None:
    r = await run_soak(SECONDS)
    where = f"soak report: {json.dumps({k: v for k, v in r.items() if k != 'stderr'})}"
    assert r["failures"] == [], where
    assert r["wrong_bodies"] == 0 and r["limit_violations"] == [], where
    assert 0 < r["peak_open"] <= r["limit"], where
    assert r["requests"] >= 2000, where
    outcomes = r["outcomes"]
    assert outcomes.get("status 200", 0) > r["requests"] // 2, where
    for expected in ("cancelled", "dropped", "ServerDisconnected", "IncompleteBody"):
        assert outcomes.get(expected, 0) > 0, f"{expected} never happened: {where}"
    fds, blocks, rss = r["fds"], r["py_blocks"], r["rss_kib"]
    assert fds["after_close"] == fds["start"], where
    # client and servers share the process: two descriptors per open connection at most
    assert fds["end"] - fds["start"] <= 2 * r["limit"] + 2, where
    assert blocks["end"] <= blocks["after_first_slice"] * 1.10, where
    assert rss["end"] <= rss["after_first_slice"] * 1.5, where
