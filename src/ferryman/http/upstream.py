"""Upstream: the keep-alive connections from the core to one app process.

Two protocols, one interface towards the exchange (``on_head``, ``on_body``,
``on_end``, ``on_abort``, ``on_upstream_lost``):

* ``SessionConnection`` speaks the session protocol to Ferryman's own loaders
  (Python): the request goes as an environ block, the reply comes in frames.
* ``HttpConnection`` speaks HTTP/1.1 to apps that serve HTTP themselves (Node.js
  through its loader, any program started with ``$PORT``); the reply is parsed
  with httptools and handed on in the same shape.

Connections are opened on demand and reused (last released, first reused, so
the loader thread that served the previous request serves the next). A process
with concurrency N never has more than N connections: each session holds at
most one. Idle connections older than ``IDLE_MAX`` are not reused (an app may
have timed them out), and once the process is retired they are closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Protocol, cast

import httptools

from ..pool import Process
from .body import RequestBody
from .environ import build_environ, header_key, is_client_claim
from .request import RequestHead
from .session_protocol import (
    FRAME_ABORT,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEAD_RESPONSE,
    FrameReader,
    ProtocolError,
    encode_request,
)


class Responder(Protocol):
    """What a connection to an app needs of the exchange it carries (``exchange.Exchange``):
    the request to send, and where the response goes, piece by piece."""

    head: RequestHead
    body: RequestBody
    #: A HEAD request: the response has no body whatever its head says.
    head_only: bool
    #: A WebSocket upgrade: on 101 the connection becomes a tunnel for raw bytes.
    upgrade: bool

    @property
    def body_length(self) -> int:
        """The request body's length: buffered in ``body``, or still arriving (streamed,
        its bytes sent with send_raw as they come)."""

    def on_head(self, payload: bytes) -> None: ...

    def upstream_paused(self) -> None:
        """The app side has a full write buffer (a tunnel, a streamed body): stop reading
        the client."""

    def upstream_resumed(self) -> None:
        """... and has room again."""

    def on_body(self, payload: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_abort(self) -> None: ...

    def on_upstream_lost(self, exc: Exception | None = None) -> None: ...

    def on_bad_response(self, why: str) -> None: ...

    def flush(self) -> None: ...


log = logging.getLogger("ferryman")

#: Idle connections older than this are closed instead of reused: an app's own
#: keep-alive timeout may be closing them right now (generic apps: Ferryman's Node.js
#: loader turns Node's off, and its own loaders keep connections as long as asked).
IDLE_MAX = 2.0
#: How long opening a connection to an app process may take.
CONNECT_TIMEOUT = 10.0

#: Request headers that concern only the hop between client and core.
_HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"content-length",
        b"proxy-authorization",
    ]
)
#: The claims Ferryman sets itself for HTTP apps (merged with a trusted proxy's).
_FORWARDED = frozenset([b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"])
_RESPONSE_HOP_BY_HOP = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
     b"upgrade", b"proxy-authenticate"]
)  # fmt: skip


class AppConnection(asyncio.Protocol):
    """One connection to an app process; carries one exchange at a time."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.exchange: Responder | None = None
        self.closed = False
        #: Requests sent on this connection so far (a reused one may be stale).
        self.uses = 0
        self.idle_since = 0.0
        #: Reading is paused because the exchange's client is not keeping up.
        self.read_paused = False
        #: A request body still being written from a file (flow-controlled).
        self._pump: Iterator[bytes] | None = None
        self._write_paused = False
        #: After a 101: raw bytes pass both ways (client bytes through send_raw).
        self.tunnel = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pump = None
        self.upstream._forget(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.exchange is not None:
            self.exchange.upstream_paused()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.exchange is not None:
            self.exchange.upstream_resumed()
        self._run_pump()

    def send_raw(self, data: bytes) -> None:
        """Client bytes to the app as they are: a tunnel's, or a streamed body's."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- used by the exchange ----------------------------------------------------------

    def start(self, exchange: Responder) -> None:
        """Send ``exchange``'s request (may raise environ.BadTarget before sending anything)."""
        raise NotImplementedError

    def _send(self, head: bytes, exchange: Responder) -> None:
        """Send the request head, then its buffered body (streamed if spooled to a file)."""
        assert self.transport is not None
        self.exchange = exchange
        self.uses += 1
        body = exchange.body
        if body.in_memory:
            chunks = body.memory_chunks()
            if not chunks:
                self.transport.write(head)
            elif len(chunks) == 1 and len(chunks[0]) < 65536:
                self.transport.write(head + chunks[0])  # one small write: the common case
            else:
                self.transport.writelines([head, *chunks])  # no copy into one big buffer
        else:
            self.transport.write(head)
            self._pump = body.file_chunks()
            self._run_pump()

    def _run_pump(self) -> None:
        pump = self._pump
        transport = self.transport
        while pump is not None and not self._write_paused and transport is not None:
            if self.closed:
                self._pump = None
                return
            chunk = next(pump, None)
            if chunk is None:
                self._pump = None
                return
            transport.write(chunk)

    @property
    def request_sent(self) -> bool:
        """The whole request, body included, has been handed to the transport."""
        return self._pump is None and not self.closed

    def reusable(self) -> bool:
        """Whether the connection can carry another request once this response ended."""
        return self.request_sent

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def protocol_error(self, reason: str) -> None:
        """The app broke the protocol on this connection: say so, answer 502 to the request
        on it (if any), and close it — never reuse it."""
        log.warning(
            "Protocol error on a connection to app process %d: %s; closing it",
            self.upstream.pid,
            reason,
        )
        exchange = self.exchange
        if exchange is not None:
            exchange.on_bad_response(reason)  # a 502 (or a cut response), which closes us
        self.close()

    def close(self) -> None:
        """Close the connection; an exchange on it learns through connection_lost."""
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class SessionConnection(AppConnection):
    """The session protocol (docs/session-protocol.md) to one of Ferryman's loaders."""

    def __init__(self, upstream: Upstream) -> None:
        super().__init__(upstream)
        self.reader = FrameReader()

    def start(self, exchange: Responder) -> None:
        length = exchange.body_length
        self._send(encode_request(build_environ(exchange.head, length), length), exchange)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.protocol_error(f"it sent {len(data)} bytes while no request was open")
            return
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            self.protocol_error(f"invalid session protocol frame: {exc}")
            return
        for kind, payload in frames:
            if kind == FRAME_BODY:
                exchange.on_body(payload)
            elif kind == FRAME_HEAD_RESPONSE:
                exchange.on_head(payload)
            elif kind == FRAME_END:
                exchange.on_end()
                return
            elif kind == FRAME_ABORT:
                exchange.on_abort()
                return
            else:
                self.protocol_error(f"unknown session protocol frame type {kind!r}")
                return
        exchange.flush()


class HttpConnection(AppConnection):
    """HTTP/1.1 to an app that serves HTTP itself.

    The request is re-sent with its body de-chunked (Content-Length), hop-by-hop
    headers dropped, and ``X-Forwarded-For/-Proto/-Host`` set by Ferryman (kept
    from the client only when it is a trusted proxy). The response is parsed and
    handed to the exchange as a head (status line and end-to-end headers), body
    pieces and an end; a response without a length ends when the app closes.
    """

    def __init__(self, upstream: Upstream) -> None:
        super().__init__(upstream)
        self.parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._headers: list[bytes] = []
        self._keep_alive = True
        self._interim = False
        #: The response announced its length (Content-Length or chunked).
        self._framed = False
        #: The response's body runs until the connection closes (no length, not chunked).
        self._until_close = False
        self._head_seen = False
        #: A tunnel: the parser is done, bytes go to the exchange as they are.
        self._raw = False

    def start(self, exchange: Responder) -> None:
        head = exchange.head
        trusted = head.trusted
        lines = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
        # Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
        named = {
            token.strip().lower()
            for name, value in head.headers
            if name.lower() == b"connection"
            for token in value.split(b",")
        }
        outer_prefix = b""
        for name, value in head.headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower in named or header_key(name) is None:
                continue
            if is_client_claim(lower):
                if not trusted or lower in _FORWARDED:
                    continue  # only a trusted proxy may say who the client is; ours follow
                if lower == b"x-forwarded-prefix" and head.script_name:
                    outer_prefix = outer_prefix or value.split(b",")[0].strip()
                    continue  # one header, ours, that says both
            lines += (name, b": ", value, b"\r\n")
        host = head.host
        if not host:
            host = head.server_name + b":" + head.server_port
            lines += (b"Host: ", host, b"\r\n")
        lines += (b"X-Forwarded-For: ", head.client_addr, b"\r\n")
        lines += (b"X-Forwarded-Proto: ", head.scheme, b"\r\n")
        lines += (b"X-Forwarded-Host: ", head.forwarded_host or host, b"\r\n")
        script_name = head.script_name
        if script_name:  # mounted at a prefix: the app gets the full path, and this, after
            # the prefix a trusted proxy in front says it is mounted at itself, if any
            lines += (b"X-Forwarded-Prefix: ", outer_prefix.rstrip(b"/") + script_name, b"\r\n")
        size = exchange.body_length
        if size or head.method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            lines += (b"Content-Length: ", str(size).encode(), b"\r\n")
        if exchange.upgrade:
            # The hop-by-hop pair that asks this hop, to the app, for a WebSocket.
            lines.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
        lines.append(b"\r\n")
        self._reason = b""
        self._headers = []
        self._head_seen = False
        self._until_close = False
        self._framed = False
        self._send(b"".join(lines), exchange)

    # -- httptools callbacks --------------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in {b"content-length", b"transfer-encoding"}:
            self._framed = True  # noted before Transfer-Encoding is dropped below
        if lower not in _RESPONSE_HOP_BY_HOP:
            self._headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        parser = self.parser
        code = parser.get_status_code()
        exchange = self.exchange
        if code == 101 and exchange is not None and exchange.upgrade:
            # The app took the WebSocket: what follows the head is the tunnel's
            # (the parser stops with HttpParserUpgrade, see data_received).
            self._keep_alive = False
            self._head_seen = True
            self.tunnel = True
            exchange.on_head(
                b"101 "
                + (self._reason or b"Switching Protocols")
                + b"\r\n"
                + b"".join(self._headers)
            )
            return
        if code < 200:
            self._interim = True  # 1xx: a final response follows on the same connection
            self._reason = b""
            self._headers = []
            self._framed = False
            return
        self._interim = False
        self._keep_alive = parser.should_keep_alive()
        payload = b"%d %s\r\n" % (code, self._reason or b"Unknown") + b"".join(self._headers)
        self._until_close = not self._framed and code not in (204, 304)
        self._head_seen = True
        if exchange is None:
            return
        exchange.on_head(payload)
        if exchange.head_only:
            # httptools cannot be told a HEAD response has no body: end here, and do not
            # reuse a connection whose parser would wait for one.
            self._keep_alive = False
            self._until_close = False
            self._end()

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_body(body)

    def on_message_complete(self) -> None:
        if self.tunnel:
            return  # a 101's head is all: the tunnel follows
        if self._interim:
            self._interim = False
            return
        self._until_close = False
        self._end()

    def _end(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_end()

    def reusable(self) -> bool:
        return self._keep_alive and super().reusable()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.protocol_error(f"it sent {len(data)} bytes while no request was open")
            return
        if self._raw:
            exchange.on_body(data)  # a tunnel: the app's bytes as they are
            exchange.flush()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self.tunnel:
                self.protocol_error("it switched protocols without being asked to")
                return
            self._raw = True
            rest = data[exc.args[0] :] if exc.args else b""
            if rest and self.exchange is exchange:
                exchange.on_body(rest)
        except httptools.HttpParserError as exc:
            self.protocol_error(f"invalid HTTP response: {exc}")
            return
        if self.exchange is exchange:
            exchange.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._until_close and self._head_seen and self.exchange is not None:
            # The body of a response without a length ends with the connection.
            self._keep_alive = False
            self._until_close = False
            self.closed = True
            self.exchange.flush()
            self._end()
        super().connection_lost(exc)


class Upstream:
    """The connection pool to one app process (Unix socket path or loopback TCP port)."""

    def __init__(
        self, address: str | tuple[str, int], protocol: str, max_idle: int, pid: int = 0
    ) -> None:
        self.address = address
        #: The app process's pid, for the log.
        self.pid = pid
        self.protocol = protocol
        self.factory: type[AppConnection] = (
            SessionConnection if protocol == "session" else HttpConnection
        )
        self.max_idle = max_idle
        self.idle: list[AppConnection] = []
        self.connections: set[AppConnection] = set()
        #: False once the process is retired: connections are then closed, not reused.
        self.enabled = True

    def take_idle(self) -> AppConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if time.monotonic() - conn.idle_since > IDLE_MAX:
                conn.close()
                continue
            return conn
        return None

    async def connect(self) -> AppConnection:
        loop = asyncio.get_running_loop()
        factory = self.factory
        address = self.address
        if isinstance(address, str):
            opening = loop.create_unix_connection(lambda: factory(self), address)
        else:
            opening = loop.create_connection(lambda: factory(self), *address)
        _, conn = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
        if not self.enabled:
            conn.close()
            raise ConnectionRefusedError("the process was retired while connecting")
        self.connections.add(conn)
        return conn

    def release(self, conn: AppConnection) -> None:
        """The exchange on ``conn`` ended cleanly: keep it for the next one if we can."""
        conn.exchange = None
        conn.resume_reading()  # the next exchange starts with the flow open
        if self.enabled and conn.reusable() and len(self.idle) < self.max_idle:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()

    def _forget(self, conn: AppConnection) -> None:
        self.connections.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def close_all(self) -> None:
        self.enabled = False
        for conn in list(self.connections):
            conn.close()
        self.idle.clear()


#: Idle keep-alive connections kept per process when its concurrency is unlimited.
UNLIMITED_IDLE_CONNECTIONS = 64


class Upstreams:
    """The connection pools of every app process, by process.

    The supervisor opens one when a process is ready and closes it when the process is
    retired or gone (through core's wiring); exchanges look theirs up per request.
    """

    def __init__(self) -> None:
        self._by_process: dict[Process, Upstream] = {}

    def open(
        self, process: Process, address: str | tuple[str, int], protocol: str, concurrency: int
    ) -> None:
        idle = concurrency if concurrency > 0 else UNLIMITED_IDLE_CONNECTIONS
        self._by_process[process] = Upstream(address, protocol, idle, process.pid)

    def close(self, process: Process) -> None:
        upstream = self._by_process.pop(process, None)
        if upstream is not None:
            upstream.close_all()

    def of(self, process: Process) -> Upstream | None:
        return self._by_process.get(process)

    def __len__(self) -> int:
        return len(self._by_process)
