"""Bad input from the caller never reaches the wire: ``glasspool.Client`` against a live server.

Issue 6, item 1. CR, LF, NUL, spaces and other control characters in the method, the URL or
a header; unsupported schemes, empty hosts and out-of-range ports; a ``Content-Length``
that disagrees with the body or comes with chunked framing. Each must raise
``InvalidURL`` or ``InvalidRequest`` naming the field *before any connection is taken*.
Every test runs its bad requests against a live :class:`RawServer`, checks that the server
accepted no connection and the pool never saw the key, and then sends one valid request to
prove the server was reachable all along. CRLF injection through a URL or a header is the
bug class of urllib3 CVE-2019-11236 and Python CVE-2019-9740 (see docs/security.md).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import yarl

from glasspool import Client, InvalidRequest, InvalidURL, Timeout
from tests.rawserver import RawServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TIMEOUT = Timeout(5, total=10)
BREAKERS = ["\r", "\n", "\r\n", "\x00", "\x01", "\x1f", "\x7f"]

Attempt = Callable[[Client, str], Awaitable[object]]


async def assert_never_sent(
    attempt: Attempt, error: type[Exception], message: str, *, client: Client | None = None
) -> None:
    """Run ``attempt(client, base)`` and check it fails with nothing on the wire.

    ``base`` is ``http://127.0.0.1:<port>`` of a live server. Afterwards a valid GET must
    open the first and only connection that server sees.
    """
    async with RawServer(replies=[OK]) as srv, client or Client(timeout=TIMEOUT) as c:
        base = f"http://127.0.0.1:{srv.port}"
        with pytest.raises(error, match=message) as info:
            await attempt(c, base)
        assert type(info.value) is error
        assert srv.connections == 0 and srv.received == []
        stats = c.pool.stats()
        assert (stats.open, len(stats.hosts)) == (0, 0), stats  # the pool never saw the key
        assert (await c.get(base + "/")).content == b"ok"
        assert srv.connections == 1


def get(url: str, **kwargs: Any) -> Attempt:
    """An attempt that GETs ``url`` (``{base}`` is replaced by the server's base URL)."""

    async def attempt(client: Client, base: str) -> object:
        return await client.get(url.format(base=base), **kwargs)

    return attempt


def request(method: str, path: str = "/", **kwargs: Any) -> Attempt:
    """An attempt that sends ``method`` to ``path`` on the server."""

    async def attempt(client: Client, base: str) -> object:
        return await client.request(method, base + path, **kwargs)

    return attempt


async def stream_of(*chunks: bytes) -> AsyncIterator[bytes]:
    """An async iterable request body (sent chunked)."""
    for chunk in chunks:
        yield chunk


# ------------------------------------------------------------------------------ method


@pytest.mark.parametrize(
    "method",
    ["GET\r\n", "GET\n", "GE\rT", "GET\x00", "GE T", " GET", "GET\t", "G(ET", "GÉT", "", "GET\x7f"],
)
async def test_bad_methods(method: str) -> None:
    await assert_never_sent(request(method), InvalidRequest, "method .* is not an RFC 9110 token")


async def test_request_line_injection_through_the_method() -> None:
    method = "GET / HTTP/1.1\r\nHost: victim\r\n\r\nGET"
    await assert_never_sent(request(method), InvalidRequest, "method")


# --------------------------------------------------------------------------------- URL


@pytest.mark.parametrize("char", [*BREAKERS, " ", "\t"])
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("http://127.0.0.1{c}x/", "host"),
        ("{base}/a{c}b", "path"),
        ("{base}/a?q=1{c}2", "query"),
        ("{base}/a#f{c}g", "fragment"),
        ("http://user{c}x@127.0.0.1/", "userinfo"),
    ],
)
async def test_control_characters_and_spaces_in_the_url(
    char: str, template: str, field: str
) -> None:
    url = template.replace("{c}", char)
    await assert_never_sent(get(url), InvalidURL, f"forbidden character .* in its {field}")


