"""glasspool._http11.framing: the response reader, fed bytes directly (no sockets, no loop).

Every framing rule of ``docs/transport-notes.md`` has a case here (``INVALID``, ``CAPS``
and the named tests). Each rejected input is fed twice, in one piece and one byte at a
time, and the error must name the state the reader was in.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glasspool._exceptions import (
    IncompleteBody,
    ProtocolError,
    ReadError,
    ResponseTooLarge,
    ServerDisconnected,
)
from glasspool._http11.framing import (
    END,
    NEED_DATA,
    PAUSED,
    Data,
    End,
    Event,
    ParserLimits,
    Phase,
    ReaderState,
    ResponseHead,
    ResponseReader,
    Sentinel,
)

ORIGIN = "http://example.test:80"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
H = b"HTTP/1.1 200 OK\r\n"
SMALL = ParserLimits(
    max_line_bytes=64, max_header_bytes=256, max_headers=10, max_chunk_ext_bytes=32
)


def reader_for(method: str = "GET", limits: ParserLimits | None = None) -> ResponseReader:
    """A reader that expects the response to a ``method`` request."""
    reader = ResponseReader(ORIGIN, limits or ParserLimits())
    reader.start_response(head_request=method == "HEAD")
    return reader


def pieces(data: bytes, size: int | None) -> Iterable[bytes]:
    """``data`` whole (``size`` None) or in pieces of ``size`` bytes."""
    if size is None:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


def events(reader: ResponseReader) -> list[Event]:
    """Every event the reader has ready, up to and including ``End``."""
    out: list[Event] = []
    while not isinstance(event := reader.next_event(), Sentinel):
        out.append(event)
        if isinstance(event, End):
            break
    return out


def read(
    data: bytes, method: str = "GET", *, eof: bool = False, split: int | None = None
) -> tuple[ResponseHead, bytes, ResponseReader]:
    """Feed one response (then the end of the stream if ``eof``); return head, body, reader."""
    reader = reader_for(method)
    for piece in pieces(data, split):
        reader.receive_data(piece)
    if eof:
        reader.receive_eof()
    got = events(reader)
    assert isinstance(got[0], ResponseHead) and got[-1] == End(), got
    assert all(isinstance(e, Data) for e in got[1:-1])
    return got[0], b"".join(e.data for e in got[1:-1] if isinstance(e, Data)), reader


# -- valid responses -------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1, 7], ids=["whole", "bytes", "sevens"])
def test_content_length_response_is_parsed_exactly(split: int | None) -> None:
    reply = b"HTTP/1.1 201 Created Here\r\nX-A: 1\r\nx-b:  two  \r\nContent-Length: 5\r\n\r\nhello"
    head, body, reader = read(reply, split=split)
    assert head == ResponseHead(
        201, "Created Here", "HTTP/1.1", [("X-A", "1"), ("x-b", "two"), ("Content-Length", "5")]
    )
    assert body == b"hello"
    assert reader.reusable() and reader.keepalive_hint_s is None
    assert (reader.state, reader.next_event()) == (ReaderState.IDLE, PAUSED)


def test_events_come_in_order_head_data_end() -> None:
    reader = reader_for()
    assert reader.next_event() is NEED_DATA
    reader.receive_data(OK[:-2])
    assert reader.next_event() == ResponseHead(200, "OK", "HTTP/1.1", [("Content-Length", "5")])
    assert reader.next_event() == Data(b"hel")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(OK[-2:])
    assert [reader.next_event(), reader.next_event()] == [Data(b"lo"), END]
    assert reader.next_event() is PAUSED and reader.head is None


def test_small_pieces_are_joined_and_large_ones_handed_out_as_they_came() -> None:
    reader = reader_for()
    reader.receive_data(CHUNKED)
    small = b"".join(b"3\r\nabc\r\n" for _ in range(4))
    reader.receive_data(small)  # each chunk reaches on_body on its own
    big = b"x" * 40_000
    reader.receive_data(b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n")
    assert isinstance(reader.next_event(), ResponseHead)
    assert reader.buffered == 12 + len(big)
    assert reader.next_event() == Data(b"abc" * 4)  # small ones: one event
    assert reader.next_event() == Data(big)
    assert (reader.buffered, reader.next_event()) == (0, END)


@pytest.mark.parametrize(
    ("fields", "unfolded"),
    [
        (b"X: a\r\n b\r\n", [("X", "a b")]),
        (b"X: a\r\n\tb\r\n", [("X", "a b")]),
        (b"X: a \t\r\n \t b\r\n\t\tc\r\nY: d\r\n", [("X", "a b c"), ("Y", "d")]),
        (b"X:\r\n b\r\n", [("X", "b")]),
        (b"Connection: keep-alive,\r\n close\r\n", [("Connection", "keep-alive, close")]),
    ],
    ids=["space", "tab", "several", "empty first line", "connection"],
)
def test_obs_fold_is_replaced_with_a_space(fields: bytes, unfolded: list[tuple[str, str]]) -> None:
    """RFC 9112 section 5.2: a user agent replaces each obs-fold with SP."""
    head, body, reader = read(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 5\r\n\r\nhello")
    assert head.headers == [*unfolded, ("Content-Length", "5")]
    assert body == b"hello"
    assert reader.reusable() == (b"close" not in fields)


@pytest.mark.parametrize("split", [None, 1], ids=["whole", "bytes"])
def test_chunked_response_with_extensions_and_trailers(split: int | None) -> None:
    reply = CHUNKED + b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    head, body, reader = read(reply, split=split)
    assert head.headers == [("Transfer-Encoding", "chunked")]  # trailers are not headers
    assert body == b"hello world"
    assert reader.reusable()


def test_leading_zeros_and_upper_case_hex_in_chunk_sizes() -> None:
    reply = CHUNKED + b"3;a=b\r\nabc\r\n0000A\r\n0123456789\r\n0\r\nT: 1\r\n\r\n"
    assert read(reply, split=1)[1] == b"abc0123456789"


def test_read_to_close_body_ends_at_eof_and_is_not_reusable() -> None:
    head, body, reader = read(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", eof=True)
    assert (head.status, body, reader.reusable()) == (200, b"until the end", False)


def test_head_response_has_no_body_and_the_next_response_follows() -> None:
    reader = reader_for("HEAD")
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert [type(e) for e in events(reader)] == [ResponseHead, End]
    assert reader.reusable()
    reader.start_response(head_request=False)
    reader.receive_data(OK)
    assert events(reader)[1:] == [Data(b"hello"), END]


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_ignore_content_length(status: int) -> None:
    reader = reader_for()
    reader.receive_data(f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode())
    got = events(reader)
    assert (len(got), got[-1], reader.reusable()) == (2, END, True)
    reader.start_response(head_request=False)
    reader.receive_data(OK)
    assert events(reader)[1:] == [Data(b"hello"), END]


def test_interim_responses_are_skipped() -> None:
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    head, body, reader = read(reply)
    assert (head.status, head.headers, body, reader.reusable()) == (
        200,
        [("Content-Length", "2")],
        b"ok",
        True,
    )


@pytest.mark.parametrize(
    ("reply", "reusable"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Upgrade, CLOSE\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
    ],
)
def test_keep_alive_rules(reply: bytes, reusable: bool) -> None:
    head, body, reader = read(reply)
    assert (body, reader.keep_alive, reader.reusable()) == (b"ok", reusable, reusable)
    assert head.http_version == reply[:8].decode()


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (b"timeout=5, max=100", 5.0),
        (b"max=3, timeout=2.5", 2.5),
        (b"max=3", None),
        (b"timeout=x", None),
        (b"timeout=-1", None),
        (b"timeout=inf", None),
    ],
)
def test_keep_alive_timeout_hint(value: bytes, hint: float | None) -> None:
    reply = b"HTTP/1.1 200 OK\r\nKeep-Alive: " + value + b"\r\nContent-Length: 0\r\n\r\n"
    assert read(reply)[2].keepalive_hint_s == hint


def test_a_keep_alive_hint_lasts_until_another_replaces_it() -> None:
    reader = reader_for()
    reader.receive_data(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n")
    events(reader)
    reader.start_response(head_request=False)
    reader.receive_data(OK)
    events(reader)
    assert reader.keepalive_hint_s == 5.0


@pytest.mark.parametrize("idle", [False, True], ids=["with the end", "after the end"])
def test_bytes_after_the_response_are_unsolicited_and_never_parsed(idle: bool) -> None:
    reader = reader_for()
    reader.receive_data(OK if idle else OK + b"HTTP/1.1 200 OK\r\n")
    assert events(reader)[1:] == [Data(b"hello"), END]
    if idle:
        assert reader.reusable()
        reader.receive_data(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert reader.unsolicited and not reader.reusable()
    assert reader.next_event() is PAUSED


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_response(cuts: list[int]) -> None:
    reply = (
        b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\n"
        + CHUNKED
        + b"5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nT: 1\r\n\r\n"
    )
    reader = reader_for()
    start = 0
    for cut in [*sorted({c % len(reply) for c in cuts}), len(reply)]:
        reader.receive_data(reply[start:cut])
        start = cut
    got = events(reader)
    assert isinstance(got[0], ResponseHead) and got[0].status == 200
    assert b"".join(e.data for e in got if isinstance(e, Data)) == b"hello world"
    assert got[-1] == END and reader.reusable()


# -- where the reader is ------------------------------------------------------------------------


def test_the_state_follows_the_bytes() -> None:
    reader = ResponseReader(ORIGIN)
    seen = [reader.state]
    reader.start_response(head_request=False)
    for data in (
        b"",
        b"HTTP/1.1 200 OK",
        b"\r\nTransfer-Encoding: chunked\r\n",
        b"\r\n",
        b"5\r\nhel",
        b"lo",
        b"\r\n0\r\n",
        b"\r\n",
    ):
        reader.receive_data(data)
        seen.append(reader.state)
    assert [s.name for s in seen] == [
        "IDLE",
        "STATUS_LINE",
        "STATUS_LINE",
        "HEADER_FIELDS",
        "CHUNK_SIZE",
        "CHUNK_DATA",
        "CHUNK_END",
        "TRAILERS",
        "DONE",
    ]
    assert reader.phase is Phase.DONE
    assert events(reader)[1:] == [Data(b"hello"), END]
    assert (reader.state, reader.phase) == (ReaderState.IDLE, Phase.IDLE)


def test_a_content_length_body_is_in_the_body_state() -> None:
    reader = reader_for()
    reader.receive_data(OK[:-1])
    assert (reader.state, reader.phase, reader.length_remaining) == (
        ReaderState.BODY,
        Phase.BODY,
        1,
    )
    assert "in the body" in repr(reader)


# -- rejected responses ----------------------------------------------------------------------

# (id, reply, message pattern, the state the error names)
INVALID = [
    (
        "CL and TE",
        H + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        "Content-Length",
        "the header fields",
    ),
    (
        "TE and CL",
        H + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
        "Content-Length",
        "the header fields",
    ),
    ("CL not a number", H + b"Content-Length: 1x\r\n\r\nhi", "Content-Length", "the header fields"),
    ("CL negative", H + b"Content-Length: -2\r\n\r\nhi", "Content-Length", "the header fields"),
    ("CL list", H + b"Content-Length: 2, 2\r\n\r\nhi", "Content-Length", "the header fields"),
    (
        "CL repeated, differs",
        H + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
        "Duplicate",
        "the header fields",
    ),
    (
        "CL repeated, same",
        H + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        "Duplicate",
        "the header fields",
    ),
    (
        "TE gzip",
        H + b"Transfer-Encoding: gzip\r\n\r\nhi",
        "only a single 'chunked'",
        "the header fields",
    ),
    (
        "TE gzip, chunked",
        H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "'gzip, chunked'",
        "the header fields",
    ),
    (
        "TE chunked twice",
        H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        "single",
        "the header fields",
    ),
    (
        "TE repeated",
        H + b"Transfer-Encoding: chunked\r\n" * 2 + b"\r\n0\r\n\r\n",
        "repeated 2",
        "the header fields",
    ),
    (
        "TE in HTTP/1.0",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "1.0",
        "the header fields",
    ),
    (
        "chunk size not hex",
        CHUNKED + b"zz\r\nhi\r\n0\r\n\r\n",
        "bad chunk size b'zz'",
        "the chunk size line",
    ),
    (
        "chunk size negative",
        CHUNKED + b"-2\r\nhi\r\n0\r\n\r\n",
        "bad chunk size b'-2'",
        "the chunk size line",
    ),
    (
        "chunk size with 0x",
        CHUNKED + b"0x2\r\nhi\r\n0\r\n\r\n",
        "bad chunk size b'0x2'",
        "the chunk size line",
    ),
    (
        "chunk size empty",
        CHUNKED + b"\r\nhi\r\n0\r\n\r\n",
        "bad chunk size b''",
        "the chunk size line",
    ),
    ("chunk size overflow", CHUNKED + b"1" * 17 + b"\r\nhi\r\n", "64 bits", "the chunk size line"),
    ("chunk size bare LF", CHUNKED + b"2\nhi\r\n0\r\n\r\n", "bare LF", "the chunk size line"),
    (
        "chunk data no CRLF",
        CHUNKED + b"2\r\nhiXX0\r\n\r\n",
        "not followed by CRLF",
        "the CRLF after chunk data",
    ),
    (
        "chunk data bare LF",
        CHUNKED + b"2\r\nhi\n0\r\n\r\n",
        "not followed by CRLF",
        "the CRLF after chunk data",
    ),
    (
        "chunk ext invalid",
        CHUNKED + b"2;a b\r\nhi\r\n0\r\n\r\n",
        "chunk extension",
        "the chunk size line",
    ),
    ("trailer bare LF", CHUNKED + b"0\r\nX: 1\n\r\n", "malformed response", "the trailer section"),
    (
        "bare LF status line",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        "bare LF",
        "the status line",
    ),
    ("bare LF header", H + b"Content-Length: 0\n\r\n", "bare LF", "the header fields"),
    ("bare LF everywhere", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF", "the status line"),
    (
        "obs-fold in CL",
        H + b"Content-Length:\r\n 0\r\n\r\n",
        "obs-fold in Content-Length",
        "the header fields",
    ),
    (
        "obs-fold in CL value",
        H + b"Content-Length: 1\r\n\t0\r\n\r\n",
        "obs-fold in Content",
        "the header fields",
    ),
    (
        "obs-fold in TE",
        H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        "obs-fold in Transfer-Encoding",
        "the header fields",
    ),
    (
        "obs-fold after status",
        H + b" X: a\r\nContent-Length: 0\r\n\r\n",
        "status line",
        "the header fields",
    ),
    ("NUL in value", H + b"X: a\0b\r\nContent-Length: 0\r\n\r\n", "NUL", "the header fields"),
    ("NUL in reason", b"HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n", "NUL", "the status line"),
    (
        "CR in value",
        H + b"X: a\rb\r\nContent-Length: 0\r\n\r\n",
        "malformed response",
        "the header fields",
    ),
    (
        "CR in reason",
        b"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
        "malformed response",
        "the status line",
    ),
    (
        "CTL in value",
        H + b"X: a\x01b\r\nContent-Length: 0\r\n\r\n",
        "header value char",
        "the header fields",
    ),
    (
        "space before colon",
        H + b"X : a\r\nContent-Length: 0\r\n\r\n",
        "header token",
        "the header fields",
    ),
    (
        "HTTP/2.0",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "unsupported HTTP version",
        "the status line",
    ),
    (
        "HTTP/0.9",
        b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n",
        "unsupported HTTP version",
        "the status line",
    ),
    (
        "HTTP/1.2",
        b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
        "unsupported HTTP version",
        "the status line",
    ),
    (
        "lowercase http",
        b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.x status line",
        "the status line",
    ),
    ("leading CRLF", b"\r\n" + OK, "HTTP/1.x status line", "the status line"),
    ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "HTTP/1.x status line", "the status line"),
    ("status 600", b"HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n", "600 from", "the status line"),
    ("status 099", b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n", "99 from", "the status line"),
    (
        "status 2 digits",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        "malformed status",
        "the status line",
    ),
    (
        "status 101",
        b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        "101",
        "the status line",
    ),
    (
        "reason CTL",
        b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
        "reason phrase",
        "the status line",
    ),
    (
        "reason DEL",
        b"HTTP/1.1 200 O\x7fK\r\nContent-Length: 0\r\n\r\n",
        "reason phrase",
        "the status line",
    ),
]

# (id, reply, message pattern, the state the error names), with the caps of SMALL
CAPS = [
    (
        "header line",
        H + b"X: " + b"a" * 100 + b"\r\n\r\n",
        "max_line_bytes=64",
        "the header fields",
    ),
    (
        "status line",
        b"HTTP/1.1 200 " + b"a" * 100 + b"\r\n\r\n",
        "max_line_bytes=64",
        "the status line",
    ),
    (
        "status line, no end yet",
        b"HTTP/1.1 200 " + b"a" * 100,
        "max_line_bytes=64",
        "the status line",
    ),
    ("header line, no end yet", H + b"X: " + b"a" * 100, "max_line_bytes=64", "the header fields"),
    (
        "header bytes",
        H + b"X: aaaaaaaa\r\n" * 30 + b"\r\n",
        "max_header_bytes=256",
        "the header fields",
    ),
    (
        "header bytes, no end yet",
        H + b"X: aaaaaaaa\r\n" * 30,
        "max_header_bytes=256",
        "the header fields",
    ),
    (
        "header count",
        H + b"X: a\r\n" * 11 + b"\r\n",
        "11 header lines, more than max_headers=10",
        "the header fields",
    ),
    (
        "1xx heads count",
        b"HTTP/1.1 103 Hints\r\nLink: <aaaaaaaaaaaaaaaaaaaa>\r\n\r\n" * 6 + OK,
        "max_header_bytes=256",
        "the header fields",
    ),
    (
        "1xx header count",
        b"HTTP/1.1 103 Hints\r\n" + b"L: a\r\n" * 11 + b"\r\n" + OK,
        "max_headers=10",
        "the header fields",
    ),
    (
        "1xx line",
        b"HTTP/1.1 103 Hints\r\nLink: " + b"a" * 70 + b"\r\n\r\n" + OK,
        "max_line_bytes",
        "the header fields",
    ),
    (
        "trailer line",
        CHUNKED + b"0\r\nT: " + b"a" * 100 + b"\r\n\r\n",
        "trailer line",
        "the trailer section",
    ),
    (
        "trailer count",
        CHUNKED + b"0\r\n" + b"T: a\r\n" * 11 + b"\r\n",
        "trailer lines",
        "the trailer section",
    ),
    (
        "trailer bytes",
        CHUNKED + b"0\r\n" + (b"T: " + b"a" * 50 + b"\r\n") * 6,
        "trailer section",
        "the trailer section",
    ),
    (
        "chunk extension",
        CHUNKED + b"2;" + b"a" * 40 + b"\r\nhi\r\n0\r\n\r\n",
        "extension of 41",
        "the chunk size line",
    ),
    (
        "chunk size line, no end",
        CHUNKED + b"2;" + b"a" * 200,
        "max_chunk_ext_bytes=32",
        "the chunk size line",
    ),
]


def rejected(
    data: bytes, error: type[Exception], *, limits: ParserLimits | None = None, split: int | None
) -> tuple[Exception, ResponseReader]:
    """Feed ``data`` until the reader rejects it; return the error and the reader."""
    reader = reader_for(limits=limits)
    with pytest.raises(error) as info:
        for piece in pieces(data, split):
            reader.receive_data(piece)
    return info.value, reader


def assert_spent(reader: ResponseReader, err: Exception) -> None:
    """After an error: ERROR for good, the events before it first, then the error again."""
    assert reader.state is ReaderState.ERROR and reader.error is err
    assert not reader.reusable()
    with pytest.raises(type(err)) as again:
        events(reader)
    assert again.value is err
    with pytest.raises(type(err)):
        reader.receive_data(OK)


@pytest.mark.parametrize(
    ("reply", "message", "state"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_responses_raise_protocol_error_naming_the_state(
    reply: bytes, message: str, state: str
) -> None:
    err, reader = rejected(reply, ProtocolError, split=None)
    assert re.search(message, str(err)), str(err)
    assert str(err).endswith(f"(in {state})")
    assert ORIGIN in str(err) or "chunk" in str(err)
    assert_spent(reader, err)


@pytest.mark.parametrize(
    ("reply", "message", "state"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_responses_trickled_name_the_same_state(
    reply: bytes, message: str, state: str
) -> None:
    # llhttp sees a chunk size line before it ends and may refuse it first, in its words
    err, reader = rejected(reply, ProtocolError, split=1)
    assert str(err).endswith(f"(in {state})")
    assert_spent(reader, err)


@pytest.mark.parametrize(
    ("reply", "message", "state"), [c[1:] for c in CAPS], ids=[c[0] for c in CAPS]
)
@pytest.mark.parametrize("split", [None, 1], ids=["whole", "bytes"])
def test_size_caps_raise_response_too_large_naming_the_state(
    reply: bytes, message: str, state: str, split: int | None
) -> None:
    err, reader = rejected(reply, ResponseTooLarge, limits=SMALL, split=split)
    if split is None:  # trickled, a head may pass a cap before it is complete
        assert message in str(err), str(err)
    assert str(err).endswith(f"(in {state})")
    assert_spent(reader, err)


def test_body_bytes_before_an_error_are_handed_out_first() -> None:
    reader = reader_for()
    reader.receive_data(CHUNKED)
    with pytest.raises(ProtocolError, match=r"bad chunk size b'zz'.*\(in the chunk size line\)"):
        reader.receive_data(b"5\r\nhello\r\nzz\r\n")
    assert isinstance(reader.next_event(), ResponseHead)
    assert reader.next_event() == Data(b"hello")
    with pytest.raises(ProtocolError, match="bad chunk size"):
        reader.next_event()


def test_a_head_error_after_a_complete_one_keeps_the_first() -> None:
    """An error in bytes that follow a complete head leaves that head to be handed out."""
    reader = reader_for()
    with pytest.raises(ProtocolError, match=r"\(in the chunk size line\)"):
        reader.receive_data(CHUNKED + b"zz\r\n")
    assert isinstance(reader.next_event(), ResponseHead)
    with pytest.raises(ProtocolError):
        reader.next_event()


# -- the end of the stream -------------------------------------------------------------------


def test_eof_before_any_byte_is_server_disconnected() -> None:
    reader = reader_for()
    with pytest.raises(ServerDisconnected, match=f"^{ORIGIN} closed the connection before any"):
        reader.receive_eof()
    assert reader.state is ReaderState.ERROR


def test_eof_mid_head_counts_the_bytes_and_names_the_cause() -> None:
    reader = reader_for()
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-")
    cause = ConnectionResetError("reset")
    with pytest.raises(ServerDisconnected, match="after 25 bytes of the response head: Conn"):
        reader.receive_eof(cause)
    assert reader.error is not None and reader.error.__cause__ is cause


def test_eof_mid_content_length_body_is_incomplete_with_counts() -> None:
    reader = reader_for()
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(IncompleteBody, match="after 3 of 10 body bytes") as info:
        reader.receive_eof()
    assert (info.value.expected, info.value.received) == (10, 3)
    assert isinstance(reader.next_event(), ResponseHead)
    assert reader.next_event() == Data(b"abc")  # then the error again
    with pytest.raises(IncompleteBody):
        reader.next_event()


def test_eof_mid_chunked_body_is_incomplete_without_expected() -> None:
    reader = reader_for()
    reader.receive_data(CHUNKED + b"4\r\nabcd\r\n6\r\nef")
    with pytest.raises(IncompleteBody, match="after 6 body bytes of a chunked body") as info:
        reader.receive_eof()
    assert (info.value.expected, info.value.received) == (None, 6)


def test_a_failed_connection_mid_body_is_read_error_chained_to_the_cause() -> None:
    reader = reader_for()
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    cause = ConnectionResetError("reset")
    with pytest.raises(ReadError, match="failed after 3 bytes") as info:
        reader.receive_eof(cause)
    assert info.value.__cause__ is cause


@pytest.mark.parametrize("done", [False, True], ids=["idle", "done"])
def test_eof_with_no_response_due_is_nothing(done: bool) -> None:
    reader = reader_for() if done else ResponseReader(ORIGIN)
    if done:
        reader.receive_data(OK)
    reader.receive_eof()
    assert reader.error is None


# -- reading into a buffer of the caller's own ---------------------------------------------------


def test_a_content_length_body_counted_in_place() -> None:
    reader = reader_for()
    reader.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(reader.next_event(), ResponseHead)
    assert (reader.take_queued(), reader.buffered, reader.length_remaining) == ([b"abc"], 0, 7)
    reader.receive_body_in_place(4)
    assert (reader.length_remaining, reader.body_received) == (3, 7)
    with pytest.raises(ValueError, match="4 body bytes, but 3 are due"):
        reader.receive_body_in_place(4)
    reader.receive_body_in_place(3)
    assert reader.phase is Phase.DONE and reader.read_all_nowait() == b""
    assert reader.reusable() and reader.next_event() is PAUSED


def test_read_all_nowait_waits_for_the_end_then_joins() -> None:
    reader = reader_for()
    reader.receive_data(CHUNKED + b"2\r\nab\r\n")
    assert isinstance(reader.next_event(), ResponseHead)
    assert reader.read_all_nowait() is None
    reader.receive_data(b"3\r\ncde\r\n0\r\n\r\n")
    assert reader.read_all_nowait() == b"abcde"
    assert reader.next_event() is PAUSED


def test_a_request_may_not_start_while_the_response_is_unfinished() -> None:
    reader = reader_for()
    reader.receive_data(OK[:-1])
    with pytest.raises(RuntimeError, match="previous response is unfinished"):
        reader.start_response(head_request=False)


def test_limits_must_be_positive_ints() -> None:
    with pytest.raises(ValueError, match=r"ParserLimits\.max_headers must be >= 1, got 0"):
        ParserLimits(max_headers=0)
    with pytest.raises(TypeError, match=r"ParserLimits\.max_line_bytes must be an int, not True"):
        ParserLimits(max_line_bytes=True)


# -- no I/O -----------------------------------------------------------------------------------

# The package's __init__ imports the asyncio shell: empty packages stand in for glasspool and
# glasspool._http11, so only framing.py and what it imports are loaded.
NO_IO_SCRIPT = """
import importlib.util, sys, types
for name in ("glasspool", "glasspool._http11"):
    spec = importlib.util.find_spec(name)
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = package
for name in ("asyncio", "ssl", "socket", "selectors"):
    sys.modules[name] = None  # importing it now raises ImportError
import glasspool._http11.framing as framing
reader = framing.ResponseReader()
reader.start_response(head_request=False)
reader.receive_data(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
print(sorted(m for m in sys.modules if m.startswith("glasspool.")))
"""


def test_the_reader_imports_and_runs_with_asyncio_ssl_and_socket_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_IO_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded: Sequence[str] = ast.literal_eval(result.stdout)
    assert "glasspool._http11.framing" in loaded
    assert not {"glasspool._http11.protocol", "glasspool.client"} & set(loaded)
