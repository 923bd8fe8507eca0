"""The session protocol: how the core hands a parsed request to a loader and reads the reply.

The full description is in docs/session-protocol.md; the loaders keep their own
copy of these constants (they cannot import Ferryman) and a test checks that
the copies agree.

Request (core → loader), on a keep-alive Unix stream connection::

    REQUEST_HEAD (environ length: u32, body length: u64), environ, body

``environ`` is ``key NUL value NUL ...`` in latin-1: exactly the string items of
the WSGI environ (plus ``ferryman.url_scheme``). The body is already complete in
the core, so its length is always known.

Response (loader → core): frames of ``FRAME_HEAD`` (type: 1 byte, length: u32)
and a payload:

* ``H``  status line and header lines, each ending in CRLF (``200 OK\\r\\nName: v\\r\\n``),
  hop-by-hop headers already removed;
* ``B``  a piece of the body;
* ``E``  the end of the response; the connection can carry the next request;
* ``A``  the app failed after the head was sent: the response is incomplete, the
  connection stays usable.
"""

from __future__ import annotations

import struct

REQUEST_HEAD = struct.Struct("!IQ")
FRAME_HEAD = struct.Struct("!cI")
FRAME_HEAD_RESPONSE = b"H"
FRAME_BODY = b"B"
FRAME_END = b"E"
FRAME_ABORT = b"A"

#: A frame larger than this is a protocol error (loaders split bodies into 1 MiB frames).
MAX_FRAME_PAYLOAD = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The loader sent something the session protocol does not allow."""


def encode_request(environ: bytes, body_length: int) -> bytes:
    """The request head and environ block; the caller sends the body after it."""
    return REQUEST_HEAD.pack(len(environ), body_length) + environ


class FrameReader:
    """Splits the loader's byte stream into frames: bytes in, (type, payload) out."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if self._buffer:
            data = self._buffer + data
        frames: list[tuple[bytes, bytes]] = []
        offset = 0
        size = len(data)
        head_size = FRAME_HEAD.size
        while size - offset >= head_size:
            kind, length = FRAME_HEAD.unpack_from(data, offset)
            if length > MAX_FRAME_PAYLOAD:
                raise ProtocolError(f"frame of {length} bytes")
            end = offset + head_size + length
            if end > size:
                break
            frames.append((kind, data[offset + head_size : end]))
            offset = end
        self._buffer = data[offset:] if offset < size else b""
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)
