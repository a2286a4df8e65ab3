"""The hot-path shortcuts keep every rule: lazy read timer, header-block cache, URL cache.

Each shortcut here trades work per request for state kept between requests; these tests
prove that the state never lets a changed input through unchecked and never changes when
a timeout fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import glasspool
from glasspool._connect import open_connection
from glasspool._exceptions import InvalidRequest, ReadTimeout
from glasspool._headers import Headers
from glasspool._http11 import HTTP11Connection, ReceiveBuffer
from glasspool._http11.framing import ResponseReader, _keepalive_timeout
from glasspool._http11.request_head import build_request_head, request_target
from glasspool._pool.key import PoolKey
from glasspool._pool.state import Close, PoolState, Waiter, WaiterState
from glasspool._urls import parse_url
from tests.rawserver import RawServer, read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Scripted:
    """A server whose replies the test releases one at a time through a queue."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.requests = 0

    async def handler(self, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            self.requests += 1
            w.write(await self.replies.get())
            await w.drain()


@contextlib.asynccontextmanager
async def scripted() -> AsyncIterator[tuple[Scripted, HTTP11Connection]]:
    """A :class:`Scripted` server and one open connection to it."""
    script = Scripted()
    async with RawServer(script.handler) as srv:
        conn = await open_connection(srv.key(), ssl_context=None, connect_timeout=5)
        try:
            yield script, conn
        finally:
            conn.close()


async def exchange(conn: HTTP11Connection, read_timeout: float) -> bytes:
    """Send one GET and read the whole response body."""
    await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
    await conn.receive_head(method="GET", read_timeout=read_timeout)
    body = b""
    while chunk := await conn.receive_body(read_timeout=read_timeout):
        body += chunk
    return body


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[object]:
    """Record each call of ``obj.name`` (still calling through) in the returned list."""
    calls: list[object] = []
    real: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


# -- the lazy read timer ---------------------------------------------------------------------


async def test_many_reads_with_one_timeout_arm_at_most_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with scripted() as (script, conn):
        calls = count_calls(monkeypatch, asyncio.get_running_loop(), "call_at")
        for _ in range(30):
            await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
            waiting = asyncio.ensure_future(conn.receive_head(method="GET", read_timeout=30))
            await asyncio.sleep(0)  # the reader parks before the reply is released
            script.replies.put_nowait(OK)
            await waiting
            assert await conn.receive_body(read_timeout=30) == b"ok"
            assert await conn.receive_body(read_timeout=30) == b""
        assert script.requests == 30
        assert len(calls) == 1, f"{len(calls)} timers armed for 30 reads"


async def test_a_shorter_timeout_after_a_longer_one_still_fires_on_time() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(OK)
        assert await exchange(conn, read_timeout=60) == b"ok"  # a timer 60 s out remains
        await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout, match=r"response head: no data from .* for 0\.05s"):
            await conn.receive_head(method="GET", read_timeout=0.05)
        assert loop.time() - started < 5, "the 60 s timer of the earlier read was used"
        assert not conn.is_reusable()


async def test_an_early_stale_timer_re_arms_instead_of_failing_the_read() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(OK)
        assert await exchange(conn, read_timeout=0.05) == b"ok"  # its timer is still armed
        await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
        waiting = asyncio.ensure_future(conn.receive_head(method="GET", read_timeout=30))
        await asyncio.sleep(0.3)  # time under test: the stale 0.05 s timer fires meanwhile
        assert not waiting.done(), waiting
        script.replies.put_nowait(OK)
        head = await waiting
        assert head.status == 200
        assert await conn.receive_body(read_timeout=30) == b"ok"


async def test_closing_the_connection_cancels_its_read_timer() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(OK)
        assert await exchange(conn, read_timeout=60) == b"ok"
        timer = conn._read_timer
        assert timer is not None and not timer.cancelled()
        conn.close()
        assert timer.cancelled()


# -- fields taken from the whole head, not from a callback per field --------------------------


