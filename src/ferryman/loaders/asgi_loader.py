"""Ferryman's ASGI loader: runs inside an app process, under the app's own Python.

It loads the app's ASGI 3 callable (FastAPI, Starlette, Django's ASGI handler...), runs
its ``lifespan`` startup (a failure is a failed start, with the app's error on the
error page), and serves ``http`` requests from the core over the session protocol (see
docs/session-protocol.md), on one asyncio event loop (uvloop when the app's environment
has it), any number at once. At stdin EOF or SIGTERM it stops accepting, lets requests
in flight finish, runs the ``lifespan`` shutdown, and exits 0.

What it shares with the WSGI loader (the handshake, loading the startup file, the
session protocol's frames) it takes from ``wsgi_loader.py`` beside it, loaded from its
file: loaders import nothing from Ferryman, and this directory is never put on the
app's ``sys.path``. Standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import faulthandler
import hashlib
import importlib.util
import json
import os
import signal
import socket
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Awaitable, Callable, Dict

    Message = Dict[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Dict[str, Any], Receive, Send], Awaitable[None]]


def _shared() -> ModuleType:
    """wsgi_loader.py, beside this file, as a module of its own name."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wsgi_loader.py")
    spec = importlib.util.spec_from_file_location("ferryman_wsgi_loader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shared = _shared()
shared.LOADER_FILES.add(os.path.abspath(__file__))  # not the app's frames, in tracebacks

REQUEST_HEAD = shared.REQUEST_HEAD
FRAME_HEAD = shared.FRAME_HEAD
MAX_FRAME = shared.MAX_FRAME
RECV_SIZE = shared.RECV_SIZE
HOP_BY_HOP = shared.HOP_BY_HOP
END_FRAME = shared.frame(shared.FRAME_END, b"")
ASGI = {"version": "3.0", "spec_version": "2.3"}
#: Reason phrases for the status line (the core shows what the app's status line says).
_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip
#: How long the lifespan shutdown may take before the process exits anyway.
SHUTDOWN_TIMEOUT = 10.0


class LifespanFailed(Exception):
    """The app's lifespan startup failed; the message is the app's (and its traceback,
    when it raised)."""

    def __init__(self, message: str, traceback: str = "") -> None:
        Exception.__init__(self, message)
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc: BaseException) -> LifespanFailed:
        tb = shared.app_traceback((type(exc), exc, exc.__traceback__))
        return cls("%s: %s" % (type(exc).__name__, exc), tb)


# -- one request ----------------------------------------------------------------------------


def http_scope(block: bytes, state: dict[str, Any]) -> dict[str, Any]:
    """The ASGI ``http`` scope of a request, from the session protocol's environ block."""
    items = iter(block.decode("latin-1").split("\0"))
    environ = dict(zip(items, items))  # noqa: B905 - pairs; zip(strict) is 3.10+
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            # The core passes only names of [A-Za-z0-9-]: '_' here was '-'.
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    uri = environ.get("REQUEST_URI", "")
    raw_path = uri.partition("?")[0]
    # ASGI's path is the whole path, root_path (the prefix the app is mounted at) included,
    # as uvicorn gives it and Starlette and Django take it.
    path_bytes = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    try:
        port = int(environ.get("SERVER_PORT", "80"))
    except ValueError:
        port = 80
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI,
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:],
        "method": environ.get("REQUEST_METHOD", "GET"),
        "scheme": environ.get("ferryman.url_scheme", "http"),
        "path": path_bytes.decode("utf-8", "replace"),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": environ.get("SCRIPT_NAME", ""),
        "headers": headers,
        "server": (environ.get("SERVER_NAME", "localhost"), port),
        "state": dict(state),
    }
    if "REMOTE_ADDR" in environ:
        try:
            scope["client"] = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT", "0")))
        except ValueError:
            scope["client"] = (environ["REMOTE_ADDR"], 0)
    return scope


