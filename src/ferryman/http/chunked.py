"""ChunkedBody: a chunked request body (RFC 9112 §7.1), decoded by the front itself.

The HTTP parser (llhttp) reads request heads, but it refuses whitespace after the
``;`` of a chunk extension (``5 ; name=value``), which RFC 9112 allows as BWS; so
the front decodes chunked request bodies itself, sans-IO: bytes in, body pieces
out, and where the body ended (the next request follows it).

Rules the code keeps:
1. chunk-size is 1 to 16 hex digits; chunk-ext is
   ``*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`` and ignored.
2. Every line ends with CRLF; a bare CR or LF, a NUL or another control character in
   a line, or chunk data not followed by CRLF is an error (400): the framing must have
   one reading only.
3. A chunk-size line is at most ``MAX_LINE`` bytes; the trailer section at most
   ``max_trailer`` (431 beyond).
4. Trailer fields are checked like header fields and then dropped: they never become
   headers. A framing field (Content-Length, Transfer-Encoding) in them is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: A chunk-size line, CRLF excluded, extensions included.
MAX_LINE = 4096
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
    rb"[ \t]*"
)
_VISIBLE = rb"[\x21-\x7e\x80-\xff]"
_FIELD_LINE = re.compile(
    _TOKEN + rb":[ \t]*(?:" + _VISIBLE + rb"(?:[\t \x21-\x7e\x80-\xff]*" + _VISIBLE + rb")?)?[ \t]*"
)
_FRAMING = frozenset([b"content-length", b"transfer-encoding"])

# States
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkError(Exception):
    """The chunked framing is broken: answer ``status`` and close."""

    def __init__(self, status: int, message: bytes) -> None:
        super().__init__(message.decode("latin-1"))
        self.status = status
        self.message = message


class ChunkedBody:
    """The decoder of one chunked body (see the module docstring)."""

    __slots__ = ("_line", "_remaining", "_state", "_trailer_bytes", "max_trailer")

    def __init__(self, max_trailer: int) -> None:
        self.max_trailer = max_trailer
        self._state = _SIZE
        #: A line being gathered (chunk-size or trailer field).
        self._line = b""
        #: Bytes of chunk data still to come.
        self._remaining = 0
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes, on_body: Callable[[bytes], None]) -> int:
        """Decode ``data``, handing each piece of body to ``on_body``. Returns how many bytes
        of ``data`` belonged to the body: all of them until it ends (see ``done``); the rest
        is the next request's. Raises ChunkError."""
        pos = 0
        size = len(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, size - pos)
                on_body(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if state == _DATA_END:
                need = 2 - len(self._line)
                self._line += data[pos : pos + need]
                pos += min(need, size - pos)
                if len(self._line) < 2:
                    continue
                if self._line != b"\r\n":
                    raise ChunkError(400, b"Bad Request: chunk data not followed by CRLF.\n")
                self._line = b""
                self._state = _SIZE
                continue
            if state == _DONE:
                return pos
            # A line: a chunk size, or a trailer field (or the empty line that ends them).
            end = data.find(b"\n", pos)
            piece = data[pos : end + 1 if end >= 0 else size]
            pos += len(piece)
            line = self._line + piece
            limit = MAX_LINE if state == _SIZE else self.max_trailer - self._trailer_bytes
            if len(line) > limit + 2:
                if state == _SIZE:
                    raise ChunkError(400, b"Bad Request: chunk size line too long.\n")
                raise ChunkError(431, b"Request Header Fields Too Large\n")
            if end < 0:
                self._line = line
                continue
            self._line = b""
            if not line.endswith(b"\r\n") or line.find(b"\r", 0, -2) >= 0:
                raise ChunkError(400, b"Bad Request: a bare CR or LF in the chunked body.\n")
            line = line[:-2]
            if state == _SIZE:
                self._size_line(line)
            else:
                self._trailer_line(line)
        return pos if self._state == _DONE else size

    def _size_line(self, line: bytes) -> None:
        match = _SIZE_LINE.fullmatch(line)
        if match is None:
            raise ChunkError(400, b"Bad Request: invalid chunk size line.\n")
        chunk = int(match.group(1), 16)
        if chunk:
            self._remaining = chunk
            self._state = _DATA
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._state = _DONE  # the empty line after the trailer section
            return
        self._trailer_bytes += len(line) + 2
        if _FIELD_LINE.fullmatch(line) is None:
            raise ChunkError(400, b"Bad Request: invalid trailer field.\n")
        name = line.partition(b":")[0].lower()
        if name in _FRAMING:
            raise ChunkError(400, b"Bad Request: a framing field in the trailer section.\n")
