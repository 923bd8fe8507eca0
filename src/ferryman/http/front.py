"""The HTTP front: client connections, parsing (httptools) and connection policy.

Parsing and policy are kept apart: httptools calls ``on_*`` with the bytes it
found; this module decides about limits, timeouts, keep-alive and pipelining,
and hands each complete request to an ``Exchange``.

Rules the code keeps:
1. Responses go out in request order; at most ``PIPELINE_DEPTH`` requests wait
   behind the one being answered, then reading pauses.
2. A request head larger than ``max_header_size`` gets 431, a body larger than
   ``max_body_size`` gets 413 (at once when Content-Length says so), malformed
   input gets 400; each of these closes the connection.
3. One timer per connection, re-armed lazily (see ``_arm``): header timeout while
   a head arrives, body timeout between body pieces, keep-alive timeout when idle.
4. On shutdown, idle connections close at once; busy ones close after the
   response they are working on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import httptools

from ..alerts import Alert
from ..config import UNIX_PEERS, Config, ProxyNetworks
from .body import SPOOL_THRESHOLD
from .chunked import ChunkedBody, ChunkError
from .exchange import CLIENT_CLOSED, FORWARDING, Exchange
from .exchange import DONE as DONE_STATE
from .listener import FD_ALERT_SUMMARY, Listener, open_for
from .proxy_protocol import (
    MAX_V2_LENGTH,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
)
from .proxy_protocol import parse as parse_proxy_header
from .request import RequestHead, is_trusted
from .response import simple_response
from .site import Site
from .spool import SpoolBudget, SpoolFull
from .target import TargetError, absolute_to_origin
from .tls import (
    Certificates,
    answer_plain_http,
    first_byte,
    is_plain_http,
    readable,
    speaks_tls,
)

log = logging.getLogger("ferryman")

PIPELINE_DEPTH = 16
CLIENT_WRITE_HIGH_WATER = 1024 * 1024
#: How often, at most, a client that takes no bytes is looked at (send_timeout).
SEND_CHECK_INTERVAL = 5.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# The request headers the front acts on, each a bit in ``ClientConnection._seen``.
_HOST, _LENGTH, _EXPECT, _CHUNKED, _UPGRADE, _CLOSE = 1, 2, 4, 8, 16, 32
#: Fields that may appear once (RFC 9110 5.3: not list-based): a second one is a 400,
#: never joined, so that two parties cannot read two different values.
_SINGLETON_NAMES = [
    b"host", b"content-length", b"content-type", b"authorization", b"proxy-authorization",
    b"range", b"if-range", b"if-modified-since", b"if-unmodified-since", b"max-forwards",
    b"referer", b"date", b"from",
]  # fmt: skip
_NOTED: dict[bytes, int] = {
    b"expect": _EXPECT, b"transfer-encoding": _CHUNKED, b"upgrade": _UPGRADE,
    b"connection": _CLOSE,
}  # fmt: skip
_NOTED.update((name, 1 << (i + 6)) for i, name in enumerate(_SINGLETON_NAMES))
_NOTED[b"host"] = _HOST
_NOTED[b"content-length"] = _LENGTH
_SINGLETONS = 0
for _name in _SINGLETON_NAMES:
    _SINGLETONS |= _NOTED[_name]
_NOTED_SIZES = frozenset(len(name) for name in _NOTED)
#: Only these versions are served; 0.9 has no head to answer with, 2 and 3 are other
#: protocols (RFC 9110 15.6.6: 505).
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e]+ HTTP/1\.[01]\r\n")
_BWS = frozenset(b" \t")
#: A Host value (RFC 9112 3.2): uri-host [ ":" port ]; anything else gets 400.
_HOST_VALUE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
#: Host values already checked (short ones, a bounded number): most requests name a few.
_GOOD_HOSTS: set[bytes] = set()
_GOOD_HOSTS_LIMIT = 256
_GOOD_HOST_MAX_SIZE = 64
#: A closing connection reads and drops what the client still sends for this long, and
#: this much (RFC 9112 9.6: a staged close), so that the response is not lost to a reset.
LINGER_TIME = 2.0
LINGER_LIMIT = 1024 * 1024
_NO_ROOM = b"Service Unavailable: no room to store the request body now.\n"


class _TakeChunkedBody(Exception):
    """Raised in on_headers_complete to stop the parser: the front decodes the body."""


class _Refuse(Exception):
    """Raised inside a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, message: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.message = message


