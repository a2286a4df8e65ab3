"""What glasspool shows: no secret, and no control character a server chose.

A password in a request URL or a Redis URL must never appear in an exception message, a
repr, a warning or the CLI's output (``src/glasspool/_redact.py`` decides what is hidden);
a reason phrase or other server text must reach them with its control characters escaped
(CWE-117: a C1 CSI or ESC sequence repaints a terminal, U+0085 or U+2028 forges a log
line). Every request goes to a loopback server the test starts.
"""

from __future__ import annotations

import asyncio
import doctest
import gc
import re

import pytest
import yarl

import glasspool
import glasspool._redact as redact
from glasspool import (
    Client,
    ClientClosed,
    GlasspoolError,
    HTTPStatusError,
    InvalidURL,
    ProtocolError,
    Timeout,
    TooManyRedirects,
    TotalTimeout,
)
from glasspool._redact import redact_url, safe_text, telemetry_url
from glasspool._response import Response
from tests.rawserver import RawServer, read_request

TIMEOUT = Timeout(5, total=10)
SECRET = "s3cret"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# Every character that must never reach a message unescaped.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def test_module_doctests_pass() -> None:
    result = doctest.testmod(redact)
    assert result.attempted >= 6
    assert result.failed == 0


# -- redact_url: every credential form redis-py and HTTP URLs accept ------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@h/p?q=1", "http://user:***@h/p?q=1"),
        ("https://user:s3cret@h:8443", "https://user:***@h:8443"),
        ("http://user@h/", "http://user@h/"),
        ("http://u:s3c@ret@h/", "http://u:***@h/"),
        ("//user:s3cret@h/p", "//user:***@h/p"),
        ("redis://user:s3cret@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("redis://:s3cret@cache/0", "redis://:***@cache/0"),
        ("rediss://default:s3cret@cache:6380", "rediss://default:***@cache:6380"),
        ("redis://cache/0?password=s3cret", "redis://cache/0?password=***"),
        ("redis://cache/0?db=1&password=s3cret&x=y", "redis://cache/0?db=1&password=***&x=y"),
        ("redis://cache?username=bob&password=s3cret", "redis://cache?username=bob&password=***"),
        ("redis://cache?pass%77ord=s3cret", "redis://cache?pass%77ord=***"),
        ("redis://cache?PASSWORD=s3cret", "redis://cache?PASSWORD=***"),
        ("rediss://cache?ssl_password=s3cret", "rediss://cache?ssl_password=***"),
        ("redis://u:s3cret@cache?password=s3cret", "redis://u:***@cache?password=***"),
        ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("http://h/p#?password=kept", "http://h/p#?password=kept"),
        ("http://h/a\x1bb", "http://h/a\\x1bb"),
        (
            "https://b.s3.example/o?X-Amz-Signature=abc&x=1",
            "https://b.s3.example/o?X-Amz-Signature=***&x=1",
        ),
        (
            "https://s.example/o?AWSAccessKeyId=AK&Signature=s",
            "https://s.example/o?AWSAccessKeyId=***&Signature=***",
        ),
        (
            "https://s.example/o?X-Goog-Signature=g&sig=a",
            "https://s.example/o?X-Goog-Signature=***&sig=***",
        ),
        (
            "https://s.example/cb?access_token=t&state=1",
            "https://s.example/cb?access_token=***&state=1",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(url, quoted=True) == repr(shown.replace("\\x1b", "\x1b"))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@h/p?q=1", "http://REDACTED:REDACTED@h/p?q=1"),
        ("http://user@h/p", "http://REDACTED:REDACTED@h/p"),
        (
            "https://h/o?Signature=s&AWSAccessKeyId=a",
            "https://h/o?Signature=REDACTED&AWSAccessKeyId=REDACTED",
        ),
        ("https://h/o?x=1", "https://h/o?x=1"),
        ("http://h/a\x1bb", "http://h/a\\x1bb"),
    ],
)
def test_telemetry_url(url: str, shown: str) -> None:
    assert telemetry_url(url) == shown


def test_redact_url_takes_a_yarl_url() -> None:
    url = yarl.URL(f"http://us%20er:{SECRET}@h/?password={SECRET}")
    assert redact_url(url) == "http://us%20er:***@h/?password=***"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Not Found", "Not Found"),
        ("tab\tand space", "tab\\tand space"),
        ("esc\x1b[2J", "esc\\x1b[2J"),
        ("nel\x85 csi\x9b", "nel\\x85 csi\\x9b"),
        ("del\x7f nul\x00", "del\\x7f nul\\x00"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("rlo\u202eoverride", "rlo\\u202eoverride"),
        ("café ü", "café ü"),
    ],
)
def test_safe_text(text: str, shown: str) -> None:
    assert safe_text(text) == shown
    assert safe_text(shown) == shown


# -- no password in messages, reprs or warnings ---------------------------------------------


def userinfo_url(port: int, path: str = "/p") -> str:
    return f"http://user:{SECRET}@127.0.0.1:{port}{path}"


def assert_hidden(text: str) -> None:
    assert SECRET not in text, text
    assert "user:***@127.0.0.1" in text, text


async def test_http_status_error_and_request_repr_hide_the_password() -> None:
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(replies=[reply]) as srv, Client(timeout=TIMEOUT) as client:
        r = await client.get(userinfo_url(srv.port))
        with pytest.raises(HTTPStatusError) as info:
            r.raise_for_status()
        assert_hidden(str(info.value))
        assert r.request is not None
        assert_hidden(repr(r.request))