class CallbackFields:
    """The oracle: reason and fields as llhttp's callbacks report them (the former code)."""

    def __init__(self) -> None:
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.special: list[tuple[str, bytes]] = []

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        value = value.rstrip(b" \t")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if name.lower() in (b"content-length", b"transfer-encoding", b"connection", b"keep-alive"):
            self.special.append((name.lower().decode(), value))


def special_state(special: list[tuple[str, bytes]]) -> tuple[object, ...]:
    """What the framing code derives from the special fields (the former on_header rules)."""
    cl, te, te_count, close, keep, hint = None, None, 0, False, False, None
    for name, value in special:
        if name == "content-length" and value.isdigit():
            cl = int(value)
        elif name == "transfer-encoding":
            te, te_count = value, te_count + 1
        elif name == "connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            close, keep = close or b"close" in tokens, keep or b"keep-alive" in tokens
        elif name == "keep-alive":
            hint = _keepalive_timeout(value)
    return cl, te, te_count, close, keep, hint


def fields_of(reader: ResponseReader, head: bytes) -> tuple[object, ...]:
    reader._reset_head_state()
    reader._read_fields(head)
    special = (reader._cl, reader._te, reader._te_count, reader._conn_close)
    return reader._reason, reader._headers, (*special, reader._conn_keep_alive, reader._ka_timeout)


def callback_fields(head: bytes) -> tuple[object, ...] | None:
    """The oracle's view of ``head``, or None when llhttp refuses it."""
    oracle = CallbackFields()
    try:
        httptools.HttpResponseParser(oracle).feed_data(head)
    except httptools.HttpParserError:
        return None
    return oracle.reason, oracle.headers, special_state(oracle.special)


TRICKY_HEADS = [
    b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n",
    b"HTTP/1.1 200\r\nServer:nginx\r\n\r\n",
    b"HTTP/1.1 200 \r\nX-Empty:\r\nX-Blank: \t \r\n\r\n",
    b"HTTP/1.1 404  Not  Found \r\nX: \t a : b \t\r\nX: c\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nCONNECTION: Keep-Alive\r\nKeep-Alive: timeout=5, max=9\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0012\r\nconnection: x, close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX-Latin: caf\xe9 \xff\r\n\r\n",
]


@pytest.mark.parametrize("head", TRICKY_HEADS)
def test_fields_match_what_llhttp_reports(head: bytes) -> None:
    expected = callback_fields(head)
    assert expected is not None, "llhttp refused a head this test expects it to accept"
    assert fields_of(ResponseReader(), head) == expected


NAMES = st.one_of(
    st.sampled_from(
        ["Content-Length", "transfer-encoding", "Connection", "KEEP-ALIVE", "Server", "X-A"]
    ),
    st.text("!#$%&'*+-.^_`|~09AZaz :\t(\x80", min_size=0, max_size=12),
)
VALUES = st.one_of(
    st.sampled_from(["12", "0", "chunked", "close", "keep-alive", "timeout=3", "a, close"]),
    st.text(" \t,;=:09AZaz\x7f\x80\xa0\xe9\xff\r", max_size=16),
)
OWS = st.text(" \t", max_size=3)


@settings(max_examples=300, deadline=None)
@given(
    reason=st.text(" \tOKaz\x80\xe9", max_size=8),
    fields=st.lists(st.tuples(NAMES, OWS, VALUES, OWS), max_size=8),
)
def test_fields_match_llhttp_for_any_head_it_accepts(
    reason: str, fields: list[tuple[str, str, str, str]]
) -> None:
    lines = "".join(f"{name}:{pre}{value}{post}\r\n" for name, pre, value, post in fields)
    head = f"HTTP/1.1 200 {reason}\r\n{lines}\r\n".encode("latin-1")
    assume(b"\n " not in head and b"\n\t" not in head)  # obs-fold: unfolded before llhttp
    expected = callback_fields(head)
    assume(expected is not None)
    assert fields_of(READER, head) == expected


READER = ResponseReader()


# -- the validated header block cached on a Headers ------------------------------------------

URL = parse_url("http://h:8080/p?q=1")


def head_of(headers: Headers, method: str = "POST", body_length: int | None = 3) -> bytes:
    return build_request_head(method, URL, headers, body_length=body_length, chunked=False)