class FrontServer:
    """The listening sockets and every client connection on them."""

    def __init__(self, config: Config, site: Site) -> None:
        self.config = config
        #: The apps it serves, and which one a request goes to.
        self.site = site
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.listeners: list[Listener] = []
        #: Accepted sockets being turned into connections (tasks kept until done).
        self._accepting: set[asyncio.Task[object]] = set()
        #: Those of them still in their TLS handshake (no request yet: cancelled on stop).
        self._handshakes: set[asyncio.Task[object]] = set()
        self.trusted_proxies: ProxyNetworks = config.trusted_proxies
        #: Some app takes some request bodies as they arrive (--no-buffer-request-bodies,
        #: --unbuffered-request-path): only then is a request routed as its head ends.
        self.streams_some = any(app.stream_bodies or app.stream_paths for app in site.apps)
        self.server_name = b"localhost"
        self.server_port = b"80"
        #: A connection's timer fires at least this often while a deadline is set.
        self.check_every = min(config.header_timeout, config.body_timeout, config.keepalive_timeout)
        #: Running out of file descriptors (accept, or connecting to an app process).
        self.fd_alert = Alert(FD_ALERT_SUMMARY)
        #: What request bodies may hold, in memory and in temp files, across connections.
        self.spool = SpoolBudget(config.max_spool_size)
        self.spool_alert = Alert(
            "Answered 503 to %d more request body(ies) because max_spool_size was reached"
        )
        self.closing = False
        self._drained: asyncio.Future[None] | None = None
        #: --max-request-time, and the timer of the next look at the requests in flight.
        self._request_time = 0.0
        self._request_timer: asyncio.TimerHandle | None = None
        #: The Unix socket file is removed by whoever bound it (listen(), or the watchdog).
        self._owns_socket_file = False
        #: The TLS context of the TLS listeners (--ssl), reloaded on SIGHUP.
        self.certificates: Certificates | None = None
        #: --proxy-protocol: every connection starts with a PROXY header (ProxyPreamble),
        #: read before the connection becomes a ClientConnection.
        self.proxy_protocol = config.proxy_protocol
        self.preambles: set[ProxyPreamble] = set()
        self.proxy_alert = Alert(
            "Refused %d more connection(s) for their PROXY protocol header (--proxy-protocol)"
        )

    def listen(self, socks: list[socket.socket] | None = None) -> list[str]:
        """Serve on ``socks`` (the watchdog's, inherited), or bind the ones the config asks
        for (then a Unix socket file is ours to remove); returns the addresses, e.g.
        ``http://127.0.0.1:3000``. Raises ConfigError or OSError as ``open_for``."""
        config = self.config
        if socks is None:
            socks = open_for(config)
            self._owns_socket_file = bool(config.socket)
        urls = []
        tls = [speaks_tls(config, sock) for sock in socks]
        # For requests without a Host: the plain port's address when there is one.
        plain_tcp = any(
            not secure and other.family != socket.AF_UNIX
            for other, secure in zip(socks, tls, strict=True)
        )
        for sock, secure in zip(socks, tls, strict=True):
            if sock.family == socket.AF_UNIX:
                urls.append(f"unix:{sock.getsockname()}")
                continue
            host, port = sock.getsockname()[:2]
            if not secure or not plain_tcp:
                self.server_name = host.encode()
                self.server_port = str(port).encode()
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            urls.append(f"{'https' if secure else 'http'}://{shown}:{port}")
        try:
            if any(tls):
                self.certificates = Certificates(config)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        for i, sock in enumerate(socks):
            try:
                accepted = self._accepted_tls if tls[i] else self._accepted
                self.listeners.append(Listener(sock, accepted, self.fd_alert))
            except BaseException:
                for rest in socks[i:]:
                    rest.close()
                raise
        return urls

    def _accepted(self, sock: socket.socket) -> None:
        factory: Callable[[], asyncio.Protocol]
        if self.proxy_protocol:
            factory = lambda: ProxyPreamble(self)  # noqa: E731
        else:
            factory = lambda: ClientConnection(self)  # noqa: E731
        task: asyncio.Task[object] = self.loop.create_task(
            self.loop.connect_accepted_socket(factory, sock)
        )
        self._accepting.add(task)
        task.add_done_callback(lambda done: self._connection_ready(done, sock))

    def _accepted_tls(self, sock: socket.socket) -> None:
        task: asyncio.Task[object] = self.loop.create_task(self._tls_connection(sock))
        self._accepting.add(task)
        self._handshakes.add(task)
        task.add_done_callback(lambda done: self._connection_ready(done, sock))

    async def _tls_connection(self, sock: socket.socket) -> object:
        """A connection to a TLS port: the handshake (all within header_timeout), then the
        same HTTP as on a plain port. A plain HTTP request gets a plain 400; a failed
        handshake (an old TLS version, a client gone) closes the socket (as the caller
        does on every exception)."""
        certificates = self.certificates
        assert certificates is not None
        loop = self.loop
        started = loop.time()
        header: ProxyHeader | None = None
        if self.proxy_protocol:
            # The balancer's PROXY header comes before the TLS handshake: read from the
            # socket, exactly its bytes, so that the handshake starts where it ends.
            header = await self._proxy_header_before_tls(sock)
            if header is None:
                sock.close()
                return None
        left = self.config.header_timeout - (loop.time() - started)
        first = await first_byte(loop, sock, max(0.1, left))
        if first < 0 or is_plain_http(first):
            if first >= 0:
                answer_plain_http(sock)
            sock.close()
            return None

        def connection() -> ClientConnection:
            conn = ClientConnection(self, b"https")
            conn.proxy_header = header
            return conn

        return await loop.connect_accepted_socket(
            connection,
            sock,
            ssl=certificates.context,
            ssl_handshake_timeout=max(0.1, self.config.header_timeout - (loop.time() - started)),
        )

    async def _proxy_header_before_tls(self, sock: socket.socket) -> ProxyHeader | None:
        """The PROXY header at the start of ``sock``, its bytes taken off the socket and
        nothing after them; None (after saying why, as ProxyPreamble does) when the peer
        may not send one or sends something else, or not all of one in header_timeout."""
        try:
            where, trusted = peer_trust(sock.getpeername(), self.trusted_proxies)
        except OSError:
            return None  # gone already
        if not trusted:
            self.refuse_proxy(where, NOT_A_TRUSTED_PROXY)
            return None
        try:
            return await asyncio.wait_for(
                read_proxy_header(self.loop, sock), self.config.header_timeout
            )
        except ProxyHeaderError as exc:
            self.refuse_proxy(where, str(exc))
        except TimeoutError:
            self.refuse_proxy(where, "no complete PROXY header within header_timeout")
        except OSError:
            pass  # the connection broke: nothing to say
        return None

    def refuse_proxy(self, peer: str, why: str) -> None:
        """Say (rate-limited) why a connection under --proxy-protocol was closed."""
        self.proxy_alert.fire(self.loop.time(), "Refused a connection from %s: %s", peer, why)

    def reload_certificates(self) -> None:
        """SIGHUP: new TLS connections get the certificate and key the files hold now."""
        certificates = self.certificates
        if certificates is not None:
            certificates.reload()

    def _connection_ready(self, task: asyncio.Task[object], sock: socket.socket) -> None:
        self._accepting.discard(task)
        self._handshakes.discard(task)
        if task.cancelled() or task.exception() is not None:
            # No transport was made (the socket is still ours), or a TLS one that failed
            # its handshake closed it already (it detaches the socket: this is a no-op).
            sock.close()

    def stop_accepting(self) -> None:
        self.closing = True
        for listener in self.listeners:
            listener.close()
        for task in list(self._handshakes):
            task.cancel()  # the transport closes the socket (see _connection_ready)
        for preamble in list(self.preambles):
            preamble.close()  # no request yet: nothing to finish
        for conn in list(self.connections):
            conn.shutdown()

    async def drained(self, timeout: float) -> bool:
        """Wait until every connection is closed; False if ``timeout`` ran out first."""
        if self._accepting:
            await asyncio.wait(self._accepting, timeout=timeout)
        if self.connections:
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except TimeoutError:
                return False
        return True

    def remove_socket_file(self) -> None:
        """Remove the Unix socket file we listened on (after the listeners are closed),
        unless it is the watchdog's."""
        path = self.config.socket
        if path and self.listeners and self._owns_socket_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def watch_request_time(self, limit: float) -> None:
        """Time out the requests an app process works on for ``limit`` seconds or more
        (--max-request-time). One timer for all of them, looking often enough to answer
        within a tenth of the limit (at most every 50 ms): no timer per request."""
        self._request_time = limit
        self._request_timer = self.loop.call_later(_sweep_interval(limit), self._sweep_requests)

    def _sweep_requests(self) -> None:
        limit = self._request_time
        due = self.loop.time() - limit
        late = [
            exchange
            for conn in self.connections
            for exchange in conn.pipeline
            if exchange.state == FORWARDING and exchange.forwarded_at <= due
        ]
        for exchange in late:
            exchange.time_out(limit)
        self._request_timer = self.loop.call_later(_sweep_interval(limit), self._sweep_requests)

    def close_alerts(self) -> None:
        """The front's periodic work ends: its alerts, its request-time watch."""
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        self.fd_alert.close()
        self.spool_alert.close()
        self.proxy_alert.close()
        for app in self.site.apps:
            app.queue_full_alert.close()

    def spool_full(self, remote_addr: bytes, size: int) -> None:
        self.spool_alert.fire(
            self.loop.time(),
            "503 for a request body from %s: it needs %d bytes of temp files and "
            "max_spool_size (%d) is reached (%d bytes spooled by all connections now)",
            remote_addr.decode(),
            size,
            self.spool.max_disk,
            self.spool.disk,
        )

    def abort_all(self) -> None:
        for preamble in list(self.preambles):
            preamble.close()
        for conn in list(self.connections):
            conn.abort()

    def _forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


