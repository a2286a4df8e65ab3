"""HTTP/1.1: the request head, the response framing (sans-IO) and the asyncio connection.

``framing`` reads responses (bytes in, events out), ``request_head`` writes request heads,
``buffers`` holds the read buffer and body sinks, and ``protocol`` is the asyncio shell
that moves the bytes. The names other modules use are re-exported here.
"""

from .buffers import RECV_BUFFER_SIZE, SINK_SEGMENT, ReceiveBuffer
from .framing import ParserLimits, ResponseHead
from .protocol import HIGH_WATER, LOW_WATER, HTTP11Connection

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "RECV_BUFFER_SIZE",
    "SINK_SEGMENT",
    "HTTP11Connection",
    "ParserLimits",
    "ReceiveBuffer",
    "ResponseHead",
]