async def test_too_many_redirects_hides_the_password() -> None:
    loop = b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(replies=[loop] * 3) as srv:
        async with Client(timeout=TIMEOUT, max_redirects=1) as client:
            with pytest.raises(TooManyRedirects) as info:
                await client.get(userinfo_url(srv.port))
        assert_hidden(str(info.value))


async def test_total_timeout_hides_the_password() -> None:
    never = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await never.wait()  # released when the server closes

    async with RawServer(silent) as srv, Client() as client:
        with pytest.raises(TotalTimeout) as info:
            await client.get(userinfo_url(srv.port), timeout=Timeout(5, total=0.05))
        assert_hidden(str(info.value))


async def test_a_streamed_body_timing_out_hides_the_password() -> None:
    never = asyncio.Event()

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await never.wait()

    async with RawServer(half) as srv, Client() as client:
        url = userinfo_url(srv.port)
        async with client.stream("GET", url, timeout=Timeout(5, total=0.05)) as r:
            with pytest.raises(TotalTimeout) as info:
                await r.read()
        assert_hidden(str(info.value))


async def test_client_closed_while_reading_hides_the_password() -> None:
    never = asyncio.Event()

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await never.wait()

    async with RawServer(half) as srv:
        client = Client(timeout=TIMEOUT)
        async with client.stream("GET", userinfo_url(srv.port)) as r:
            await client.aclose()
            with pytest.raises(ClientClosed) as info:
                await r.read()
        assert_hidden(str(info.value))
        with pytest.raises(ClientClosed) as info:
            await client.get(userinfo_url(srv.port))
        assert_hidden(str(info.value))


async def test_invalid_urls_hide_the_password() -> None:
    async with Client(timeout=TIMEOUT) as client:
        for url in (userinfo_url(0), userinfo_url(1, "/a b"), f"ftp://user:{SECRET}@127.0.0.1/"):
            with pytest.raises(InvalidURL) as info:
                await client.get(url)
            assert_hidden(str(info.value))


async def test_an_unclosed_streamed_response_warning_hides_the_password() -> None:
    async with RawServer(replies=[OK]) as srv, Client(timeout=TIMEOUT) as client:
        response = await client.stream("GET", userinfo_url(srv.port)).__aenter__()
        with pytest.warns(glasspool.UnclosedResponseWarning) as caught:
            del response
            gc.collect()
        assert_hidden(str(caught[0].message))


async def test_a_redirect_error_hides_passwords_of_both_urls() -> None:
    bad = f"ftp://other:{SECRET}@127.0.0.1/"
    reply = f"HTTP/1.1 302 Found\r\nLocation: {bad}\r\nContent-Length: 0\r\n\r\n".encode()
    async with RawServer(replies=[reply]) as srv, Client(timeout=TIMEOUT) as client:
        with pytest.raises(InvalidURL) as info:
            await client.get(userinfo_url(srv.port))
        assert_hidden(str(info.value))
        assert "other:***@" in str(info.value)


# -- server-chosen control characters are escaped --------------------------------------------


async def test_a_reason_phrase_cannot_inject_control_characters() -> None:
    reply = b"HTTP/1.1 404 Not\x85Found\x9b2J\xa0\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(replies=[reply]) as srv, Client(timeout=TIMEOUT) as client:
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.reason_phrase == "Not\x85Found\x9b2J\xa0"  # the data itself is kept
        with pytest.raises(HTTPStatusError) as info:
            r.raise_for_status()
        message = str(info.value)
        assert not CONTROLS.search(message), message
        assert "404 Not\\x85Found\\x9b2J\\xa0 for GET" in message
        assert repr(r) == "<Response [404 Not\\x85Found\\x9b2J\\xa0]>"


@pytest.mark.parametrize("reason", ["a\u2028b", "a\u2029b", "a\x1b[31mb", "a\rb\nc", "a\u202eb"])
def test_raise_for_status_escapes_any_reason(reason: str) -> None:
    r = Response(500, reason=reason, url="http://h/")
    with pytest.raises(HTTPStatusError) as info:
        r.raise_for_status()
    assert not CONTROLS.search(str(info.value))
    assert "\u202e" not in str(info.value) and "\u202e" not in repr(r)
    assert safe_text(reason) in str(info.value)


@pytest.mark.parametrize(
    "error", [ProtocolError, InvalidURL, TotalTimeout, GlasspoolError, ClientClosed]
)
def test_no_glasspool_error_message_holds_a_control_character(
    error: type[GlasspoolError],
) -> None:
    """The backstop: whatever text a message was built from, it reaches users escaped."""
    assert str(error("server said \x1b[2J\x85\u2028")) == "server said \\x1b[2J\\x85\\u2028"


# -- Redis: server-chosen error text ---------------------------------------------------------


async def test_a_redis_error_text_cannot_inject_control_characters() -> None:
    """A fake Redis on loopback answers every command with an error full of controls."""

    async def hostile_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line.startswith(b"*"):  # a command: an array of bulk strings
                for _ in range(int(line[1:]) * 2):
                    await reader.readline()
                writer.write(b"-ERR boom\x1b[2J\x85\xe2\x80\xa8\r\n")

    async with RawServer(hostile_redis) as srv:
        limits = glasspool.RedisLimits(f"redis://127.0.0.1:{srv.port}/0", limit_per_host=1)
        try:
            with pytest.raises(glasspool.SharedLimitsUnavailable) as info:
                await limits.ping()
        finally:
            await limits.aclose()
        assert "boom" in str(info.value)
        assert not CONTROLS.search(str(info.value)), str(info.value)