def peer_trust(peer: object, networks: ProxyNetworks) -> tuple[str, bool]:
    """(the peer's address, for the log; whether it is a trusted proxy) of a peer as the
    socket names it: (address, port...) over TCP, a path (str) over a Unix socket."""
    if isinstance(peer, tuple):
        return peer[0], is_trusted(peer[0], networks)
    return "unix", UNIX_PEERS in networks


NOT_A_TRUSTED_PROXY: Final = "it is not in trusted_proxies, so it may not send a PROXY header"
#: The longest PROXY header there is to read (v2's fixed 16 bytes and its bounded rest).
MAX_PROXY_HEADER: Final = 16 + MAX_V2_LENGTH


class ProxyPreamble(asyncio.Protocol):
    """A connection's start under --proxy-protocol: its PROXY header (proxy_protocol.py).

    Only a trusted peer (--trusted-proxies: the load balancer) may send one; any other
    peer's connection is closed at once, unread. Once the header is whole, the
    connection is handed to a ClientConnection, as if just made, with the client the
    header names as its peer; the bytes after the header (the request, when both came
    in one packet) go to it. A peer that sends something else, or not all of a header
    within header_timeout, is closed with nothing served: when the option is on, the
    header is required, as nginx and HAProxy require it.

    Who is trusted afterwards: the relayed client, only if its own address is in
    --trusted-proxies. The balancer being trusted does not make the client behind it
    so: in TCP mode the balancer passes the client's bytes as they are, so an
    X-Forwarded-For in them is the client's own claim, and is dropped like any
    untrusted peer's. A header that names no client (v1 UNKNOWN, v2 over a Unix
    socket or an unspecified family) leaves the balancer's address, untrusted for the
    same reason; only v2 LOCAL (the balancer's own connection, e.g. a health check)
    keeps the balancer as the trusted peer.
    """

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.reader = ProxyHeaderReader()
        self.transport: asyncio.Transport | None = None
        #: The peer's address, for the log ("unix" on a Unix socket).
        self.peer = ""
        self.received = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        peer = transport.get_extra_info("peername")
        if peer is None:
            # A TCP peer that left already (getpeername: ENOTCONN); a Unix peer's is a str.
            transport.close()
            return
        self.peer, trusted = peer_trust(peer, server.trusted_proxies)
        if not trusted:
            self._refuse(NOT_A_TRUSTED_PROXY)
            return
        if server.closing:
            transport.close()  # accepted just before the server stopped accepting
            return
        server.preambles.add(self)
        self._timer = server.loop.call_later(server.config.header_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            header = self.reader.feed(data)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            self._hand_over(header)

    def _hand_over(self, header: ProxyHeader) -> None:
        self._forget()
        transport = self.transport
        assert transport is not None
        server = self.server
        conn = ClientConnection(server)
        transport.set_protocol(conn)
        conn.proxy_header = header  # the client it names, instead of the balancer
        conn.connection_made(transport)
        rest = self.reader.rest
        if rest and not conn.closing:
            conn.data_received(rest)

    def _timed_out(self) -> None:
        self._timer = None
        if self.received:
            self._refuse("no complete PROXY header within header_timeout")
        else:
            self.close()  # opened and never used: closed as any idle connection, quietly

    def _refuse(self, why: str) -> None:
        self.server.refuse_proxy(self.peer, why)
        self.close()

    def close(self) -> None:
        self._forget()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _forget(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.preambles.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()


async def read_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> ProxyHeader:
    """The PROXY header at the start of ``sock`` (non-blocking), taken off the socket to
    its last byte and not one byte more (a TLS handshake follows it). Raises
    ProxyHeaderError for anything else, OSError if the connection breaks or closes.

    Bytes are looked at with MSG_PEEK; while the header is incomplete every byte seen
    belongs to it, so they are taken (a byte left in the socket would keep it readable,
    and the wait would spin); once it is complete, exactly its rest is taken."""
    fd = sock.fileno()
    taken = b""
    while True:
        await readable(loop, fd)
        try:
            seen = sock.recv(MAX_PROXY_HEADER, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not seen:
            raise ConnectionResetError("the peer closed before its PROXY header ended")
        header = parse_proxy_header(taken + seen)
        if header is None:
            taken += sock.recv(len(seen))
            continue
        rest = header.length - len(taken)
        if rest > 0 and len(sock.recv(rest)) != rest:  # peeked: all there
            raise ConnectionResetError("the PROXY header could not be read whole")
        return header


#: Bytes a client may send after a WebSocket upgrade request before the app accepts it.
MAX_EARLY_TUNNEL_BYTES = 64 * 1024


def _asks_for_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's Upgrade header names websocket (RFC 6455 4.1)."""
    for name, value in headers:
        if name.lower() == b"upgrade":
            return any(t.strip().lower() == b"websocket" for t in value.split(b","))
    return False


def _sweep_interval(limit: float) -> float:
    """How often --max-request-time looks at the requests in flight."""
    return min(1.0, max(0.05, limit / 10))


def new_parser(protocol: object) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    # "5 ;ext" (whitespace before a chunk extension) is BWS in RFC 9112 7.1.1. Safe here:
    # bodies are re-framed with a Content-Length before they go on, so no second parser
    # ever reads this chunked framing.
    parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)
    return parser


class ClientConnection(asyncio.Protocol):
    """One client's connection: parser glue, limits, timeouts, pipelining."""

    def __init__(self, server: FrontServer, scheme: bytes = b"http") -> None:
        self.server = server
        self.site = server.site
        #: b"https" on a TLS connection: what the app is told unless a trusted proxy says.
        self.scheme = scheme
        #: --proxy-protocol on a TLS port: the header read before the handshake, taken in
        #: connection_made (on a plain port ProxyPreamble gives it with take_proxy_header).
        self.proxy_header: ProxyHeader | None = None
        config = server.config
        self.max_header_size = config.max_header_size
        self.max_body_size = config.max_body_size
        #: Bodies with a length may go to the app as they arrive (per app and path).
        self.stream_bodies = server.streams_some
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.min_body_rate = config.min_body_rate
        self.spool = server.spool
        self.fd_alert = server.fd_alert
        self.keepalive_timeout = config.keepalive_timeout
        self.send_timeout = config.send_timeout
        self.max_response_buffer = config.max_response_buffer
        #: While writing is paused: when the client last took bytes, and how many we held.
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_since = 0.0
        self._send_mark = 0
        self._send_check = min(config.send_timeout / 4, SEND_CHECK_INTERVAL)
        # What the parser callbacks note about the request head being parsed.
        self._head_bytes = 0
        #: Bits of the noted headers seen so far (_HOST, _LENGTH, singletons...).
        self._seen = 0
        self._length = -1
        self._expect: bytes | None = None
        #: The request asks for an upgrade that is not tunnelled: served as plain HTTP.
        self._upgrade = False
        #: Bytes of the trailer section so far (bounded like a head).
        self._trailer_bytes = 0
        #: Why a parser callback stopped the parser (see _stop).
        self._stopped: _Refuse | _TakeChunkedBody | None = None
        #: The chunked body being decoded by the front (see chunked.py), if any.
        self._chunked: ChunkedBody | None = None
        #: The Transfer-Encoding values of the head being parsed.
        self._te = b""
        #: The head being parsed: its target, its headers and its Host.
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._host = b""
        #: The body's rate window: loop time it started (0 = not measuring), bytes since.
        self._rate_from = 0.0
        self._rate_bytes = 0
        #: A 100 Continue owed to the request being parsed, once earlier responses are out.
        self._continue_owed = False
        #: We closed (or aborted) the transport; nothing more may be written.
        self._write_closed = False
        #: An unknown method's request line, gathered until it is whole (to judge it).
        self._method_line: bytes | None = None
        #: The bytes from the start of the message being parsed (while its head arrives),
        #: and how many messages were complete when it started.
        self._line_start = b""
        self._line_start_at = -1
        #: Our side is closed; the client's input is read and dropped (see _close).
        self._lingering = False
        self._lingered = 0
        self.loop = server.loop
        self.parser = new_parser(self)
        self.transport: asyncio.Transport | None = None
        self.remote_addr = b""
        self.remote_port = b""
        self.trusted = False
        #: Complete requests in order; the first one is being answered.
        self.pipeline: deque[Exchange] = deque()
        #: The request being parsed, if its head or body is still arriving.
        self.current: Exchange | None = None
        self.head_size = 0
        self.head_complete = False
        #: Requests read whole on this connection so far.
        self.completed = 0
        #: No more requests will be read: close once the pipeline is answered.
        self.closing = False
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        #: A 4xx answer owed once the earlier pipelined requests are answered.
        self._refusal: tuple[int, bytes, bool] | None = None
        #: A WebSocket upgrade request read whole, waiting for the app's answer; the
        #: client's bytes after it (bounded), held until then.
        self._tunnel_pending: Exchange | None = None
        self._early = b""
        #: The app accepted the upgrade: the client's bytes go to this exchange as they are.
        self.tunnel: Exchange | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=CLIENT_WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.remote_addr = peer[0].encode()
            self.remote_port = str(peer[1]).encode()
            networks = self.server.trusted_proxies
            self.trusted = bool(networks) and is_trusted(peer[0], networks)
        else:
            # Unix socket: the peer is a local process, normally the reverse proxy; it is
            # believed only when the operator says so (--trusted-proxies unix).
            self.remote_addr = b"127.0.0.1"
            self.remote_port = b"0"
            self.trusted = UNIX_PEERS in self.server.trusted_proxies
        header = self.proxy_header
        if header is not None:
            self.take_proxy_header(header)
        self.server.connections.add(self)
        self._arm(self.header_timeout)
        if self.server.closing:
            self.shutdown()  # accepted just before the server stopped accepting

    def take_proxy_header(self, header: ProxyHeader) -> None:
        """The client is the one the balancer's PROXY header names (see ProxyPreamble for
        who is trusted then)."""
        source = header.source
        if source is not None:
            address, port = source
            self.remote_addr = address.encode()
            self.remote_port = str(port).encode()
            self.trusted = is_trusted(address, self.server.trusted_proxies)
        elif not header.local:
            self.trusted = False

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_data(data)
            return
        # (Through a local: a test of the attribute itself would let mypyc take it as None
        # for the rest of this method, though the parser's callbacks below may set it.)
        pending = self._tunnel_pending
        if pending is not None:
            # Sent before the app accepted (a client should wait for the 101): kept for it,
            # within bounds; reading is paused meanwhile, so little can come.
            self._early += data
            if len(self._early) > MAX_EARLY_TUNNEL_BYTES:
                self.abort()
            return
        if self._method_line is not None:
            self._method_line += data
            self._judge_method_line()
            return
        if self._chunked is not None:
            self._decode_chunked(data)
            return
        if self.closing:
            if self._lingering:
                self._lingered += len(data)
                if self._lingered > LINGER_LIMIT and self.transport is not None:
                    self.transport.abort()  # it keeps sending: enough
            return
        starts_message = self.current is None
        completed = self.completed
        take_body = False
        if starts_message:
            # The next message starts at data[0]: kept (a reference, no copy) to judge its
            # request line if the parser refuses its method.
            self._line_start = data
            self._line_start_at = completed
        elif not self.head_complete and len(self._line_start) <= self.max_header_size:
            self._line_start += data  # a head in pieces (rare)
        if starts_message or not self.head_complete:
            self.head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0] :] if exc.args else b""
            if self._tunnel_pending is not None:
                self._early = rest  # no more HTTP on this connection: a tunnel, or a close
                self._pause_reading()
                if len(rest) > MAX_EARLY_TUNNEL_BYTES:
                    self.abort()
                return
            self._upgrade_ignored(rest)
            return
        except httptools.HttpParserCallbackError as exc:
            # Why a callback stopped the parser is noted on the connection: the exception
            # itself is not chained when this runs inside another handler.
            stopped, self._stopped = self._stopped, None
            if isinstance(stopped, _TakeChunkedBody):
                take_body = True  # carried on below, outside this handler
            elif isinstance(stopped, _Refuse):
                self._refuse(stopped.status, stopped.message)
                return
            else:
                log.error("internal error while parsing a request", exc_info=exc.__context__)
                self._refuse(500, b"Internal Server Error\n")
                return
        except httptools.HttpParserInvalidMethodError:
            self._unknown_method()
            return
        except httptools.HttpParserError as exc:
            if "Invalid method for HTTP" in str(exc):  # an RTSP method (DESCRIBE...)
                self._unknown_method()
                return
            if "PRI" in str(exc):  # the HTTP/2 connection preface
                self._refuse(505, b"HTTP Version Not Supported: this port speaks HTTP/1.1.\n")
                return
            self._refuse(400, b"Bad Request: " + str(exc).encode("utf-8", "replace") + b"\n")
            return
        if take_body:
            # Outside the except clause: whatever the next requests raise must not be
            # chained to the exception that stopped the parser.
            head = self._line_start
            self._chunked = ChunkedBody(self.max_header_size)
            self._upgrade = False  # served as plain HTTP once its body is read
            self._decode_chunked(head[head.find(b"\r\n\r\n") + 4 :])
            return
        if self.current is not None and not self.head_complete:
            if self.head_size > self.max_header_size:
                self._refuse(431, b"Request Header Fields Too Large\n")
            elif starts_message and not self.pipeline:
                # A head in pieces: it has header_timeout from its first byte, not from
                # each piece (so a slow sender cannot stretch it).
                self._arm(self.header_timeout)

    def _stop(self, status: int, message: bytes) -> _Refuse:
        """The exception a parser callback raises to refuse the request (noted first)."""
        stopped = self._stopped = _Refuse(status, message)
        return stopped

    def _stop_for_chunked_body(self) -> _TakeChunkedBody:
        stopped = self._stopped = _TakeChunkedBody()
        return stopped

    def _decode_chunked(self, data: bytes) -> None:
        """Body bytes of a chunked request, until it ends; then the parser goes on with a
        fresh start on whatever follows (the next request)."""
        decoder = self._chunked
        assert decoder is not None
        try:
            used = decoder.feed(data, self.on_body)
        except ChunkError as exc:
            self._chunked = None
            self._refuse(exc.status, exc.message)
            return
        except _Refuse as refusal:  # from on_body: too large, no room
            self._chunked = None
            self._stopped = None
            self._refuse(refusal.status, refusal.message)
            return
        if not decoder.done:
            return
        self._chunked = None
        self.parser = new_parser(self)
        self.on_message_complete()
        rest = data[used:]
        if rest:
            self.data_received(rest)

    def _unknown_method(self) -> None:
        """A method the parser does not know. When its request line is well-formed, it is a
        method Ferryman does not implement (RFC 9110 9.1: 501); anything else is malformed.
        The line is judged once it is whole (it may come in pieces)."""
        if self._line_start_at == self.completed:  # we hold the message from its start
            self._method_line = self._line_start
            self._judge_method_line()
        else:
            self._refuse(400, b"Bad Request: invalid request method.\n", method_known=False)

    def _judge_method_line(self) -> None:
        """An unknown method: 501 if its request line is well-formed, else 400."""
        line = self._method_line
        assert line is not None
        if line.find(b"\n") < 0 and len(line) <= self.max_header_size:
            return  # the rest of the line is still to come
        self._method_line = None
        if _REQUEST_LINE.match(line):
            self._refuse(501, b"Not Implemented: unknown request method.\n", method_known=False)
        else:
            self._refuse(400, b"Bad Request: invalid request method.\n", method_known=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closing = True
        self._cancel_timer()
        current = self.current
        self.current = None
        if current is not None:
            current.cancel()
        self._drop_pipeline()
        self.server._forget(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.send_timeout and self._send_timer is None and self.transport is not None:
            self._send_since = self.loop.time()
            self._send_mark = self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(self._send_check, self._check_send)
        if self.pipeline:
            self.pipeline[0].client_paused()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.pipeline:
            self.pipeline[0].client_resumed()

    def _check_send(self) -> None:
        """While the client takes nothing of what we write, count; past send_timeout, close."""
        self._send_timer = None
        if not self.writing_paused or self.closed or self.transport is None:
            return
        now = self.loop.time()
        size = self.transport.get_write_buffer_size()
        if size < self._send_mark:  # it took some bytes: it is slow, not gone
            self._send_mark = size
            self._send_since = now
        elif now - self._send_since >= self.send_timeout:
            log.info(
                "499: %s took no bytes of a response for %.0fs (send_timeout); closing the "
                "connection",
                self.remote_addr.decode(),
                now - self._send_since,
            )
            if self.pipeline:
                self.pipeline[0].status = CLIENT_CLOSED
            self.abort()
            return
        self._send_timer = self.loop.call_later(self._send_check, self._check_send)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Exchange(self, self.site, self.spool)
        self.head_complete = False
        self._head_bytes = 0
        self._seen = 0
        self._length = -1
        self._expect = None
        self._upgrade = False
        self._trailer_bytes = 0
        self._target = b""
        self._headers = []
        self._host = b""
        self._te = b""
        # The header deadline is set by data_received, and only if the head did not come
        # whole: most do, and their next deadline (keep-alive) is set once, at the end.

    def on_url(self, url: bytes) -> None:
        at_start = self._line_start_at == self.completed  # the message began the packet
        if (
            not self._target
            # The packet's first byte says whether to look; a message pipelined behind
            # another in the same packet is looked at (found by the fuzz target).
            and (self._line_start[:1] == b"P" or not at_start)
            and self.parser.get_method() == b"PRI"
        ):
            # An HTTP/2 connection preface (or the like): the parser would wait for
            # the rest of one; this port speaks HTTP/1.
            raise self._stop(505, b"HTTP Version Not Supported: this port speaks HTTP/1.1.\n")
        self._target += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_complete:
            # A field of the trailer section, after a chunked body. Trailers never become
            # headers (they would let a client add Host, Authorization or X-Forwarded-For
            # where nothing checks them): they are dropped, and bounded like a head.
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self.max_header_size:
                raise self._stop(431, b"Request Header Fields Too Large\n")
            return
        if value and value[-1] in _BWS:
            value = value.rstrip(b" \t")  # RFC 9110 5.5: surrounding whitespace is not value
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        # Note the few headers the front itself acts on (by length first: it is cheap).
        if len(name) in _NOTED_SIZES:
            bit = _NOTED.get(name.lower(), 0)
            if bit:
                if bit == _CLOSE:
                    # "close" among the Connection options ends the connection, whatever
                    # else is there (RFC 9112 9.3; the parser lets keep-alive win in 1.0).
                    if b"close" not in [t.strip() for t in value.lower().split(b",")]:
                        return
                elif bit & self._seen & _SINGLETONS:
                    raise self._stop(
                        400, b"Bad Request: repeated " + name.lower() + b" header field.\n"
                    )
                self._seen |= bit
                if bit == _HOST:
                    self._host = value
                elif bit == _LENGTH:
                    self._length = int(value) if value.isdigit() else -1
                elif bit == _EXPECT:
                    self._expect = value.lower()
                elif bit == _CHUNKED:
                    self._te = value if not self._te else self._te + b"," + value

    def on_headers_complete(self) -> None:
        current = self.current
        assert current is not None
        parser = self.parser
        self.head_complete = True
        if self._head_bytes > self.max_header_size:
            raise self._stop(431, b"Request Header Fields Too Large\n")
        method = parser.get_method()
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            if parser.get_http_version() == "0.9":
                raise self._stop(400, b"Bad Request: HTTP/0.9 is not served.\n")
            raise self._stop(505, b"HTTP Version Not Supported: this port speaks HTTP/1.1.\n")
        current.keep_alive = parser.should_keep_alive() and not self._seen & _CLOSE
        current.head_only = method == b"HEAD"
        if version == b"1.0" and self._seen & _CHUNKED:
            # RFC 9112 6.1: Transfer-Encoding in 1.0 means the framing is faulty.
            raise self._stop(400, b"Bad Request: Transfer-Encoding in an HTTP/1.0 request.\n")
        if not self._seen & _HOST and version == b"1.1":
            # RFC 9112 3.2: exactly one Host in HTTP/1.1 (a second one was refused already).
            raise self._stop(400, b"Bad Request: an HTTP/1.1 request needs exactly one Host.\n")
        host = self._host
        if host and host not in _GOOD_HOSTS:
            if _HOST_VALUE.fullmatch(host) is None:
                raise self._stop(400, b"Bad Request: the Host header is not a host[:port].\n")
            if len(host) <= _GOOD_HOST_MAX_SIZE and len(_GOOD_HOSTS) < _GOOD_HOSTS_LIMIT:
                _GOOD_HOSTS.add(host)
        if self._target[:1] != b"/":
            self._other_target_form(method)
        server = self.server
        head = current.head = RequestHead(
            method,
            self._target,
            version,
            self._headers,
            self._host,
            self.remote_addr,
            self.remote_port,
            self.trusted,
            server.server_name,
            server.server_port,
            self.scheme,
        )
        if self.trusted:
            head.believe_proxy(server.trusted_proxies)
        # (the parser can only be upgrading with an Upgrade header, or for CONNECT)
        if (self._seen & _UPGRADE or method == b"CONNECT") and parser.should_upgrade():
            if method == b"CONNECT":
                raise self._stop(501, b"Not Implemented: Ferryman is not a forward proxy.\n")
            self._upgrade = True
            bodiless = self._length <= 0 and not self._seen & _CHUNKED
            if method == b"GET" and bodiless and _asks_for_websocket(self._headers):
                # Tunnelled if the app answers 101; any other answer ends the connection.
                current.upgrade = True
                current.close_after = True
            # Other upgrades (h2c...) are served as plain HTTP/1.1 (RFC 9110 7.8 lets a
            # server ignore Upgrade), body included.
        length = self._length
        if self.max_body_size and length > self.max_body_size:
            raise self._stop(413, b"Content Too Large\n")
        if length > SPOOL_THRESHOLD and not self.spool.fits_on_disk(length):
            self.server.spool_full(self.remote_addr, length)
            raise self._stop(503, _NO_ROOM) from None
        expect = self._expect
        if expect is not None and version == b"1.1":
            if expect != b"100-continue":
                raise self._stop(417, b"Expectation Failed\n")
            if length > 0 or self._seen & _CHUNKED:  # no body, no 100 (RFC 9110 10.1.1)
                if self.pipeline:
                    self._continue_owed = True  # not in the middle of an earlier response
                else:
                    self.write(_CONTINUE)
        self.head_size = 0
        if not self.pipeline and (length > 0 or self._seen & _CHUNKED):
            self._arm(self.body_timeout)  # a body follows (none: the message is complete)
            if self.min_body_rate:
                self._rate_from = self.loop.time()
                self._rate_bytes = 0
        if (
            self.stream_bodies
            and length > 0
            and not self._seen & _CHUNKED
            and not self._upgrade
            and not self.pipeline
            and self._streams_body(head)
        ):
            # --no-buffer-request-bodies: the request goes to the app now, its body as it
            # arrives (on_body); it heads the pipeline while it is still being read.
            current.stream_length = length
            self.pipeline.append(current)
            current.start(self.loop.time())
            return
        if (
            self._seen & _CHUNKED
            and not self._seen & _LENGTH
            and self._te.rpartition(b",")[2].strip().lower() == b"chunked"
            and self._line_start_at == self.completed  # we hold the message from its start
        ):
            # The body is decoded by the front, not the parser (chunked.py says why).
            raise self._stop_for_chunked_body()

    def _streams_body(self, head: RequestHead) -> bool:
        """Whether the app this request goes to takes its body as it arrives."""
        site = self.site
        app = site.only
        if app is None:
            app = site.route(head)  # (the exchange routes it again, to the same app)
            if app is None:
                return False
        return app.streams_body(head.target)

    def on_body(self, body: bytes) -> None:
        current = self.current
        assert current is not None
        if current.stream_length >= 0:
            current.stream_body(body)
            if self.min_body_rate:
                self._rate_bytes += len(body)
            self._arm(self.body_timeout)
            return
        try:
            current.body.append(body)
        except SpoolFull:
            self.server.spool_full(self.remote_addr, current.body.size + len(body))
            raise self._stop(503, _NO_ROOM) from None
        except OSError as exc:  # e.g. ENOSPC in the temp directory
            log.error("Cannot store a request body in a temp file: %s", exc)
            raise self._stop(503, _NO_ROOM) from None
        if self.max_body_size and current.body.size > self.max_body_size:
            raise self._stop(413, b"Content Too Large\n")
        if not self.pipeline:
            self._rate_bytes += len(body)
            self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        if exchange.stream_length >= 0:
            # A streamed body's end: the exchange is under way (or done) already.
            self.current = None
            self.completed += 1
            self._rate_from = 0.0
            self.head_complete = False
            self.head_size = 0
            exchange.body_done()
            if exchange.state != DONE_STATE:
                self._disarm()  # the app has it all: no client deadline until it answers
            return
        if self._upgrade and (self._length > 0 or self._seen & _CHUNKED):
            # The parser skips the body of an upgrade request: it comes after the
            # HttpParserUpgrade that follows, through _upgrade_ignored.
            return
        self.current = None
        self.completed += 1
        self._rate_from = 0.0
        if self._trailer_bytes and exchange.keep_alive and not self.parser.should_keep_alive():
            # Something after the head (a "Connection: close" trailer) made the parser
            # read no further on this connection: close after the response.
            exchange.keep_alive = False
        if self._write_closed:
            exchange.cancel()  # pipelined after a response that closed the connection
            return
        self.head_complete = False
        self.head_size = 0
        if self.server.closing:
            exchange.close_after = True
        if exchange.upgrade:
            self._tunnel_pending = exchange  # the parser stops after it (HttpParserUpgrade)
        self.pipeline.append(exchange)
        if len(self.pipeline) == 1:
            self._disarm()
            exchange.start(self.loop.time())
        elif len(self.pipeline) > PIPELINE_DEPTH:
            self._pause_reading()

    def _other_target_form(self, method: bytes) -> None:
        """A target that is not origin-form (RFC 9112 3.2): check it, reduce it to one."""
        target = self._target
        if target == b"*":
            if method != b"OPTIONS":
                raise self._stop(400, b"Bad Request: the target * is only for OPTIONS.\n")
            return
        if method == b"CONNECT":
            raise self._stop(501, b"Not Implemented: Ferryman is not a forward proxy.\n")
        try:
            origin, authority = absolute_to_origin(target)
        except TargetError as exc:
            raise self._stop(400, b"Bad Request: " + str(exc).encode() + b".\n") from None
        self._target = origin
        self._host = authority
        # RFC 9112 3.2.2: the target's authority, not the Host header, names the host.
        headers = self._headers
        for i, (name, _) in enumerate(headers):
            if len(name) == 4 and name.lower() == b"host":
                headers[i] = (name, authority)
                break
        else:
            headers.append((b"Host", authority))

    def _upgrade_ignored(self, rest: bytes) -> None:
        """The parser stopped after the head of an upgrade request that is served as plain
        HTTP: go on with a new parser. Its body, if any, is read through a parser primed
        with a head of the same framing."""
        current = self.current
        if current is not None and self._upgrade:
            framing = (
                b"Transfer-Encoding: chunked"
                if self._seen & _CHUNKED
                else b"Content-Length: %d" % self._length
            )
            body_reader = _BodyAfterUpgrade(self)
            self.parser = new_parser(body_reader)
            self.parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
            body_reader.priming = False
        else:
            self.parser = new_parser(self)
        self._upgrade = False
        if rest:
            self.data_received(rest)

    # -- called by exchanges ------------------------------------------------------------------

    def start_tunnel(self, exchange: Exchange) -> None:
        """The app answered 101: from now on the client's bytes go to ``exchange`` as they
        are; no timeout applies (a WebSocket may be quiet for long; its pings are the
        app's business)."""
        self._tunnel_pending = None
        self.tunnel = exchange
        self._disarm()
        early, self._early = self._early, b""
        if early:
            exchange.tunnel_data(early)
        self.hold_client(False)

    def hold_client(self, held: bool) -> None:
        """Stop (or resume) reading: the app is not taking this client's bytes yet. A
        streamed body's timeout runs only while we read."""
        if held:
            self._pause_reading()
            current = self.current
            if current is not None and current.stream_length >= 0:
                self._disarm()
        elif self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()
            current = self.current
            if current is not None and current.stream_length >= 0:
                self._arm(self.body_timeout)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._write_closed:
            self.transport.write(data)

    def exchange_done(self, exchange: Exchange, *, abort: bool = False) -> None:
        """``exchange`` has sent its last byte (or given up): move on to the next request."""
        pipeline = self.pipeline
        if pipeline and pipeline[0] is exchange:
            pipeline.popleft()
        if self.closed:
            return
        if abort:
            # Close, not reset: earlier responses still buffered must reach the client;
            # the cut-short one is recognisable as such by its framing.
            self._close(linger=True)
            return
        if exchange.close_after or not exchange.keep_alive:
            # Requests pipelined after a "close" are dropped unanswered, as RFC 9112 allows.
            self._drop_pipeline()
            self._close(linger=True)
            return
        if pipeline:
            pipeline[0].start(self.loop.time())
            return
        if self._refusal is not None:
            self._send_refusal()
            return
        if self.closing:
            self._close()
            return
        if self.reading_paused:
            self.reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        current = self.current
        if current is None:
            self._arm(self.keepalive_timeout)
        else:
            # The next request is on its way: its head or body gets its own deadline now.
            self._arm(self.body_timeout if self.head_complete else self.header_timeout)
            if self.head_complete and self.min_body_rate:
                self._rate_from = self.loop.time()
                self._rate_bytes = 0
            if self._continue_owed:
                self._continue_owed = False
                self.write(_CONTINUE)

    # -- policy helpers -------------------------------------------------------------------------

    def _refuse(self, status: int, message: bytes, *, method_known: bool = True) -> None:
        """Answer a bad request with ``status`` and close, after answering earlier requests.

        ``method_known``: the parser read this request's method (every refusal but those
        of an unknown method), so a HEAD can be answered without a body.
        """
        if self._write_closed:
            return  # bytes that came after we closed: nobody to answer
        self.closing = True
        current = self.current
        self.current = None
        if current is not None:
            current.cancel()
        self._pause_reading()
        # A refused HEAD gets no body, as any answer to HEAD.
        head_only = current is not None and method_known and self.parser.get_method() == b"HEAD"
        self._refusal = (status, message, head_only)
        if not self.pipeline:
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, message, head_only = self._refusal
        self._refusal = None
        log.info("%d for a request from %s", status, self.remote_addr.decode())
        self.write(simple_response(status, message, close=True, head_only=head_only))
        self._close(linger=True)

    def _drop_pipeline(self) -> None:
        while self.pipeline:
            self.pipeline.popleft().cancel()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the current response."""
        if not self.pipeline and self.current is None:
            self._close()
        else:
            self.closing = True
            for exchange in self.pipeline:
                exchange.close_after = True

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _close(self, linger: bool = False) -> None:
        """Close the connection; with ``linger``, in stages (the client may still be
        sending: a bad request's body, pipelined requests)."""
        self.closing = True
        self._write_closed = True
        self._cancel_timer()
        transport = self.transport
        if transport is None or self.closed:
            return
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        # A staged close: our side ends (after what is buffered), and what the client still
        # sends is read and dropped for a moment; closing with unread input at once would
        # make the kernel answer with a reset, which can destroy the response in flight.
        transport.write_eof()
        self._lingering = True
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        self._timer = self.loop.call_later(LINGER_TIME, self._linger_over)

    def _linger_over(self) -> None:
        self._timer = None
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self._write_closed = True
        self._cancel_timer()
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # -- the one timer ---------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        """Set the deadline. Cheap on purpose (it runs per request): the timer is created
        only if none is pending; a pending one fires no later than ``_check_every`` after
        it was set, which is no later than any deadline set since (deadlines are at least
        ``_check_every`` away), and then re-arms itself for the current deadline."""
        now = self.loop.time()
        deadline = now + delay
        self._deadline = deadline
        if self._timer is None:
            self._timer = self.loop.call_at(
                min(deadline, now + self.server.check_every), self._on_timer
            )

    def _disarm(self) -> None:
        self._deadline = 0.0

    def _cancel_timer(self) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline or self.closed:
            return  # busy or gone: the next _arm starts a timer again
        now = self.loop.time()
        rate_from = self._rate_from
        if rate_from and now - rate_from >= self.body_timeout:
            # The body's rate over the last period (at most check_every late).
            if self._rate_bytes < self.min_body_rate * (now - rate_from):
                log.info(
                    "408: %s sent its request body too slowly (%d bytes in %.0fs; "
                    "min_body_rate is %d bytes/s)",
                    self.remote_addr.decode(),
                    self._rate_bytes,
                    now - rate_from,
                    self.min_body_rate,
                )
                self.write(simple_response(408, b"Request Timeout\n", close=True))
                self._close()
                return
            self._rate_from = now
            self._rate_bytes = 0
        if now < deadline:
            self._timer = self.loop.call_at(
                min(deadline, now + self.server.check_every), self._on_timer
            )
            return
        if self.current is not None and not self.pipeline:
            log.info("408: %s was too slow sending a request", self.remote_addr.decode())
            self.write(simple_response(408, b"Request Timeout\n", close=True))
        self._close()


class _BodyAfterUpgrade:
    """Parser callbacks for the body of an upgrade request served as plain HTTP.

    The parser is first fed a made-up head of the same framing (``priming``): its
    callbacks are ignored. After it, body and completion go to the connection, and so
    does every later request on the connection, through the same parser.
    """

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.priming = True

    def on_message_begin(self) -> None:
        if not self.priming:
            self.conn.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.priming:
            self.conn.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.priming:
            self.conn.on_header(name, value)

    def on_headers_complete(self) -> None:
        if not self.priming:
            self.conn.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.on_message_complete()