async def test_header_injection_through_the_path() -> None:
    url = "{base}/x HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /smuggled"
    await assert_never_sent(get(url), InvalidURL, "in its path")


@pytest.mark.parametrize(
    ("part", "raw"),
    [
        ("path", "/a b"),
        ("path", "/a\x00"),
        ("path", "/a\x7f"),
        ("query", "/?a=\x00"),
        ("query", "/?a=\x01"),
        ("query", "/?a= b"),
    ],
)
async def test_an_already_encoded_yarl_url_is_checked_too(part: str, raw: str) -> None:
    async def attempt(client: Client, base: str) -> object:
        return await client.get(yarl.URL(base + raw, encoded=True))

    await assert_never_sent(attempt, InvalidURL, f"in its {part}")


async def test_yarl_itself_drops_cr_lf_and_tab_from_an_encoded_url() -> None:
    """yarl (like urllib.parse) removes CR, LF and TAB when it parses; none is sent."""
    async with RawServer(replies=[OK]) as srv, Client(timeout=TIMEOUT) as client:
        url = yarl.URL(f"http://127.0.0.1:{srv.port}/a\r\n?q=\t1\r\n", encoded=True)
        assert (await client.get(url)).content == b"ok"
        assert srv.requests[0].startswith(b"GET /a?q=1 HTTP/1.1\r\nHost: ")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "ws://127.0.0.1/",
        "wss://127.0.0.1/",
        "gopher://127.0.0.1/",
        "javascript:alert(1)",
        "data:text/plain,hi",
        "http+unix://%2Ftmp%2Fsock/",
        "httpx://127.0.0.1/",
    ],
)
async def test_unsupported_schemes(url: str) -> None:
    await assert_never_sent(get(url), InvalidURL, "unsupported scheme")


@pytest.mark.parametrize("url", ["/relative", "127.0.0.1/x", "//127.0.0.1/x"])
async def test_a_url_without_a_scheme(url: str) -> None:
    await assert_never_sent(get(url), InvalidURL, "has no scheme")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http:///path", "has no host"),
        ("http://", "has no host"),
        ("https://", "has no host"),
        ("http:", "has no host"),
        ("http://:80/", "host is required"),
    ],
)
async def test_empty_hosts(url: str, message: str) -> None:
    await assert_never_sent(get(url), InvalidURL, message)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "99999999999", "8o", "0x50"])
async def test_ports_outside_1_to_65535(port: str) -> None:
    await assert_never_sent(get(f"http://127.0.0.1:{port}/"), InvalidURL, "port")


async def test_a_bad_base_url_is_refused_when_the_client_is_made() -> None:
    for base_url, message in [("ftp://127.0.0.1/", "unsupported scheme"), ("http:///", "no host")]:
        with pytest.raises(InvalidURL, match=message):
            Client(base_url=base_url)


# ----------------------------------------------------------------------------- base_url

# Relative references that name another host, or that a WHATWG URL parser (browsers, many
# proxies and servers) would read as naming one: a backslash counts as "/" there. yarl
# keeps only "//host" and "////path" recognisable (it drops an empty authority and
# percent-encodes backslashes), so only those are tried as yarl.URL too.
NETWORK_PATHS = [
    ("//{evil}/steal", False),
    ("//{evil}/steal", True),
    ("////{evil}/steal", True),
    ("///{evil}/steal", False),
    ("////{evil}/steal", False),
    ("\\\\{evil}\\steal", False),
    ("/\\{evil}/steal", False),
    ("\\/{evil}/steal", False),
    ("\\\\{evil}/steal", False),
]


