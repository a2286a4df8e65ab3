"""Uploads: streamed bodies of a declared length, and multipart/form-data (``files=``).

The server is an aiohttp application on 127.0.0.1 that the tests start; it reports the
framing it saw and parses multipart bodies with aiohttp's own parser.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest

import glasspool


async def _echo(request: aiohttp.web.Request) -> aiohttp.web.Response:
    body = await request.read()
    return aiohttp.web.json_response(
        {
            "content_length": request.headers.get("Content-Length"),
            "transfer_encoding": request.headers.get("Transfer-Encoding"),
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def _form(request: aiohttp.web.Request) -> aiohttp.web.Response:
    form = await request.post()
    fields: dict[str, Any] = {}
    for name, value in form.items():
        if isinstance(value, aiohttp.web.FileField):
            data = value.file.read()
            fields[name] = {
                "filename": value.filename,
                "content_type": value.content_type,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        else:
            fields[name] = value
    return aiohttp.web.json_response(
        {
            "content_type": request.headers.get("Content-Type"),
            "content_length": request.headers.get("Content-Length"),
            "transfer_encoding": request.headers.get("Transfer-Encoding"),
            "fields": fields,
        }
    )


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = aiohttp.web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/echo", _echo)
    app.router.add_put("/echo", _echo)
    app.router.add_post("/form", _form)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _in_use(client: glasspool.Client) -> int:
    return client.pool.stats().in_use


# ------------------------------------------------------------ content= with a length


async def test_stream_with_content_length_is_sent_with_that_length(server: str) -> None:
    parts = [b"a" * 1000, b"", b"b" * 70000, b"c"]
    total = sum(map(len, parts))
    async with glasspool.Client() as client:
        response = await client.post(
            f"{server}/echo",
            content=_chunks(*parts),
            headers={"Content-Length": str(total)},
        )
        seen = response.json()
        assert seen["content_length"] == str(total)
        assert seen["transfer_encoding"] is None
        assert seen["size"] == total
        assert seen["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
        # the connection was clean: it is reused for the next request
        await client.post(f"{server}/echo", content=b"x")
        host = client.pool.stats().hosts["127.0.0.1"]
        assert host.opened == 1 and host.reused == 1


async def test_stream_without_length_is_chunked(server: str) -> None:
    async with glasspool.Client() as client:
        seen = (await client.post(f"{server}/echo", content=_chunks(b"ab", b"cd"))).json()
    assert seen["transfer_encoding"] == "chunked"
    assert seen["size"] == 4


@pytest.mark.parametrize(
    ("parts", "declared", "words"),
    [
        ((b"abc", b"def"), 4, ("4 bytes declared", "at least 6 yielded")),
        ((b"abc",), 10, ("10 bytes declared", "3 yielded")),
        ((), 1, ("1 bytes declared", "0 yielded")),
    ],
)
async def test_stream_that_lies_about_its_length(
    server: str, parts: tuple[bytes, ...], declared: int, words: tuple[str, ...]
) -> None:
    async with glasspool.Client() as client:
        with pytest.raises(glasspool.InvalidRequest) as info:
            await client.post(
                f"{server}/echo",
                content=_chunks(*parts),
                headers={"Content-Length": str(declared)},
            )
        for word in words:
            assert word in str(info.value)
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.idle == 0  # closed, not kept for reuse
        host = stats.hosts["127.0.0.1"]
        assert host.closed == host.opened == 1
        # the pool still works
        assert (await client.post(f"{server}/echo", content=b"ok")).json()["size"] == 2


async def test_stream_with_bad_content_length_header(server: str) -> None:
    async with glasspool.Client() as client:
        with pytest.raises(glasspool.InvalidRequest, match="not a non-negative integer"):
            await client.post(
                f"{server}/echo", content=_chunks(b"a"), headers={"Content-Length": "-1"}
            )
        assert client.pool.stats().in_use == 0
