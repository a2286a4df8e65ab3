"""Where received bytes are put: the read buffer connections share, and body sinks.

No I/O and no event loop: ``protocol.py`` hands these to the transport (``get_buffer``)
and says how many bytes it wrote into them.

- :class:`ReceiveBuffer`: one per client; every read of every connection lands in it and
  is taken out (copied, or parsed) before the next read.
- :class:`BodySink`: the buffer ``HTTP11Connection.receive_all`` reads the rest of a
  Content-Length body into, so the kernel's copy is the last one. At most
  :data:`SINK_SEGMENT` bytes are allocated ahead of the bytes received.
"""

from __future__ import annotations

import contextlib
import io

__all__ = ["RECV_BUFFER_SIZE", "SINK_MIN", "SINK_SEGMENT", "BodySink", "ReceiveBuffer"]

RECV_BUFFER_SIZE = 256 * 1024
"""Bytes read from the socket at most per read (as asyncio's own reads)."""
OWN_BUFFER_SIZE = 16 * 1024
"""The buffer of a connection given no shared one."""

SINK_SEGMENT = 1024 * 1024
"""The largest buffer :meth:`HTTP11Connection.receive_all` allocates ahead of the bytes.

A declared Content-Length is the peer's claim, not bytes received: a larger body is read
into further segments as it arrives, so a lying header costs at most this much memory.
"""
SINK_MIN = 8 * 1024
"""``receive_all`` reads a smaller rest of a body the ordinary way, not into a sink."""


class ReceiveBuffer:
    """A read buffer that the connections of one client share (one event loop).

    asyncio reads into it (``HTTP11Connection.get_buffer``) and at once hands the bytes
    to that connection (``buffer_updated``), before any other read, so one buffer
    serves them all. Reading into it, rather than letting asyncio allocate a fresh
    256 KiB bytes object per read and shrink it, keeps large allocations (and the page
    faults and mmap/munmap calls glibc makes for them) off the receive path.

    Attributes:
        data: the bytes; only the first ``nbytes`` of a read are valid.
        view: a memoryview of ``data`` (what the transport reads into).
    """

    __slots__ = ("data", "view")

    def __init__(self, size: int = RECV_BUFFER_SIZE) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)


class _SinkBuffer(io.BytesIO):
    """The ``BytesIO`` a whole body is read into, through its ``getbuffer()`` view.

    Closing it while a view is alive raises ``BufferError``. That happens when the garbage
    collector finalizes it together with a view nobody can release any more: a failed read
    keeps the transport's slice of it in its traceback's frame, which the connection keeps
    (``connection_lost(exc)``). Python 3.13's ``IOBase`` finalizer reports that error as
    unraisable (3.12 ignored it); the memory goes with the view in the same collection.
    """

    __slots__ = ()

    def close(self) -> None:
        """Close, unless a view is still alive (see the class docstring)."""
        with contextlib.suppress(BufferError):
            super().close()


class BodySink:
    """The rest of one Content-Length body, read straight into the body's own buffer.

    A body of at most :data:`SINK_SEGMENT` bytes in all gets one buffer of exactly its size
    (inside a :class:`_SinkBuffer`, whose ``getvalue()`` hands that very buffer out as the
    ``bytes`` of the body: no copy after the kernel's). A larger one gets ``bytearray``
    segments of at most :data:`SINK_SEGMENT`, allocated as the bytes arrive and joined once
    at the end. The pieces already queued are copied in first (the first kind) or kept as
    they are (the second).

    Attributes:
        view: the current segment; ``view[pos:]`` is what the next read may fill.
        pos: bytes of ``view`` filled.
    """

    __slots__ = ("_parts", "_whole", "pos", "view")

    def __init__(self, queued: list[bytes], queued_bytes: int, remaining: int) -> None:
        """Open a sink for ``remaining`` bytes still due after the ``queued`` pieces."""
        total = queued_bytes + remaining
        self._parts: list[bytes | memoryview] = []
        self._whole: _SinkBuffer | None = None
        if total <= SINK_SEGMENT:
            # One buffer for the whole body, inside a BytesIO: CPython's getvalue() hands
            # out an unexported buffer of exactly the right size as the bytes object
            # itself, so the body is never copied again once the kernel has written it.
            whole = _SinkBuffer(bytes(total))  # its only reference: getbuffer() won't copy
            view = whole.getbuffer()
            pos = 0
            for chunk in queued:
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            self._whole, self.view, self.pos = whole, view, queued_bytes
        else:  # segments of at most SINK_SEGMENT, joined at the end
            self._parts = list(queued)
            self._new_segment(remaining)

    def _new_segment(self, remaining: int) -> None:
        self.view = memoryview(bytearray(min(remaining, SINK_SEGMENT)))
        self.pos = 0

    def write(self, data: bytes | bytearray, pos: int, end: int) -> int:
        """Copy as much of ``data[pos:end]`` as the current segment holds; return how much.

        For bytes that reached the connection some other way than through ``view``
        (transports that are not buffered); then call :meth:`filled` with the count.
        """
        start = self.pos
        take = min(len(self.view) - start, end - pos)
        self.view[start : start + take] = memoryview(data)[pos : pos + take]
        return take

    def filled(self, nbytes: int, remaining: int) -> bool:
        """``nbytes`` more bytes are in ``view``; ``remaining`` are due after them.

        Returns:
            True once the body is complete (take it with :meth:`result`).
        """
        self.pos += nbytes
        view = self.view
        if self.pos < len(view):
            return False
        if remaining:
            self._parts.append(view)
            self._new_segment(remaining)
            return False
        if self._whole is None:
            self._parts.append(view)
        else:
            view.release()  # result() takes the body out of _whole
        return True

    def result(self) -> bytes:
        """The whole body, once :meth:`filled` returned True.

        Called by the reader, not on the last read: the transport's slice of the buffer
        is gone by then, so the buffer is unexported and ``getvalue()`` does not copy it.
        """
        whole, self._whole = self._whole, None
        body = whole.getvalue() if whole is not None else b"".join(self._parts)
        self._parts = []
        return body

    def drop(self) -> None:
        """Let go of an unfinished body (the read failed or was cancelled) now: its view
        first, then the buffer (see :class:`_SinkBuffer`)."""
        self.view.release()
        self._whole = None
        self._parts = []