class Body:
    """A request's body, read from the connection as the app asks for it: whole already
    for most requests, piece by piece for a large one (or one the core streams as it
    arrives from the client)."""

    def __init__(self, reader: asyncio.StreamReader, data: bytes, length: int) -> None:
        self.reader = reader
        self.buffer = data
        self.remaining = length
        #: All of it was read (or the connection ended): nothing more to wait for.
        self.consumed = asyncio.Event()
        if not length:
            self.consumed.set()
        self.broken = False

    async def next(self) -> tuple[bytes, bool]:
        """The next piece and whether more follow; ConnectionError if the core closed the
        connection first (the client went away)."""
        if not self.buffer and self.remaining:
            self.buffer = await self.reader.read(min(RECV_SIZE, self.remaining))
            if not self.buffer:
                self.broken = True
                self.consumed.set()
                raise ConnectionError("the request body was cut short")
        piece = self.buffer[: self.remaining]
        self.buffer = self.buffer[len(piece) :]
        self.remaining -= len(piece)
        if not self.remaining:
            self.consumed.set()
        return piece, self.remaining > 0

    async def drain(self) -> bool:
        """Read what the app left unread (framing stays in step); False if cut short."""
        try:
            while self.remaining:
                await self.next()
        except ConnectionError:
            return False
        return not self.broken


