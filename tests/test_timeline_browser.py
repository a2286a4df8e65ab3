"""A timeline from a real run, opened in headless Chromium.

Checks from the DOM Chromium built (after the page's script ran) that there is one lane per
connection opened and one bar per request, and takes a 1200x700 screenshot. Chromium is
required (CI installs Debian's ``chromium``): without it this test fails, it never skips.

The screenshot goes to the test's temporary directory; with ``GLASSPOOL_UPDATE_SCREENSHOTS=1``
it is also copied to ``docs/img/timeline.png``, the image ``docs/cli.md`` shows.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
from pathlib import Path

import pytest

import glasspool
from glasspool.timeline import Timeline
from tests.demoserver import DemoServer, loopback_hosts

DOCS_IMAGE = Path(__file__).resolve().parent.parent / "docs" / "img" / "timeline.png"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
CHROMIUM_TIMEOUT_S = 90.0


def chromium() -> str:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is required for the timeline browser test and was not found "
        f"(looked for {', '.join(CHROMIUM_CANDIDATES)}); install it: apt-get install chromium",
        pytrace=False,
    )


async def run_chromium(tmp_path: Path, *args: str) -> bytes:
    """Run headless Chromium with a private profile; return its stdout."""
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CHROMIUM_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"chromium {args} did not finish within {CHROMIUM_TIMEOUT_S:g} s")
    assert proc.returncode == 0, f"chromium {args} exited {proc.returncode}: {err[-2000:]!r}"
    return out


async def traffic(a: DemoServer, b: DemoServer, timeline_file: Path) -> tuple[int, int]:
    """A run with queueing, reuse and two hosts; returns (connections opened, requests)."""
    requests = 0
    async with glasspool.Client(limit=6, limit_per_host=3) as client:
        timeline = Timeline(client.pool, title="glasspool timeline: 2 hosts, limit_per_host=3")
        slow = [client.get(a.url("/delay/40")) for _ in range(9)]  # three waves of three
        big = [client.get(b.url("/bytes/400000")) for _ in range(4)]  # one of them waits
        await asyncio.gather(*slow, *big)
        requests += len(slow) + len(big)
        for _ in range(3):
            await client.get(b.url("/delay/10"))  # one after another, on one connection
            requests += 1
        opened = sum(h.opened for h in client.pool.stats().hosts.values())
    timeline.write_html(timeline_file)
    return opened, requests


async def test_timeline_in_headless_chromium(tmp_path: Path) -> None:
    chromium()  # fail first and clearly if it is missing
    page = tmp_path / "timeline.html"
    host_a, host_b = loopback_hosts()
    async with DemoServer(host_a) as a, DemoServer(host_b) as b:
        opened, requests = await traffic(a, b, page)
    dom = (await run_chromium(tmp_path, "--dump-dom", page.as_uri())).decode()
    assert 'data-script="ran"' in dom  # the page's script ran without an error
    lanes = re.findall(r'<g class="lane"', dom)
    bars = re.findall(r'<g class="bar"', dom)
    assert len(lanes) == opened
    assert len(bars) == requests == 16
    assert len(re.findall(r'class="ph-wait"', dom)) >= 6  # waves two and three waited

    shot = tmp_path / "timeline.png"
    await run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,700", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1200, 700)
    assert len(png) > 20_000  # not a blank page
    if os.environ.get("GLASSPOOL_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMAGE)
