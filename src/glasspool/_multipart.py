"""multipart/form-data request bodies (RFC 7578), streamed from bytes, files and paths.

:func:`multipart_body` checks every part up front (so a bad part fails before any
connection is taken) and returns a :class:`MultipartBody`: an async iterable of bytes that
reads files in 64 KiB chunks as it is sent, knows its length when every part's size is
known, and can be sent again (for a retry) when every part can be read again.
"""

from __future__ import annotations

import io
import mimetypes
import os
import pathlib
import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

from ._exceptions import InvalidRequest, StreamConsumed
from ._urls import param_pairs

__all__ = ["CHUNK_SIZE", "FileTypes", "FilesTypes", "MultipartBody", "multipart_body"]

CHUNK_SIZE = 64 * 1024
"""Bytes read from a file or path at a time."""

_FileContent: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | pathlib.PurePath
FileTypes: TypeAlias = (
    _FileContent | tuple[str | None, _FileContent] | tuple[str | None, _FileContent, str | None]
)
"""One file of ``files=``: its content, or ``(filename, content[, content_type])``."""
FilesTypes: TypeAlias = Mapping[str, FileTypes] | Sequence[tuple[str, FileTypes]]
"""``files=``: field name to :data:`FileTypes`."""


def _quote(value: str) -> str:
    """Escape a name or filename for a quoted-string as browsers do (WHATWG HTML)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass(slots=True)
class _Part:
    head: bytes
    data: bytes | None = None
    path: pathlib.Path | None = None
    file: IO[bytes] | None = None
    start: int | None = None  # where a seekable file's content starts
    size: int | None = None


def _file_part(name: str, value: object) -> _Part:
    filename: str | None
    content_type: str | None = None
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise TypeError(
                f"files={name!r}: a tuple must be (filename, content) or "
                f"(filename, content, content_type), not {len(value)} items"
            )
        filename, content = value[0], value[1]
        if len(value) == 3:
            content_type = value[2]
        if filename is not None and not isinstance(filename, str):
            raise TypeError(
                f"files={name!r}: filename must be a str, not {type(filename).__name__}"
            )
        if content_type is not None and not isinstance(content_type, str):
            raise TypeError(
                f"files={name!r}: content_type must be a str, not {type(content_type).__name__}"
            )
    else:
        content, filename = value, None
    plain = isinstance(value, tuple) and filename is None  # (None, ...): no filename at all
    part = _Part(b"")
    if isinstance(content, bytes | bytearray | memoryview):
        part.data = bytes(content)
        part.size = len(part.data)
        default_name = name
    elif isinstance(content, pathlib.PurePath):
        path = pathlib.Path(content)
        try:
            part.size = path.stat().st_size
        except OSError as exc:
            raise FileNotFoundError(f"files={name!r}: cannot read {str(path)!r}: {exc}") from exc
        if not path.is_file():
            raise TypeError(f"files={name!r}: {str(path)!r} is not a regular file")
        part.path = path
        default_name = path.name
    elif isinstance(content, io.TextIOBase) or "b" not in getattr(content, "mode", "b"):
        raise TypeError(
            f"files={name!r}: the file is open in text mode; open it in binary mode ('rb')"
        )
    elif callable(getattr(content, "read", None)):
        file: IO[bytes] = content
        part.file = file
        if _seekable(file):
            part.start = file.tell()
            end = file.seek(0, os.SEEK_END)
            file.seek(part.start)
            part.size = end - part.start
        raw_name = getattr(file, "name", None)
        default_name = os.path.basename(raw_name) if isinstance(raw_name, str) else name
    else:
        raise TypeError(
            f"files={name!r} must be bytes, a binary file object, a pathlib.Path or a "
            f"(filename, content[, content_type]) tuple, not {type(content).__name__}"
        )
    head = f'Content-Disposition: form-data; name="{_quote(name)}"'
    if plain:  # a field, as requests and httpx send (None, content)
        if content_type is not None:
            head += f"\r\nContent-Type: {_quote(content_type)}"
    else:
        if filename is None:
            filename = default_name
        if content_type is None:
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head += f'; filename="{_quote(filename)}"\r\nContent-Type: {_quote(content_type)}'
    part.head = (head + "\r\n\r\n").encode("utf-8")
    return part


def _seekable(file: IO[bytes]) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class MultipartBody:
    """A multipart/form-data body, streamed.

    Attributes:
        boundary: the boundary (random, 32 hex digits).
        content_type: the ``Content-Type`` header value, boundary included.
        length: the byte count when every part's size is known, else ``None`` (then it is
            sent chunked).
        replayable: whether it can be sent again: every part is bytes, a path or a seekable
            file (rewound to where it stood when the body was made).
    """

    __slots__ = ("_parts", "_sent", "boundary", "content_type", "length", "replayable")

    def __init__(self, parts: list[_Part], boundary: str, content_type: str | None = None) -> None:
        self._parts = parts
        self._sent = False
        self.boundary = boundary
        self.content_type = content_type or f"multipart/form-data; boundary={boundary}"
        self.replayable = all(p.file is None or p.start is not None for p in parts)
        self.length: int | None = None
        if all(p.size is not None for p in parts):
            delimiter = len(boundary) + 4  # "--" boundary CRLF
            closing = len(boundary) + 6  # "--" boundary "--" CRLF
            sizes = (delimiter + len(p.head) + (p.size or 0) + 2 for p in parts)
            self.length = sum(sizes) + closing

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._sent and not self.replayable:
            raise StreamConsumed(
                "this multipart body reads a file that cannot be rewound; it can be sent once"
            )
        self._sent = True
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        delimiter = b"--" + self.boundary.encode("ascii") + b"\r\n"
        for part in self._parts:
            if part.data is not None:  # a field or a bytes file: one chunk
                yield delimiter + part.head + part.data + b"\r\n"
                continue
            yield delimiter + part.head
            if part.path is not None:
                with part.path.open("rb") as file:
                    async for chunk in _read(file):
                        yield chunk
            else:
                assert part.file is not None
                if part.start is not None:
                    part.file.seek(part.start)
                async for chunk in _read(part.file):
                    yield chunk
            yield b"\r\n"
        yield b"--" + self.boundary.encode("ascii") + b"--\r\n"


async def _read(file: IO[bytes]) -> AsyncIterator[bytes]:
    while True:
        chunk = file.read(CHUNK_SIZE)
        if not chunk:
            return
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(
                f"a file in files= returned {type(chunk).__name__} from read(); open it in "
                "binary mode ('rb')"
            )
        yield bytes(chunk)


def multipart_body(
    files: object, data: Mapping[str, Any] | None = None, content_type: str | None = None
) -> MultipartBody:
    """Check ``files`` and ``data`` and make the body; nothing is read yet.

    Fields of ``data`` come first (values as for ``data=`` forms), then the files in the
    order given. A file's name defaults to the path's or file object's base name, else the
    field name; its content type to the one ``mimetypes`` guesses from the filename, else
    ``application/octet-stream``. A tuple whose filename is ``None`` sends a plain field
    (no filename; a content type only if given). Quotes, CR and LF in names are
    percent-encoded.

    ``content_type`` is the caller's own ``Content-Type`` header, if any. A ``multipart/``
    one keeps its type: without a boundary the generated one is added to it, with one
    that boundary is used. Any other type is replaced (the body is multipart).

    Raises:
        InvalidRequest: the caller's boundary is not a valid one (RFC 2046: 1 to 70
            characters from a small set, not ending in a space).
        TypeError: ``files`` is neither a mapping nor a list of ``(name, value)`` pairs,
            or a part is of an unsupported type or a file open in text mode (naming the
            field).
        FileNotFoundError: a path that cannot be read.
    """
    if isinstance(files, Mapping):
        items = list(files.items())
    elif isinstance(files, list | tuple) and all(
        isinstance(item, tuple) and len(item) == 2 for item in files
    ):
        items = list(files)  # (name, value) pairs: a field name may repeat
    else:
        raise TypeError(
            "files= must be a mapping of field names or a list of (name, value) pairs, "
            f"not {type(files).__name__}"
        )
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(f"data= must be a mapping of form fields, not {type(data).__name__}")
    parts: list[_Part] = []
    for key, value in param_pairs(data or {}, "form field"):
        head = f'Content-Disposition: form-data; name="{_quote(key)}"\r\n\r\n'
        body = value.encode("utf-8")
        parts.append(_Part(head.encode("utf-8"), data=body, size=len(body)))
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"files= keys must be str field names, not {type(name).__name__}")
        parts.append(_file_part(name, value))
    boundary, declared = secrets.token_hex(16), None
    if content_type is not None and content_type.strip().lower().startswith("multipart/"):
        found = _BOUNDARY_PARAM.search(content_type)
        if found is None:
            declared = f"{content_type.strip().rstrip(';')}; boundary={boundary}"
        else:
            quoted, bare = found.groups()
            boundary, declared = (bare if quoted is None else quoted), content_type.strip()
            if not _BOUNDARY.fullmatch(boundary):
                raise InvalidRequest(
                    f"the Content-Type header's multipart boundary {boundary[:80]!r} is not "
                    "valid: 1 to 70 of A-Z a-z 0-9 '()+_,-./:=? and space, not ending in a space"
                )
    return MultipartBody(parts, boundary, declared)


_BOUNDARY_PARAM = re.compile(r';\s*boundary\s*=\s*(?:"([^"]*)"|([^\s;]*))', re.IGNORECASE)
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
