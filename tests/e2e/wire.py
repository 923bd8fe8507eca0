"""A raw HTTP/1.1 client for tests: bytes out, strictly checked responses in.

``Wire`` is a socket to 127.0.0.1 with a read buffer and a small response parser
that checks framing (status line, header lines, chunked / Content-Length / close);
every read has a timeout. ``req`` and ``chunked`` build requests as bytes.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    """One response as it came off the wire."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: The chunk payloads, in order, when the body was chunked.
    chunks: list[bytes] = field(default_factory=list)
    #: The body ended the way its framing says (last chunk, full Content-Length).
    complete: bool = True

    def all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None


class Wire:
    """A raw client connection to 127.0.0.1 with a read buffer; every read has a timeout."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()
        self.eof = False
        #: The connection ended with a reset rather than a close.
        self.reset = False

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read more into the buffer; False once the server has closed (or reset)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_until(self, delimiter: bytes) -> bytes | None:
        """Bytes up to and including ``delimiter``; None if the connection ends first."""
        while True:
            at = self.buffer.find(delimiter)
            if at >= 0:
                return self._take(at + len(delimiter))
            if not self._fill():
                return None

    def read_exact(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        return self._take(size)

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        return self._take(len(self.buffer))

    def read_head(self) -> Response:
        head = self.read_until(b"\r\n\r\n")
        assert head is not None, f"connection ended before a response head: {bytes(self.buffer)!r}"
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        match = re.fullmatch(r"(HTTP/\d\.\d) (\d{3}) (.*)", status_line)
        assert match, f"bad status line {status_line!r}"
        headers = []
        for line in lines:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip() and name, f"bad header line {line!r}"
            headers.append((name, value.strip()))
        return Response(match.group(1), int(match.group(2)), match.group(3), headers)

    def read_response(self, method: str = "GET") -> Response:
        """A whole response, its body framed by HEAD/status, chunked, Content-Length or close."""
        resp = self.read_head()
        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        if resp.header("Transfer-Encoding") is not None:
            assert resp.header("Transfer-Encoding") == "chunked", resp.headers
            assert resp.header("Content-Length") is None, "both Content-Length and chunked"
            self._read_chunked(resp)
        elif resp.header("Content-Length") is not None:
            length = int(resp.header("Content-Length") or "")
            body = self.read_exact(length)
            if body is None:
                resp.complete = False
                body = self.read_to_eof()
            resp.body = body
        else:
            resp.body = self.read_to_eof()
        return resp

    def _read_chunked(self, resp: Response) -> None:
        while True:
            line = self.read_until(b"\r\n")
            if line is None:
                resp.complete = False
                return
            size_text = line[:-2].split(b";")[0]
            assert re.fullmatch(rb"[0-9a-fA-F]+", size_text), f"bad chunk-size line {line!r}"
            size = int(size_text, 16)
            if size == 0:
                while True:  # trailer section, up to an empty line
                    trailer = self.read_until(b"\r\n")
                    if trailer is None:
                        resp.complete = False
                        return
                    if trailer == b"\r\n":
                        return
            data = self.read_exact(size)
            if data is None:
                resp.complete = False
                resp.chunks.append(self.read_to_eof())
                resp.body = b"".join(resp.chunks)
                return
            resp.chunks.append(data)
            resp.body = b"".join(resp.chunks)
            end = self.read_exact(2)
            if end is None:
                resp.complete = False
                return
            assert end == b"\r\n", f"chunk data not followed by CRLF: {end!r}"

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within ``seconds``, sending nothing more."""
        assert not self.buffer, f"unread bytes: {bytes(self.buffer)!r}"
        if self.eof:
            return True
        deadline = time.monotonic() + seconds
        old = self.sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    return False
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.eof = True
                    return True
                raise AssertionError(f"unexpected bytes instead of a close: {data!r}")
        finally:
            self.sock.settimeout(old)


def req(method: str, target: str, *headers: str, body: bytes = b"", length: bool = True) -> bytes:
    """A request in bytes; Host is added unless given, Content-Length when there is a body."""
    lines = [f"{method} {target} HTTP/1.1"]
    if not any(h.lower().startswith("host:") for h in headers):
        lines.append("Host: 127.0.0.1")
    lines.extend(headers)
    if body and length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