class Exchange:
    """One request's receive and send, turned into session-protocol frames."""

    def __init__(
        self, writer: asyncio.StreamWriter, body: Body, head_only: bool, gone: asyncio.Event
    ) -> None:
        self.writer = writer
        self.body = body
        self.body_taken = False
        self.head_only = head_only
        #: The core closed the connection (the client went away).
        self.gone = gone
        #: The response is complete (the next receive() says http.disconnect).
        self.done = asyncio.Event()
        self.start: Message | None = None  # http.response.start, until the first body
        self.head_sent = False
        self.finished = False

    async def receive(self) -> Message:
        body = self.body
        if not self.body_taken and not self.gone.is_set():
            try:
                piece, more = await body.next()
            except ConnectionError:
                self.gone.set()
                return {"type": "http.disconnect"}
            self.body_taken = not more
            return {"type": "http.request", "body": piece, "more_body": more}
        # Nothing more will come: block until the response is over or the client left
        # (Starlette's streaming responses wait here for a disconnect).
        waiters = [asyncio.ensure_future(self.done.wait()), asyncio.ensure_future(self.gone.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if self.finished:
            return  # the response is over: nothing more goes out
        if kind == "http.response.start":
            if self.start is not None or self.head_sent:
                raise RuntimeError("http.response.start sent twice")
            self.start = message
            return
        if kind != "http.response.body":
            raise RuntimeError("unexpected ASGI message type %r in an http scope" % (kind,))
        if self.start is None and not self.head_sent:
            raise RuntimeError("http.response.body sent before http.response.start")
        body = message.get("body", b"")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise RuntimeError("http.response.body's body must be bytes, not %s" % type(body))
        more = bool(message.get("more_body", False))
        out: list[bytes | memoryview] = []
        if not self.head_sent:
            assert self.start is not None
            # The whole body in one message: its length is known, so Content-Length goes
            # in (keep-alive for HTTP/1.0 clients too).
            known = None if more or (self.head_only and not body) else len(body)
            out.append(shared.frame(shared.FRAME_HEAD_RESPONSE, head_payload(self.start, known)))
            self.head_sent = True
            self.start = None
        if body and not self.head_only:
            out.extend(shared.body_frames(bytes(body)))
        if not more:
            out.append(END_FRAME)
            self.finished = True
        if out:
            self.writer.write(b"".join(out))
            await self.writer.drain()
        if self.finished:
            self.done.set()

    async def finish(self, failed: bool) -> None:
        """The app returned (or raised): make the response whole, or cut it short."""
        if self.finished:
            return
        self.finished = True
        self.done.set()
        if self.head_sent:
            reason = b"the app raised mid-response" if failed else b"the app did not finish"
            self.writer.write(shared.frame(shared.FRAME_ABORT, reason))
        else:
            out = [shared.frame(shared.FRAME_HEAD_RESPONSE, shared.ERROR_500)]
            if not self.head_only:
                out.extend(shared.body_frames(shared.ERROR_500_BODY))
            out.append(END_FRAME)
            self.writer.write(b"".join(out))
            if not failed:
                sys.stderr.write("Error while serving a request: the app sent no response\n")
                sys.stderr.flush()
        await self.writer.drain()


def head_payload(start: Message, length: int | None) -> bytes:
    """The H frame's payload from http.response.start."""
    status = start.get("status")
    if type(status) is not int or not 100 <= status <= 999:
        raise RuntimeError("http.response.start's status must be an int, got %r" % (status,))
    pairs = []
    seen_length = False
    for item in start.get("headers", ()):
        name, value = item
        text = bytes(name).decode("latin-1")
        lower = text.lower()
        if lower in HOP_BY_HOP:
            continue
        if lower == "content-length":
            seen_length = True
        pairs.append((text, bytes(value).decode("latin-1")))
    if length is not None and not seen_length and status >= 200 and status not in (204, 304):
        pairs.append(("Content-Length", str(length)))
    # The shared check: names are tokens, values have no control characters.
    return shared._head_payload("%d %s" % (status, _REASONS.get(status, "Unknown")), pairs)  # type: ignore[no-any-return]


# -- the server -------------------------------------------------------------------------------


class Server:
    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.stopping = False
        self.in_flight = 0
        self.connections: set[asyncio.Task[Any]] = set()
        #: Open WebSockets: told to go away (1001) when the process stops.
        self.websockets: set[WebSocket] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the core closed the connection; it knows
        finally:
            if task is not None:
                self.connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_size = REQUEST_HEAD.size
        data = b""
        while not self.stopping:
            while len(data) < head_size:
                more = await reader.read(RECV_SIZE)
                if not more:
                    return
                data += more
            environ_len, body_len = REQUEST_HEAD.unpack_from(data)
            body_at = head_size + environ_len
            while len(data) < body_at:
                more = await reader.read(max(RECV_SIZE, body_at - len(data)))
                if not more:
                    return
                data += more
            block = data[head_size:body_at]
            data = data[body_at:]
            scope = http_scope(block, self.state)
            if _is_websocket(scope) and not body_len:
                # The connection is the WebSocket's from now on; it ends with it.
                await WebSocket(self, reader, writer, scope, data).run()
                return
            gone = asyncio.Event()
            body = Body(reader, data, body_len)
            request = asyncio.ensure_future(self.handle(writer, scope, body, gone))
            # The body is read as the app asks for it (Body.next); once it is all read,
            # a read that ends means the core closed the connection (the client went
            # away): the app's receive() then says http.disconnect. The core sends the
            # next request only after this response, so nothing else can come.
            while not request.done() and not body.consumed.is_set():
                consumed = asyncio.ensure_future(body.consumed.wait())
                await asyncio.wait([request, consumed], return_when=asyncio.FIRST_COMPLETED)
                consumed.cancel()
            data = b""
            while not request.done() and not body.broken:
                reading = asyncio.ensure_future(reader.read(RECV_SIZE))
                await asyncio.wait([request, reading], return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()  # cancelling a read that got nothing loses nothing
                try:
                    more = await reading
                except asyncio.CancelledError:
                    continue
                if not more:
                    gone.set()
                    await request
                    return
                data += more
            await request  # done, or ending: the client's disconnect reached it
            if not await body.drain():
                return  # cut short: the connection is over
            data = body.buffer + data

    async def handle(
        self,
        writer: asyncio.StreamWriter,
        scope: dict[str, Any],
        body: Body,
        gone: asyncio.Event,
    ) -> None:
        exchange = Exchange(writer, body, scope["method"] == "HEAD", gone)
        self.in_flight += 1
        self.idle.clear()
        failed = False
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            failed = True
            if not gone.is_set():
                shared.print_exception("Error while serving a request:\n")
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
        if not gone.is_set():
            await exchange.finish(failed)


# -- WebSockets -----------------------------------------------------------------------------

#: RFC 6455 1.3.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The largest message (or frame) a client may send, as uvicorn's default: 16 MiB.
WS_MAX_MESSAGE = 16 * 1024 * 1024
#: Messages read ahead of the app's receive(): past this, reading waits (back-pressure).
WS_QUEUE = 64
#: After sending a close frame, how long the client gets to answer with its own.
WS_CLOSE_WAIT = 1.0
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _is_websocket(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"upgrade":
            return b"websocket" in [t.strip().lower() for t in value.split(b",")]
    return False


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A server frame (unmasked, final)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


class WebSocketError(Exception):
    """The client broke RFC 6455: close with ``code``."""

    def __init__(self, code: int, why: str) -> None:
        Exception.__init__(self, why)
        self.code = code


class FrameParser:
    """Client frames (masked) to whole messages, control frames as they come."""

    def __init__(self) -> None:
        self.buffer = b""
        self.message_opcode = 0
        self.fragments: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        out: list[tuple[int, bytes]] = []
        while True:
            buf = self.buffer
            if len(buf) < 2:
                return out
            first, second = buf[0], buf[1]
            fin, opcode, masked, size = first & 0x80, first & 0x0F, second & 0x80, second & 0x7F
            at = 2
            if size == 126:
                if len(buf) < 4:
                    return out
                size = struct.unpack_from("!H", buf, 2)[0]
                at = 4
            elif size == 127:
                if len(buf) < 10:
                    return out
                size = struct.unpack_from("!Q", buf, 2)[0]
                at = 10
            if first & 0x70:
                raise WebSocketError(1002, "reserved bits set (no extension was agreed)")
            if not masked:
                raise WebSocketError(1002, "a client frame must be masked")
            if size > WS_MAX_MESSAGE:
                raise WebSocketError(1009, "frame too big")
            if len(buf) < at + 4 + size:
                return out
            mask = buf[at : at + 4]
            payload = _unmask(buf[at + 4 : at + 4 + size], mask)
            self.buffer = buf[at + 4 + size :]
            if opcode >= 0x8:  # control: whole, never fragmented, at most 125 bytes
                if not fin or size > 125:
                    raise WebSocketError(1002, "invalid control frame")
                out.append((opcode, payload))
                continue
            if opcode == OP_CONT:
                if not self.message_opcode:
                    raise WebSocketError(1002, "continuation without a message")
            elif opcode in (OP_TEXT, OP_BINARY):
                if self.message_opcode:
                    raise WebSocketError(1002, "a new message inside a fragmented one")
                self.message_opcode = opcode
            else:
                raise WebSocketError(1002, "unknown opcode %d" % opcode)
            self.size += size
            if self.size > WS_MAX_MESSAGE:
                raise WebSocketError(1009, "message too big")
            self.fragments.append(payload)
            if fin:
                out.append((self.message_opcode, b"".join(self.fragments)))
                self.message_opcode, self.fragments, self.size = 0, [], 0


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    # One big-integer XOR: fast enough without numpy, in the standard library.
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(data), "big")


class WebSocket:
    """One ASGI ``websocket`` scope on a connection the core tunnels after our 101.

    To the core, the accept is an H frame (``101``), every WebSocket frame we send is a
    B frame, and the end is an E frame; what the core sends after the request are the
    client's raw WebSocket bytes.
    """

    def __init__(
        self,
        server: Server,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        scope: dict[str, Any],
        early: bytes,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        protocols = [
            t.strip().decode("latin-1")
            for name, value in scope["headers"]
            if name == b"sec-websocket-protocol"
            for t in value.split(b",")
        ]
        scope["subprotocols"] = [p for p in protocols if p]
        scope.pop("method", None)
        self.scope = scope
        self.key = next((v for n, v in scope["headers"] if n == b"sec-websocket-key"), b"")
        self.early = early
        self.state = "connecting"  # accepted, closed
        self.connect_taken = False
        self.incoming: asyncio.Queue[Message] = asyncio.Queue(WS_QUEUE)
        self.close_sent = False
        self.peer_closed = asyncio.Event()
        self.ended = False
        #: The process is stopping: the close code is 1001 (going away).
        self.going_away = False

    async def run(self) -> None:
        server = self.server
        server.websockets.add(self)
        server.in_flight += 1
        server.idle.clear()
        reading = None
        try:
            app = asyncio.ensure_future(server.app(self.scope, self.receive, self.send))
            reading = asyncio.ensure_future(self.read_loop())
            try:
                await app
            except Exception:
                shared.print_exception("Error in a WebSocket:\n")
                await self.fail()
            else:
                if self.state == "connecting":  # returned without accepting: refused
                    await self.refuse(403)
                elif self.state == "accepted":
                    await self.close(1001 if self.going_away else 1000, "")
        finally:
            if reading is not None:
                reading.cancel()
            await self.end()
            server.websockets.discard(self)
            server.in_flight -= 1
            if not server.in_flight:
                server.idle.set()

    # -- the app's side --

    async def receive(self) -> Message:
        if not self.connect_taken:
            self.connect_taken = True
            return {"type": "websocket.connect"}
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "websocket.accept" and self.state == "connecting":
            await self.accept(message)
        elif kind == "websocket.send" and self.state == "accepted":
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                await self.write(ws_frame(OP_TEXT, str(text).encode("utf-8")))
            elif data is not None:
                await self.write(ws_frame(OP_BINARY, bytes(data)))
        elif kind == "websocket.close":
            if self.state == "connecting":
                await self.refuse(403)
            elif self.state == "accepted":
                await self.close(int(message.get("code") or 1000), message.get("reason") or "")
        elif self.state == "closed" and kind in ("websocket.send", "websocket.close"):
            raise OSError("the WebSocket is closed")
        else:
            raise RuntimeError("unexpected ASGI message %r in state %s" % (kind, self.state))

    async def accept(self, message: Message) -> None:
        accept = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest())
        head = [b"101 Switching Protocols\r\nSec-WebSocket-Accept: ", accept, b"\r\n"]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            head += (b"Sec-WebSocket-Protocol: ", subprotocol.encode("latin-1"), b"\r\n")
        for name, value in message.get("headers") or ():
            if bytes(name).lower() not in (b"sec-websocket-accept", b"sec-websocket-protocol"):
                head += (bytes(name), b": ", bytes(value), b"\r\n")
        self.state = "accepted"
        self.writer.write(shared.frame(shared.FRAME_HEAD_RESPONSE, b"".join(head)))
        await self.writer.drain()

    async def refuse(self, status: int) -> None:
        """Closed before it was accepted: an HTTP answer (ASGI says 403)."""
        self.state = "closed"
        reason = _REASONS.get(status, "Forbidden").encode()
        head = b"%d %s\r\nContent-Length: 0\r\n" % (status, reason)
        self.writer.write(shared.frame(shared.FRAME_HEAD_RESPONSE, head) + END_FRAME)
        self.ended = True
        await _drain(self.writer)
        self._disconnected(1006)

    async def fail(self) -> None:
        if self.state == "connecting":
            self.state = "closed"
            out = [shared.frame(shared.FRAME_HEAD_RESPONSE, shared.ERROR_500)]
            out.extend(shared.body_frames(shared.ERROR_500_BODY))
            out.append(END_FRAME)
            self.writer.write(b"".join(out))
            self.ended = True
            await _drain(self.writer)
        elif self.state == "accepted":
            await self.close(1011, "")

    async def close(self, code: int, reason: str) -> None:
        """Our close frame, then (briefly) the client's, then the end."""
        self.state = "closed"
        if not self.close_sent:
            self.close_sent = True
            await self.write(ws_frame(OP_CLOSE, _close_payload(code, reason)))
        try:
            await asyncio.wait_for(self.peer_closed.wait(), WS_CLOSE_WAIT)
        except asyncio.TimeoutError:
            pass
        await self.end()

    async def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.writer.write(END_FRAME)
            await _drain(self.writer)

    async def write(self, frame: bytes) -> None:
        out: list[bytes | memoryview] = list(shared.body_frames(frame))
        self.writer.write(b"".join(out))
        await _drain(self.writer)

    # -- the client's side --

    async def read_loop(self) -> None:
        parser = FrameParser()
        data = self.early
        try:
            while True:
                if not data:
                    data = await self.reader.read(RECV_SIZE)
                    if not data:
                        self._disconnected(1006)  # the core closed: the client is gone
                        return
                try:
                    messages = parser.feed(data)
                except WebSocketError as exc:
                    await self.protocol_error(exc)
                    return
                data = b""
                for opcode, payload in messages:
                    if opcode == OP_TEXT:
                        try:
                            text = payload.decode("utf-8")
                        except UnicodeDecodeError:
                            await self.protocol_error(WebSocketError(1007, "invalid UTF-8"))
                            return
                        await self.incoming.put({"type": "websocket.receive", "text": text})
                    elif opcode == OP_BINARY:
                        await self.incoming.put({"type": "websocket.receive", "bytes": payload})
                    elif opcode == OP_PING:
                        await self.write(ws_frame(OP_PONG, payload))
                    elif opcode == OP_CLOSE:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        await self.peer_close(code, payload)
                        return
        except (ConnectionError, OSError):
            self._disconnected(1006)

    async def peer_close(self, code: int, payload: bytes) -> None:
        self.peer_closed.set()
        if not self.close_sent and self.state == "accepted":
            self.close_sent = True
            await self.write(ws_frame(OP_CLOSE, payload[:2]))  # the close handshake
            self.state = "closed"
            await self.end()
        self._disconnected(code)

    async def protocol_error(self, exc: WebSocketError) -> None:
        sys.stderr.write("WebSocket closed (%d): %s\n" % (exc.code, exc))
        sys.stderr.flush()
        if not self.close_sent:
            self.close_sent = True
            await self.write(ws_frame(OP_CLOSE, _close_payload(exc.code)))
        self.state = "closed"
        await self.end()
        self._disconnected(exc.code)

    def _disconnected(self, code: int) -> None:
        message = {"type": "websocket.disconnect", "code": code}
        try:
            self.incoming.put_nowait(message)
        except asyncio.QueueFull:
            # The app reads behind: drop what it has not read; the end is what matters.
            while not self.incoming.empty():
                self.incoming.get_nowait()
            self.incoming.put_nowait(message)


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass


class Lifespan:
    """The app's ``lifespan`` scope: startup before serving, shutdown at the end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        self.stopped = asyncio.get_running_loop().create_future()
        self.asked = False  # the app took lifespan.startup: it speaks the protocol
        self.supported = True
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> Message:
        self.asked = True
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            _resolve(self.started, None)
        elif kind == "lifespan.startup.failed":
            _resolve(self.started, LifespanFailed(str(message.get("message", ""))))
        elif kind == "lifespan.shutdown.complete":
            _resolve(self.stopped, None)
        elif kind == "lifespan.shutdown.failed":
            sys.stderr.write("lifespan shutdown failed: %s\n" % message.get("message", ""))
            _resolve(self.stopped, None)

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            if not self.asked:
                # It raised before it took the startup message: an app without lifespan
                # support (as the spec allows). Serve it without.
                self.supported = False
                _resolve(self.started, None)
            elif not self.started.done():
                _resolve(self.started, LifespanFailed.from_exception(exc))
            else:
                shared.print_exception("Error in the app's lifespan:\n")
            _resolve(self.stopped, None)
            return
        _resolve(self.started, None)  # returned without a word: as if complete
        _resolve(self.stopped, None)

    async def startup(self) -> None:
        self.task = asyncio.ensure_future(self.run())
        await self.incoming.put({"type": "lifespan.startup"})
        error = await self.started
        if error is not None:
            raise error

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.incoming.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self.stopped), SHUTDOWN_TIMEOUT)
        except asyncio.TimeoutError:
            sys.stderr.write("lifespan shutdown took over %gs; exiting\n" % SHUTDOWN_TIMEOUT)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


# -- the process -------------------------------------------------------------------------------


async def serve(args: dict[str, Any], handshake: Any, app: ASGIApp) -> int:
    loop = asyncio.get_running_loop()
    parent = os.getppid()
    handshake.step("lifespan_startup", "in_progress")
    lifespan = Lifespan(app)
    try:
        await lifespan.startup()
    except LifespanFailed as exc:
        tb = exc.traceback
        sys.stderr.write(tb or "lifespan startup failed: %s\n" % exc)
        sys.stderr.flush()
        handshake.send(
            {
                "error": {
                    "step": "lifespan_startup",
                    "kind": "lifespan_failed",
                    "message": str(exc) or "the app's lifespan startup failed",
                    "traceback": tb,
                }
            }
        )
        handshake.close()
        return 1
    handshake.step("lifespan_startup", "performed")

    handshake.step("listen", "in_progress")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args["socket"])
    listener.listen(1024)
    server = Server(app, lifespan.state)
    unix_server = await asyncio.start_unix_server(
        server.serve_connection, sock=listener, limit=RECV_SIZE
    )
    handshake.step("listen", "performed")

    # The handlers before "ready": a SIGTERM sent as soon as the core hears it (systemd's
    # control-group kill right after a spawn) is an orderly stop, not signal 15.
    stop = asyncio.Event()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # the app's own handler wins
        loop.add_signal_handler(signal.SIGTERM, _on_sigterm, server, stop)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL:
        # Before killing a hung process (--max-request-time) the core sends SIGQUIT: the
        # stack of every task (where each request awaits), and, through faulthandler, of
        # every thread (the event loop's, if a request blocks it).
        loop.add_signal_handler(signal.SIGQUIT, _dump_tasks)
        faulthandler.register(signal.SIGQUIT, file=2, all_threads=True, chain=True)
    handshake.step("ready", "performed")
    handshake.send(
        {
            "ready": {
                "version": shared.HANDSHAKE_VERSION,
                "socket": args["socket"],
                "protocol": shared.PROTOCOL,
                "concurrency": 0,
                "pid": os.getpid(),
            }
        }
    )
    handshake.close()

    loop.add_reader(0, _on_stdin, stop, server)
    await stop.wait()
    loop.remove_reader(0)
    server.stopping = True
    unix_server.close()
    _going_away(server)  # WebSockets would never end by themselves
    while server.in_flight and os.getppid() == parent:
        try:
            await asyncio.wait_for(server.idle.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    if os.getppid() == parent:
        await lifespan.shutdown()
    for task in list(server.connections):
        task.cancel()
    return 0


def _on_stdin(stop: asyncio.Event, server: Server) -> None:
    """The owner pipe: EOF stops the process; ``g`` (the server is stopping) closes the
    WebSockets with 1001 at once, so that they do not hold the stop."""
    try:
        data = os.read(0, 4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        stop.set()
    elif b"g" in data:
        _going_away(server)


def _going_away(server: Server) -> None:
    for websocket in list(server.websockets):
        if websocket.state == "accepted" and not websocket.going_away:
            websocket.going_away = True  # closed with 1001 once the app returns
            websocket._disconnected(1001)


def _on_sigterm(server: Server, stop: asyncio.Event) -> None:
    if server.stopping or stop.is_set():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    sys.stderr.write("Ferryman loader: received SIGTERM; finishing the requests in flight\n")
    sys.stderr.flush()
    stop.set()


def _dump_tasks() -> None:
    """Every task's await chain, innermost last: where each request waits."""
    lines = ["Ferryman loader: asked what this process is doing (max_request_time):"]
    for task in asyncio.all_tasks():
        lines.append("Task %s (most recent call last):" % task.get_name())
        for frame in _await_chain(task.get_coro()):
            code = frame.f_code
            lines.append(
                '  File "%s", line %d, in %s' % (code.co_filename, frame.f_lineno, code.co_name)
            )
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _await_chain(coro: Any) -> list[Any]:
    """The frames of a suspended coroutine and of what it awaits, down to the innermost
    (Task.print_stack shows only the outermost one). Bounded."""
    frames: list[Any] = []
    while coro is not None and len(frames) < 200:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return frames


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when the app's environment has it (as uvicorn does), else asyncio's own."""
    try:
        import uvloop  # noqa: PLC0415 - optional

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def main() -> None:
    args = json.loads(sys.argv[1])
    handshake = shared.begin(args, "Ferryman ASGI")
    app_root = args["app_root"]
    app = shared.load_or_report(
        handshake, app_root, args["startup_file"], "asgi", args.get("app_attribute")
    )
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(serve(args, handshake, app))
    finally:
        loop.close()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