def fresh(headers: Headers) -> Headers:
    """An equal Headers that has never been serialised (no cached block)."""
    return Headers(headers.items())


MUTATIONS: list[tuple[str, Callable[[Headers], object]]] = [
    ("setitem", lambda h: h.__setitem__("X-A", "changed")),
    ("setitem new", lambda h: h.__setitem__("X-New", "v")),
    ("add", lambda h: h.add("X-A", "second")),
    ("setdefault", lambda h: h.setdefault("X-Other", "v")),
    ("delitem", lambda h: h.__delitem__("X-A")),
    ("discard", lambda h: h.discard("Accept")),
    ("update", lambda h: h.update({"Accept": "text/html", "X-B": "b"})),
]


@pytest.mark.parametrize(("what", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_mutated_headers_is_serialised_again(
    what: str, mutate: Callable[[Headers], object]
) -> None:
    headers = Headers([("Accept", "*/*"), ("X-A", "1")])
    before = head_of(headers)
    assert head_of(headers) is not before and head_of(headers) == before  # from the cache
    mutate(headers)
    after = head_of(headers)
    assert after == head_of(fresh(headers)), what
    assert after != before, what


BAD_MUTATIONS: list[tuple[str, Callable[[Headers], object], str]] = [
    ("CRLF value", lambda h: h.__setitem__("X-A", "v\r\nInjected: 1"), "forbidden character"),
    ("bad name", lambda h: h.add("Bad Name", "v"), "not an RFC 9110 token"),
    ("second host", lambda h: h.update([("Host", "a"), ("host", "b")]), "more than once"),
    ("length mismatch", lambda h: h.__setitem__("Content-Length", "9"), "says 9 bytes"),
    ("TE with length", lambda h: h.add("Transfer-Encoding", "chunked"), "Transfer-Encoding"),
]


@pytest.mark.parametrize(
    ("what", "mutate", "message"), BAD_MUTATIONS, ids=[m[0] for m in BAD_MUTATIONS]
)
def test_a_mutation_that_breaks_the_rules_is_refused(
    what: str, mutate: Callable[[Headers], object], message: str
) -> None:
    headers = Headers([("Accept", "*/*"), ("X-A", "1")])
    head_of(headers)  # validated and cached
    mutate(headers)
    with pytest.raises(InvalidRequest, match=message):
        head_of(headers)
    with pytest.raises(InvalidRequest, match=message):
        head_of(headers)  # a failed validation is never cached


def test_the_cached_block_still_gets_a_per_request_host_and_framing() -> None:
    headers = Headers([("Accept", "*/*")])
    post = head_of(headers, "POST", 3)
    get = build_request_head(
        "GET", parse_url("http://other/x"), headers, body_length=None, chunked=False
    )
    assert (
        post == b"POST /p?q=1 HTTP/1.1\r\nHost: h:8080\r\nAccept: */*\r\nContent-Length: 3\r\n\r\n"
    )
    assert get == b"GET /x HTTP/1.1\r\nHost: other\r\nAccept: */*\r\n\r\n"
    with pytest.raises(InvalidRequest, match="method"):
        build_request_head("G T", URL, headers, body_length=None, chunked=False)


async def test_client_headers_changed_between_requests_are_sent_and_checked() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(replies=[ok, ok]) as srv, glasspool.Client() as client:
        url = f"http://127.0.0.1:{srv.port}/"
        await client.get(url)
        client.headers["X-Token"] = "two"
        await client.get(url)
        client.headers["X-Token"] = "three\r\nInjected: 1"
        with pytest.raises(InvalidRequest, match="X-Token"):
            await client.get(url)
    assert b"X-Token" not in srv.requests[0]
    assert b"\r\nX-Token: two\r\n" in srv.requests[1]
    assert len(srv.requests) == 2, "the refused request reached the server"


# -- parsed URLs remembered per client ---------------------------------------------------------


def test_a_repeated_url_string_is_parsed_once_and_gives_the_same_key() -> None:
    client = glasspool.Client()
    first = client._target("http://Example.org:8080/a?b=1", None)
    again = client._target("http://Example.org:8080/a?b=1", None)
    assert again[0] is first[0] and again[1] is first[1]
    assert str(first[1].key) == "http://example.org:8080"
    assert first[1].target == request_target(first[0])
    other = client._target("http://example.org:8081/a?b=1", None)
    assert other[1].key != first[1].key
    client._pool._close_now()


def test_a_url_is_resolved_again_when_base_url_changes() -> None:
    client = glasspool.Client(base_url="http://a.example/api")
    url, route = client._target("/users", None)
    assert str(url) == "http://a.example/api/users" and route.key.host == "a.example"
    client.base_url = parse_url("https://b.example/v2")
    url, route = client._target("/users", None)
    assert str(url) == "https://b.example/v2/users" and route.key.host == "b.example"
    assert route.key.port == 443
    assert route.target is not None and route.target.host_line == b"Host: b.example\r\n"
    client._pool._close_now()


@pytest.mark.parametrize(
    "bad", ["http://h/a b", "ftp://h/x", "http:///x", "http://h:0/", "http://h/\r\nX: y"]
)
def test_an_invalid_url_is_refused_every_time_and_never_remembered(bad: str) -> None:
    client = glasspool.Client()
    for _ in range(2):
        with pytest.raises(glasspool.InvalidURL):
            client._target(bad, None)
    assert bad not in client._urls
    client._pool._close_now()


def test_params_and_url_objects_bypass_the_cache() -> None:
    client = glasspool.Client()
    url, _ = client._target("http://h/x", {"q": "1"})
    assert str(url) == "http://h/x?q=1"
    plain, _ = client._target("http://h/x", None)
    assert str(plain) == "http://h/x"
    client._target(parse_url("http://h/y"), None)
    assert list(client._urls) == ["http://h/x"]
    client._pool._close_now()


def test_the_url_cache_is_bounded() -> None:
    from glasspool.client import URL_CACHE_SIZE

    client = glasspool.Client()
    for i in range(URL_CACHE_SIZE * 2 + 5):
        url, _ = client._target(f"http://h/{i}", None)
        assert str(url) == f"http://h/{i}"
        assert len(client._urls) <= URL_CACHE_SIZE
    client._pool._close_now()


# -- the idle-expiry heap keeps one entry per connection, not one per request -----------------


def state_with_conns(count: int, **kw: Any) -> tuple[PoolState, list[Waiter]]:
    """A PoolState with ``count`` open connections to one key, all in use at time 0."""
    pool = PoolState(limit=count, **kw)
    key = PoolKey("http", "h", 80)
    waiters = []
    for _ in range(count):
        waiter, _ = pool.request(key, 0.0)
        pool.connected(waiter, 0.0)
        waiters.append(waiter)
    return pool, waiters


def test_requests_on_reused_connections_do_not_grow_the_expiry_heap() -> None:
    pool, waiters = state_with_conns(4, keepalive_expiry=15.0)
    key = waiters[0].key
    for waiter in waiters:
        pool.release(waiter, 0.0)
    now = 0.0
    for _ in range(5000):
        now += 0.001
        waiter, actions = pool.request(key, now)
        assert waiter.state is WaiterState.ACTIVE and not actions
        pool.release(waiter, now)
    assert len(pool._expiry) <= 4, f"{len(pool._expiry)} heap entries for 4 connections"
    pool._check_invariants()


def test_an_early_entry_moves_to_the_expiry_in_force() -> None:
    pool, (w,) = state_with_conns(1, keepalive_expiry=10.0)
    pool.release(w, 0.0)  # entry at 10
    w2, _ = pool.request(w.key, 5.0)
    pool.release(w2, 5.0)  # expires at 15; the entry at 10 stays
    assert pool.next_expiry() == 15.0
    assert pool.expire(14.9) == [] and pool.idle == 1
    closed = pool.expire(15.0)
    assert [type(a) for a in closed] == [Close] and pool.idle == 0
    assert pool.next_expiry() is None and not pool._expiry


def test_an_early_entry_that_fires_re_arms_instead_of_closing() -> None:
    pool, (w,) = state_with_conns(1, keepalive_expiry=10.0)
    pool.release(w, 0.0)
    w2, _ = pool.request(w.key, 8.0)
    pool.release(w2, 8.0)  # expires at 18
    assert pool.expire(12.0) == [] and pool.idle == 1  # the entry at 10 came up: moved
    pool._check_invariants()
    assert pool.next_expiry() == 18.0


def test_a_shorter_server_hint_on_reuse_still_expires_on_time() -> None:
    pool, (w,) = state_with_conns(1, keepalive_expiry=10.0)
    pool.release(w, 0.0)  # entry at 10
    w2, _ = pool.request(w.key, 1.0)
    pool.release(w2, 1.0, keepalive_hint_s=2.0)  # now expires at 3, before the entry
    assert pool.next_expiry() == 3.0
    assert len(pool.expire(3.0)) == 1 and pool.idle == 0


def test_an_idle_connection_with_no_expiry_any_more_is_never_closed_by_an_old_entry() -> None:
    pool, (w,) = state_with_conns(1, keepalive_expiry=None)
    pool.release(w, 0.0, keepalive_hint_s=2.0)  # entry at 2
    w2, _ = pool.request(w.key, 1.0)
    pool.release(w2, 1.0)  # no hint this time: no expiry at all
    assert pool.expire(100.0) == [] and pool.idle == 1
    assert pool.next_expiry() is None
    pool._check_invariants()


# -- the checked request target kept with a remembered URL -------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://h/", "http://h:80/a?b=c", "https://h:8443/x/y", "http://[::1]:8080/p", "http://H/%20"],
)
@pytest.mark.parametrize("host_header", [None, "override.example"])
def test_a_kept_target_gives_the_same_head(url: str, host_header: str | None) -> None:
    parsed = parse_url(url)
    headers = Headers([("Accept", "*/*")] + ([("Host", host_header)] if host_header else []))
    kept = request_target(parsed)
    made = build_request_head("PUT", parsed, headers, body_length=2, chunked=False)
    again = build_request_head("PUT", parsed, headers, body_length=2, chunked=False, target=kept)
    assert again == made


def test_a_kept_target_does_not_skip_the_method_check() -> None:
    parsed = parse_url("http://h/")
    kept = request_target(parsed)
    for method in ("GET\r\nX: y", "G T", "", "GÉT"):
        with pytest.raises(InvalidRequest, match="not an RFC 9110 token"):
            build_request_head(
                method, parsed, Headers(), body_length=None, chunked=False, target=kept
            )
    custom = build_request_head("PURGE", parsed, Headers(), body_length=None, chunked=False)
    assert custom.startswith(b"PURGE / HTTP/1.1\r\nHost: h\r\n")


def test_request_target_refuses_what_build_request_head_refuses() -> None:
    import yarl

    for bad in (yarl.URL("/relative"), yarl.URL("http://h/a b", encoded=True)):
        with pytest.raises(InvalidRequest):
            request_target(bad)
        with pytest.raises(InvalidRequest):
            build_request_head("GET", bad, Headers(), body_length=None, chunked=False)


async def test_elapsed_is_measured_and_made_a_timedelta_when_read() -> None:
    import datetime

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer(replies=[ok]) as srv, glasspool.Client() as client:
        response = await client.get(f"http://127.0.0.1:{srv.port}/")
    assert isinstance(response.elapsed, datetime.timedelta)
    assert datetime.timedelta(0) < response.elapsed < datetime.timedelta(seconds=30)
    assert response.elapsed is response.elapsed
    response.elapsed = datetime.timedelta(milliseconds=5)
    assert response.elapsed == datetime.timedelta(milliseconds=5)


async def test_an_idle_connection_keeps_no_fields_of_its_last_response() -> None:
    async with scripted() as (script, conn):
        script.replies.put_nowait(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 500 + b"\r\n" + OK[17:])
        await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
        head = await conn.receive_head(method="GET", read_timeout=5)
        assert head.headers[0] == ("X-Big", "x" * 500)
        assert await conn.receive_body(read_timeout=5) == b"ok"
        assert conn._reader.head is head  # still there until the end is handed out
        assert await conn.receive_body(read_timeout=5) == b""
        assert conn._head is None and conn._reader.head is None
        assert conn._reader._headers == []
        assert head.headers[0] == ("X-Big", "x" * 500)  # the caller's copy is untouched
        assert conn.is_reusable()


# -- one read buffer shared by the connections of a client -------------------------------------


class NullTransport(asyncio.Transport):
    """Swallows writes; the test delivers the response bytes itself."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 40\r\n\r\n" + bytes(range(40)),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A:  b  \r\n\r\n"
    b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nTrailer: x\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-Empty:\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc",
]


async def exchange_by_reads(
    conns: list[HTTP11Connection], reads: list[tuple[int, bytes]], shared: ReceiveBuffer
) -> list[tuple[object, bytes]]:
    """Deliver ``reads`` (connection index, bytes) through the shared buffer, scribbling
    over it after each one; return each connection's head and body."""
    for conn in conns:
        await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
    for index, piece in reads:
        view = conns[index].get_buffer(-1)
        assert view.obj is shared.data  # every connection reads into the one buffer
        view[: len(piece)] = piece
        conns[index].buffer_updated(len(piece))
        scribble = b"\r\n\r\n0\r\n\n\xff" * len(shared.data)  # ends of heads, lines, chunks
        shared.data[:] = scribble[: len(shared.data)]  # as the next read would, and more
    results: list[tuple[object, bytes]] = []
    for conn in conns:
        head = await conn.receive_head(method="GET", read_timeout=1)
        body = b""
        while chunk := await conn.receive_body(read_timeout=1):
            body += chunk
        results.append(((head.status, head.reason, head.headers), body))
        assert conn.is_reusable()
    return results


async def whole(response: bytes) -> tuple[object, bytes]:
    """The head and body of ``response`` fed in one piece through data_received."""
    conn = HTTP11Connection(PoolKey("http", "h", 80))
    conn.connection_made(NullTransport())
    await conn.send_request(REQUEST, None, chunked=False, write_timeout=5)
    conn.data_received(response)
    head = await conn.receive_head(method="GET", read_timeout=1)
    body = b""
    while chunk := await conn.receive_body(read_timeout=1):
        body += chunk
    return (head.status, head.reason, head.headers), body


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_interleaved_reads_through_a_shared_buffer_give_exact_heads_and_bodies(
    data: st.DataObject,
) -> None:
    pending = []
    for index, response in enumerate(RESPONSES):
        cuts = sorted(data.draw(st.sets(st.integers(1, len(response) - 1), max_size=6)))
        bounds = [0, *cuts, len(response)]
        pending.append([(index, response[a:b]) for a, b in itertools.pairwise(bounds)])
    reads = []
    while any(pending):  # a random interleaving that keeps each connection's order
        choice = data.draw(st.sampled_from([i for i, left in enumerate(pending) if left]))
        reads.append(pending[choice].pop(0))

    async def run() -> tuple[list[tuple[object, bytes]], list[tuple[object, bytes]]]:
        shared = ReceiveBuffer(256)
        conns = []
        for _ in RESPONSES:
            conn = HTTP11Connection(PoolKey("http", "h", 80), recv_buffer=shared)
            conn.connection_made(NullTransport())
            conns.append(conn)
        got = await exchange_by_reads(conns, reads, shared)
        return got, [await whole(r) for r in RESPONSES]

    got, expected = asyncio.run(run())
    assert got == expected
    assert got[0][1] == bytes(range(40)) and got[1][1] == b"hello" + b"z" * 26


async def test_a_client_reads_every_connection_into_one_buffer() -> None:
    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(50):  # many small writes: many reads, interleaved across sockets
                w.write(b"%x\r\n%s\r\n" % (len(str(i)), str(i).encode()))
                await w.drain()
            w.write(b"0\r\n\r\n")

    expected = "".join(str(i) for i in range(50)).encode()
    async with RawServer(handler) as srv, glasspool.Client() as client:
        url = f"http://127.0.0.1:{srv.port}/"
        bodies = await asyncio.gather(*(client.get(url) for _ in range(8)))
        assert [r.content for r in bodies] == [expected] * 8
        assert client._recv_buffer is not None
        assert srv.connections == 8
