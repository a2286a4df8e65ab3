"""Uploads: streamed bodies of a declared length, and multipart/form-data (``files=``).

The server is an aiohttp application on 127.0.0.1 that the tests start; it reports the
framing it saw and parses multipart bodies with aiohttp's own parser.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import pytest

import glasspool
from glasspool import _multipart


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
            fields.setdefault(name, []).append(
                {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        else:
            fields.setdefault(name, []).append(value)
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


@pytest.mark.parametrize("declared", [None, "4"])
async def test_a_stream_that_yields_text_is_a_type_error_naming_content(
    server: str, declared: str | None
) -> None:
    async def text() -> AsyncIterator[Any]:
        yield b"ab"
        yield "cd"

    headers = {} if declared is None else {"Content-Length": declared}
    async with glasspool.Client() as client:
        with pytest.raises(TypeError, match=r"content= must yield bytes .* not str"):
            await client.post(f"{server}/echo", content=text(), headers=headers)
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.idle == 0  # half sent: closed, not pooled
        assert (await client.post(f"{server}/echo", content=b"ok")).json()["size"] == 2


# ------------------------------------------------------------ files= (multipart)


async def test_fields_and_files_of_every_kind_arrive_as_sent(
    server: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    blob = bytes(range(256)) * 10
    seekable = io.BytesIO(b"xx" + blob)
    seekable.seek(2)  # a file object is sent from where it stands
    with path.open("rb") as opened:
        files: dict[str, Any] = {
            "path": path,
            "raw": b"raw bytes",
            "named": ("notes.txt", b"hello"),
            "typed": ("data.bin", seekable, "application/x-custom"),
            "opened": opened,
            "plain": (None, "Ünï field".encode()),
        }
        async with glasspool.Client() as client:
            response = await client.post(
                f"{server}/form", data={"title": "Ünïcode", "n": [1, 2]}, files=files
            )
    seen = response.json()
    assert seen["content_type"].startswith("multipart/form-data; boundary=")
    assert seen["transfer_encoding"] is None and seen["content_length"] is not None
    fields = seen["fields"]
    assert fields.pop("title") == ["Ünïcode"]
    assert fields.pop("n") == ["1", "2"]
    assert fields.pop("plain") == ["Ünï field"]  # no filename: a field, not a file
    assert all(len(v) == 1 for v in fields.values())
    fields = {k: v[0] for k, v in fields.items()}

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    assert fields["path"] == {
        "filename": "report.csv",
        "content_type": "text/csv",
        "size": 8,
        "sha256": digest(b"a,b\n1,2\n"),
    }
    assert fields["raw"]["filename"] == "raw"
    assert fields["raw"]["content_type"] == "application/octet-stream"
    assert fields["raw"]["sha256"] == digest(b"raw bytes")
    assert fields["named"]["filename"] == "notes.txt"
    assert fields["named"]["content_type"] == "text/plain"
    assert fields["named"]["sha256"] == digest(b"hello")
    assert fields["typed"] == {
        "filename": "data.bin",
        "content_type": "application/x-custom",
        "size": len(blob),
        "sha256": digest(blob),
    }
    assert fields["opened"]["filename"] == "report.csv"
    assert fields["opened"]["sha256"] == digest(b"a,b\n1,2\n")


async def test_a_2_mib_file_is_streamed_with_a_content_length(
    server: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    reads: list[int] = []
    real_read = _multipart._read

    async def counting(file: Any) -> AsyncIterator[bytes]:
        async for chunk in real_read(file):
            reads.append(len(chunk))
            yield chunk

    monkeypatch.setattr(_multipart, "_read", counting)
    async with glasspool.Client() as client:
        seen = (await client.post(f"{server}/form", files={"f": path})).json()
    assert seen["fields"]["f"][0]["size"] == len(data)
    assert seen["fields"]["f"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert seen["transfer_encoding"] is None
    assert int(seen["content_length"]) > len(data)
    assert max(reads) == 64 * 1024 and len(reads) == 32  # never read whole


async def test_an_unseekable_file_is_sent_chunked(server: str) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def read(self, size: int = -1) -> bytes:
            return self._data.read(size)

    async with glasspool.Client() as client:
        seen = (
            await client.post(f"{server}/form", files={"p": ("pipe.dat", Pipe(b"z" * 100000))})
        ).json()
    assert seen["transfer_encoding"] == "chunked" and seen["content_length"] is None
    assert seen["fields"]["p"][0]["size"] == 100000


def test_names_with_quotes_and_newlines_are_percent_encoded() -> None:
    body = _multipart.multipart_body({'a"b\r\nc': ('f"\n.txt', b"x")})
    head = body._parts[0].head
    assert b'name="a%22b%0D%0Ac"; filename="f%22%0A.txt"' in head
    assert len(body.boundary) == 32
    assert body.boundary != _multipart.multipart_body({"a": b""}).boundary


async def test_length_matches_what_is_sent(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"{}")
    body = _multipart.multipart_body({"a": path, "b": io.BytesIO(b"123")}, {"k": "v"})
    sent = b"".join([chunk async for chunk in body])
    assert body.length == len(sent)
    assert body.replayable
    assert b"".join([chunk async for chunk in body]) == sent  # rewound


def test_a_text_mode_file_is_refused_naming_the_field(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("text")
    with path.open() as text, pytest.raises(TypeError, match=r"files='doc'.*text mode"):
        _multipart.multipart_body({"doc": text})
    with pytest.raises(TypeError, match=r"files='doc'.*text mode"):
        _multipart.multipart_body({"doc": ("a.txt", io.StringIO("x"))})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"files": {"a": 3}}, TypeError, "files='a' must be bytes"),
        ({"files": [("a", b"", "x")]}, TypeError, "files= must be a mapping .* or a list"),
        ({"files": {("a",): b""}}, TypeError, "files= keys must be str"),
        ({"files": {"a": ("x", b"", "t", 4)}}, TypeError, "not 4 items"),
        ({"files": {"a": b""}, "data": {"b": b"raw"}}, TypeError, "form field 'b' has a value"),
        ({"data": {"b": b"raw"}}, TypeError, "form field 'b' has a value of type bytes"),
        ({"params": {"b": b"raw"}}, TypeError, "query parameter 'b' has a value"),
        ({"files": {"a": b""}, "json": {}}, glasspool.InvalidRequest, "not with json="),
        (
            {"files": {"a": pathlib.Path("/nonexistent/zz")}},
            FileNotFoundError,
            "files='a': cannot read",
        ),
    ],
)
async def test_bad_files_are_refused_before_sending(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    async with glasspool.Client() as client:
        with pytest.raises(error, match=match):
            await client.post("http://127.0.0.1:9/", **kwargs)
        assert client.pool.stats().open == 0


async def test_a_replayable_multipart_body_is_retried(tmp_path: pathlib.Path) -> None:
    attempts: list[bytes] = []
    path = tmp_path / "p.txt"
    path.write_bytes(b"payload" * 1000)

    async def flaky(request: aiohttp.web.Request) -> aiohttp.web.Response:
        attempts.append(await request.read())
        return aiohttp.web.Response(status=503 if len(attempts) == 1 else 200)

    app = aiohttp.web.Application()
    app.router.add_post("/", flaky)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        retry = glasspool.Retry(total=2, backoff=0)
        async with glasspool.Client(retry=retry) as client:
            response = await client.post(url, files={"f": path}, headers={"Idempotency-Key": "k1"})
    finally:
        await runner.cleanup()
    assert response.status == 200
    assert len(attempts) == 2 and attempts[0] == attempts[1]
    assert b"payload" * 1000 in attempts[1]


async def test_a_307_resends_a_replayable_multipart_body(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"A" * 100000)
    bodies: list[bytes] = []

    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        bodies.append(request.content or b"")
        if request.url.path == "/old":
            return glasspool.MockResponse(307, {"Location": "/new"})
        return glasspool.MockResponse(200)

    transport = glasspool.MockTransport(handler)
    async with glasspool.Client(transport=transport) as client:
        response = await client.post("http://a.test/old", files={"f": path})
    assert response.status == 200 and len(bodies) == 2
    assert bodies[0] == bodies[1] and b"A" * 100000 in bodies[1]
    second = transport.requests[1]
    assert second.headers["content-length"] == str(len(bodies[1]))


async def test_an_unseekable_multipart_body_is_not_sent_twice() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return b""

    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        return glasspool.MockResponse(307, {"Location": "/new"})

    async with glasspool.Client(transport=glasspool.MockTransport(handler)) as client:
        with pytest.raises(glasspool.InvalidRequest, match="cannot be replayed"):
            await client.post("http://a.test/old", files={"f": Pipe()})
        assert client.pool.stats().in_use == 0


async def test_stream_takes_files_too() -> None:
    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        return glasspool.MockResponse(200, content=request.content or b"")

    async with glasspool.Client(transport=glasspool.MockTransport(handler)) as client:
        async with client.stream("POST", "http://a.test/", files={"f": b"abc"}) as response:
            body = await response.read()
    assert b'name="f"; filename="f"' in body and b"\r\n\r\nabc\r\n" in body


async def test_a_none_filename_sends_a_plain_field() -> None:
    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        return glasspool.MockResponse(200, content=request.content or b"")

    files: dict[str, Any] = {"meta": (None, b'{"a": 1}', "application/json"), "v": (None, b"1")}
    async with glasspool.Client(transport=glasspool.MockTransport(handler)) as client:
        body = (await client.post("http://a.test/", files=files)).content
    assert b'name="meta"\r\nContent-Type: application/json\r\n\r\n{"a": 1}\r\n' in body
    assert b'name="v"\r\n\r\n1\r\n' in body and b"filename" not in body


async def test_files_as_pairs_may_repeat_a_field_name() -> None:
    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        return glasspool.MockResponse(200, content=request.content or b"")

    files = [("images", ("a.png", b"AAA")), ("images", ("b.png", b"BBB")), ("note", b"n")]
    async with glasspool.Client(transport=glasspool.MockTransport(handler)) as client:
        body = (await client.post("http://a.test/", files=files)).content
    a = body.index(b'name="images"; filename="a.png"')
    b = body.index(b'name="images"; filename="b.png"')
    assert a < b < body.index(b'name="note"; filename="note"')


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("multipart/form-data", r"multipart/form-data; boundary=([0-9a-f]{32})"),
        ("multipart/mixed;", r"multipart/mixed; boundary=([0-9a-f]{32})"),
        ('multipart/form-data; boundary="my b"', r'multipart/form-data; boundary="(my b)"'),
        ("multipart/form-data; Boundary=abc123", r"multipart/form-data; Boundary=(abc123)"),
        ("application/json", r"multipart/form-data; boundary=([0-9a-f]{32})"),
    ],
)
async def test_a_content_type_given_with_files_names_the_body_boundary(
    given: str, sent: str
) -> None:
    seen: list[glasspool.Request] = []

    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        seen.append(request)
        return glasspool.MockResponse(200)

    async with glasspool.Client(transport=glasspool.MockTransport(handler)) as client:
        await client.post("http://a.test/", files={"f": b"x"}, headers={"Content-Type": given})
    (request,) = seen
    assert request.headers.get_all("content-type") == [request.headers["content-type"]]
    found = re.fullmatch(sent, request.headers["content-type"])
    assert found is not None, request.headers["content-type"]
    body = request.content or b""
    assert body.startswith(b"--" + found.group(1).encode() + b"\r\n")
    assert body.endswith(b"--" + found.group(1).encode() + b"--\r\n")


@pytest.mark.parametrize("boundary", ['""', "a" * 71, '"ends-in-space "', "bad\\u00e9"])
async def test_an_invalid_boundary_given_is_refused(boundary: str) -> None:
    value = f"multipart/form-data; boundary={boundary.encode().decode('unicode_escape')}"

    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        raise AssertionError("an invalid body must not be sent")

    async with glasspool.Client(transport=glasspool.MockTransport(handler)) as client:
        with pytest.raises(glasspool.InvalidRequest, match=r"multipart boundary .* is not valid"):
            await client.post("http://a.test/", files={"f": b"x"}, headers={"Content-Type": value})
        assert client.pool.stats().open == 0
