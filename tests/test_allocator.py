"""glasspool.tune_allocator(): opt-in, once per process, and a client never calls it.

What it changes is process-wide, so every call that may take effect runs in a fresh
interpreter. glibc's ``mallinfo2()`` shows the effect: ``hblks`` counts the blocks served
with a mapping of their own, which a 2 MiB block is below the tuned threshold (4 MiB) and
no longer is above it. A probe block is kept alive while it is looked at: freeing a mapped
block is what moves glibc's threshold, so a probe freed early would tune the heap itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import glasspool
from glasspool import _allocator

GLIBC = _allocator._is_glibc()

SCRIPT = textwrap.dedent(
    """
    import asyncio, ctypes, json
    import glasspool
    from glasspool import _allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    held = []

    def mapped(size):
        before = mallinfo2().hblks
        held.append(bytearray(size))  # kept: freeing it would move the threshold
        return mallinfo2().hblks > before

    async def answer(reader, writer):
        while await reader.readuntil(b"\\r\\n\\r\\n"):
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 65536\\r\\n\\r\\n" + bytes(65536))
            await writer.drain()

    async def main():
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with glasspool.Client() as client:
            for _ in range(3):
                assert len((await client.get(url)).content) == 65536
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    result = {"tuned_by_client": _allocator._tuned, "mapped_before": mapped(2 << 20)}
    result["first"] = glasspool.tune_allocator()
    result["second"] = glasspool.tune_allocator()
    result["tuned"] = _allocator._tuned
    result["mapped_after"] = mapped(2 << 20)
    print(json.dumps(result))
    """
)


def run_script(**env: str) -> dict[str, bool]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, bool] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_client_leaves_the_allocator_alone_and_tune_allocator_tunes_it_once() -> None:
    result = run_script()
    assert result == {
        "tuned_by_client": False,  # a client made, used and closed: not tuned
        "mapped_before": True,  # a 2 MiB block still gets a mapping of its own
        "first": True,
        "second": False,  # once per process
        "tuned": True,
        "mapped_after": False,  # now it comes from the heap
    }


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_TRIM_THRESHOLD_": "268435456"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.top_pad=16777216"},
    ],
    ids=["trim", "mmap", "tunables"],
)
def test_tune_allocator_does_nothing_when_the_environment_sets_thresholds(
    env: dict[str, str],
) -> None:
    result = run_script(**env)
    assert (result["first"], result["second"], result["tuned"]) == (False, False, False)


def test_tune_allocator_does_nothing_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_allocator, "_tuned", False)
    monkeypatch.setattr(_allocator, "_is_glibc", lambda: False)
    assert glasspool.tune_allocator() is False
    assert _allocator._tuned is False


def test_tune_allocator_is_public() -> None:
    assert "tune_allocator" in glasspool.__all__
    assert glasspool.tune_allocator is _allocator.tune_allocator