@pytest.mark.parametrize(("template", "as_yarl"), NETWORK_PATHS)
async def test_a_relative_url_cannot_leave_the_origin_of_base_url(
    template: str, as_yarl: bool
) -> None:
    """axios CVE-2024-39338: "//evil/x" sent the client's Authorization to evil."""
    async with RawServer(replies=[OK]) as api, RawServer(replies=[OK]) as evil:
        base = f"http://127.0.0.1:{api.port}/v1/"
        headers = {"Authorization": "Bearer s3cret"}
        async with Client(base_url=base, headers=headers, timeout=TIMEOUT) as client:
            text = template.replace("{evil}", f"127.0.0.1:{evil.port}")
            url: str | yarl.URL = yarl.URL(text) if as_yarl else text
            with pytest.raises(InvalidURL, match="would leave base_url's origin"):
                await client.get(url)
            assert len(client.pool.stats().hosts) == 0
            assert (await client.get("/ok")).content == b"ok"
        assert evil.connections == 0
        assert api.requests[0].startswith(b"GET /v1/ok HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("%2F%2F{evil}/steal", "/v1/%2F%2F{evil}/steal"),
        ("/%5C%5C{evil}/steal", "/v1/%5C%5C{evil}/steal"),
        ("@{evil}/steal", "/v1/@{evil}/steal"),
    ],
)
async def test_encoded_slashes_stay_in_the_path_of_base_url(template: str, path: str) -> None:
    async with RawServer(replies=[OK]) as api, RawServer(replies=[OK]) as evil:
        where = f"127.0.0.1:{evil.port}"
        base = f"http://127.0.0.1:{api.port}/v1/"
        async with Client(base_url=base, timeout=TIMEOUT) as client:
            assert (await client.get(template.replace("{evil}", where))).content == b"ok"
        assert evil.connections == 0
        line = f"GET {path.replace('{evil}', where)} HTTP/1.1\r\n".encode()
        assert api.requests[0].startswith(line)


async def test_an_absolute_url_overrides_base_url() -> None:
    """Documented: an absolute URL goes where it says, with the client's headers."""
    async with RawServer(replies=[OK]) as api, RawServer(replies=[OK]) as other:
        base = f"http://127.0.0.1:{api.port}/v1/"
        async with Client(base_url=base, timeout=TIMEOUT) as client:
            assert (await client.get(f"HTTP://127.0.0.1:{other.port}/x")).content == b"ok"
        assert (api.connections, other.connections) == (0, 1)


async def test_query_parameters_are_percent_encoded_not_refused() -> None:
    async with RawServer(replies=[OK]) as srv, Client(timeout=TIMEOUT) as client:
        url = f"http://127.0.0.1:{srv.port}/p"
        r = await client.get(url, params={"q": "a\r\nX-Injected: 1\x00"})
        assert r.content == b"ok"
        line = srv.requests[0].split(b"\r\n", 1)[0]
        assert line == b"GET /p?q=a%0D%0AX-Injected:+1%00 HTTP/1.1"
        assert b"X-Injected" not in srv.requests[0].split(b"\r\n", 1)[1]


# ----------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "name",
    ["X\r\nY", "X\nY", "X\rY", "X\x00", "X Y", "X\tY", "", "X:", ":authority", "(X)", "X,Y", "Ä"],
)
async def test_bad_header_names(name: str) -> None:
    await assert_never_sent(
        request("GET", headers={name: "v"}), InvalidRequest, "header name .* is not an RFC 9110"
    )


@pytest.mark.parametrize("char", BREAKERS)
async def test_control_characters_in_header_values(char: str) -> None:
    attempt = request("GET", headers=[("X-Ok", "fine"), ("X-Bad", f"a{char}b")])
    await assert_never_sent(attempt, InvalidRequest, "header 'X-Bad' has the forbidden character")


@pytest.mark.parametrize(
    "value",
    [
        "a\r\nX-Injected: 1",
        "a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: victim",
        "victim\r\nX: y",
    ],
)
async def test_header_injection_through_a_value(value: str) -> None:
    attempt = request("GET", headers={"Host": value})
    await assert_never_sent(attempt, InvalidRequest, "header 'Host' has the forbidden character")


async def test_a_bad_default_header_of_the_client_never_reaches_the_wire() -> None:
    async with RawServer(replies=[OK]) as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        async with Client(headers={"Authorization": "Bearer x\r\nX-Injected: 1"}) as client:
            with pytest.raises(InvalidRequest, match="'Authorization' has the forbidden"):
                await client.get(url, timeout=TIMEOUT)
            assert len(client.pool.stats().hosts) == 0
        assert srv.connections == 0
        async with Client(headers={"Authorization": "Bearer x"}) as client:
            assert (await client.get(url, timeout=TIMEOUT)).content == b"ok"
        assert srv.connections == 1


async def test_a_tab_inside_a_value_is_allowed() -> None:
    async with RawServer(replies=[OK]) as srv, Client(timeout=TIMEOUT) as client:
        await client.get(f"http://127.0.0.1:{srv.port}/", headers={"X-Tab": "a\tb"})
        assert b"\r\nX-Tab: a\tb\r\n" in srv.requests[0]


# -------------------------------------------------------------------------- body framing


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("POST", {"content": b"abc", "headers": {"Content-Length": "5"}}, "says 5 .* has 3 bytes"),
        ("POST", {"content": b"abcdef", "headers": {"Content-Length": "3"}}, "says 3 .* has 6"),
        ("POST", {"json": {"a": 1}, "headers": {"Content-Length": "2"}}, "says 2 .* has 7 bytes"),
        ("GET", {"headers": {"Content-Length": "5"}}, "says 5 bytes but the body has 0 bytes"),
        ("POST", {"content": b"abc", "headers": {"Content-Length": "abc"}}, "not a non-negative"),
        ("POST", {"content": b"abc", "headers": {"Content-Length": "-3"}}, "not a non-negative"),
        ("POST", {"content": b"abc", "headers": {"Content-Length": "+3"}}, "not a non-negative"),
        ("POST", {"content": b"abc", "headers": {"Content-Length": "3, 3"}}, "not a non-negative"),
        ("POST", {"content": b"abc", "headers": {"Content-Length": "0x3"}}, "not a non-negative"),
        (
            "POST",
            {"content": b"abc", "headers": {"Content-Length": "\uff13"}},
            "not a non-negative",
        ),
        (
            "POST",
            {"content": b"abc", "headers": [("Content-Length", "3"), ("content-length", "3")]},
            "given more than once",
        ),
        (
            "POST",
            {"content": b"abc", "headers": {"Content-Length": "3", "Transfer-Encoding": "chunked"}},
            "both Content-Length: 3 and Transfer-Encoding: chunked",
        ),
        (
            "POST",
            {"content": b"abc", "headers": {"Transfer-Encoding": "chunked"}},
            "only for a streamed body",
        ),
        (
            "GET",
            {"headers": [("Host", "127.0.0.1"), ("host", "evil.example")]},
            "'host' was given more than once",
        ),
        ("POST", {"content": b"a", "json": 1}, "give only one of content=, json="),
        ("POST", {"json": math.nan}, "cannot be encoded as JSON"),
    ],
)
async def test_body_framing_that_disagrees(
    method: str, kwargs: dict[str, Any], message: str
) -> None:
    await assert_never_sent(request(method, **kwargs), InvalidRequest, message)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Content-Length": "3x"}, "Content-Length '3x' is not a non-negative integer"),
        ({"Transfer-Encoding": "gzip"}, "Transfer-Encoding: gzip was given"),
        ({"Transfer-Encoding": "gzip, chunked"}, "only sends 'chunked'"),
        ({"Transfer-Encoding": "chunked", "Content-Length": "3"}, "both Content-Length"),
    ],
)
async def test_content_length_or_transfer_encoding_with_a_streamed_body(
    headers: dict[str, str], message: str
) -> None:
    async def attempt(client: Client, base: str) -> object:
        return await client.post(base + "/", content=stream_of(b"abc"), headers=headers)

    await assert_never_sent(attempt, InvalidRequest, message)


async def test_a_matching_content_length_is_sent_once() -> None:
    async with RawServer(replies=[OK]) as srv, Client(timeout=TIMEOUT) as client:
        url = f"http://127.0.0.1:{srv.port}/"
        await client.post(url, content=b"abc", headers={"content-length": "3"})
        assert srv.requests[0].lower().count(b"\r\ncontent-length: 3\r\n") == 1
        assert srv.requests[0].endswith(b"\r\n\r\nabc")
