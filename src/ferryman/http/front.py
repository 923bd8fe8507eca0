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
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httptools

from ..config import Config, ProxyNetworks
from ..pool import Group, Rejected
from .environ import is_trusted
from .exchange import Exchange
from .response import simple_response

if TYPE_CHECKING:
    from ..log import AccessLog
    from ..supervisor import Supervisor

log = logging.getLogger("ferryman")

PIPELINE_DEPTH = 16
CLIENT_WRITE_HIGH_WATER = 1024 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class App:
    """What the front needs to serve one app: its group, supervisor and responses.

    It also watches ``tmp/restart.txt``: at most every ``stat_throttle_rate`` seconds,
    when a request arrives, the file's mtime is compared with the last one seen; a
    change restarts the app's processes.
    """

    def __init__(
        self,
        group: Group,
        supervisor: Supervisor,
        access_log: AccessLog,
        rejection_response: Callable[[Rejected], tuple[int, bytes, bytes]],
        now: Callable[[], float],
        *,
        restart_file: Path | None = None,
        stat_throttle_rate: float = 1.0,
    ) -> None:
        self.group = group
        self.supervisor = supervisor
        self.access_log = access_log
        self.rejection_response = rejection_response
        self.now = now
        self.restart_file = restart_file
        self.stat_throttle_rate = stat_throttle_rate
        #: loop time of the next restart.txt check (read on the hot path: a float compare)
        self.next_restart_check = 0.0
        self._restart_mtime = self._restart_file_mtime()
        self._queue_full_count = 0
        self._queue_full_logged_at = -1e9

    def _restart_file_mtime(self) -> int | None:
        if self.restart_file is None:
            return None
        try:
            return self.restart_file.stat().st_mtime_ns
        except OSError:
            return None

    def queue_full(self, now: float) -> None:
        """A request got 503 because the queue is full: say so in the log, at most every 10 s."""
        self._queue_full_count += 1
        if now - self._queue_full_logged_at >= 10.0:
            log.warning(
                "The request queue of %s is full (max_request_queue_size %d): answered 503 "
                "to %d request(s) since the last report. More processes (--max-pool-size), "
                "threads (--thread-count) or a longer queue would take them.",
                self.group.name,
                self.group.options.max_queue_size,
                self._queue_full_count,
            )
            self._queue_full_logged_at = now
            self._queue_full_count = 0

    def check_restart(self, now: float) -> None:
        self.next_restart_check = now + self.stat_throttle_rate
        mtime = self._restart_file_mtime()
        if mtime is None or mtime == self._restart_mtime:
            return
        self._restart_mtime = mtime
        log.info("Restarting %s: %s was touched", self.group.name, self.restart_file)
        self.supervisor.apply(self.group.restart(now))


class _Refuse(Exception):
    """Raised inside a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, message: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.message = message


class FrontServer:
    """The listening sockets and every client connection on them."""

    def __init__(self, config: Config, app: App) -> None:
        self.config = config
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.trusted_proxies: ProxyNetworks = config.trusted_proxies
        self.server_name = b"localhost"
        self.server_port = b"80"
        #: A connection's timer fires at least this often while a deadline is set.
        self.check_every = min(config.header_timeout, config.body_timeout, config.keepalive_timeout)
        self.closing = False
        self._drained: asyncio.Future[None] | None = None

    async def listen(self) -> list[str]:
        """Bind the listening socket; returns the addresses, e.g. ``http://127.0.0.1:3000``."""
        config = self.config
        if config.socket:
            server = await self.loop.create_unix_server(
                lambda: ClientConnection(self), config.socket, backlog=1024
            )
            self.servers.append(server)
            return [f"unix:{config.socket}"]
        server = await self.loop.create_server(
            lambda: ClientConnection(self),
            config.address,
            config.port,
            backlog=1024,
            reuse_address=True,
        )
        self.servers.append(server)
        urls = []
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            self.server_name = host.encode()
            self.server_port = str(port).encode()
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            urls.append(f"http://{shown}:{port}")
        return urls

    def stop_accepting(self) -> None:
        self.closing = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()

    async def drained(self, timeout: float) -> bool:
        """Wait until every connection is closed; False if ``timeout`` ran out first."""
        if self.connections:
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except TimeoutError:
                return False
        for server in self.servers:
            await server.wait_closed()
        return True

    def remove_socket_file(self) -> None:
        """Remove the Unix socket file we listened on (after the servers are closed)."""
        path = self.config.socket
        if path and self.servers:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    def _forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class ClientConnection(asyncio.Protocol):
    """One client's connection: parser glue, limits, timeouts, pipelining."""

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.app = server.app
        config = server.config
        self.max_header_size = config.max_header_size
        self.max_body_size = config.max_body_size
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.keepalive_timeout = config.keepalive_timeout
        # What the parser callbacks note about the request head being parsed.
        self._head_bytes = 0
        self._hosts = 0
        self._length = -1
        self._chunked_body = False
        self._expect: bytes | None = None
        #: A 100 Continue owed to the request being parsed, once earlier responses are out.
        self._continue_owed = False
        #: We closed (or aborted) the transport; nothing more may be written.
        self._write_closed = False
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
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
        #: No more requests will be read: close once the pipeline is answered.
        self.closing = False
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        #: A 4xx answer owed once the earlier pipelined requests are answered.
        self._refusal: tuple[int, bytes] | None = None
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
            # Unix socket: the peer is a local process, normally the reverse proxy.
            self.remote_addr = b"127.0.0.1"
            self.remote_port = b"0"
            self.trusted = True
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.current is None or not self.head_complete:
            self.head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket) are not tunnelled yet: answer the request, then close.
            self.closing = True
            if self.pipeline:
                self.pipeline[-1].close_after = True
            self._pause_reading()
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refuse):
                self._refuse(refusal.status, refusal.message)
            else:
                log.error("internal error while parsing a request", exc_info=refusal)
                self._refuse(500, b"Internal Server Error\n")
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, b"Bad Request: " + str(exc).encode("utf-8", "replace") + b"\n")
            return
        if (
            self.current is not None
            and not self.head_complete
            and (self.head_size > self.max_header_size)
        ):
            self._refuse(431, b"Request Header Fields Too Large\n")

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
        if self.pipeline:
            upstream = self.pipeline[0].upstream
            if upstream is not None:
                upstream.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.pipeline:
            upstream = self.pipeline[0].upstream
            if upstream is not None:
                upstream.resume_reading()

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Exchange(self, self.app)
        self.head_complete = False
        self._head_bytes = 0
        self._hosts = 0
        self._length = -1
        self._chunked_body = False
        self._expect = None
        if not self.pipeline:
            self._arm(self.header_timeout)

    def on_url(self, url: bytes) -> None:
        current = self.current
        assert current is not None
        current.target += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        current = self.current
        assert current is not None
        current.headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        # Note the few headers the front itself acts on (by length first: it is cheap).
        size = len(name)
        if size in {4, 6, 14, 17}:
            lower = name.lower()
            if lower == b"host":
                self._hosts += 1
            elif lower == b"content-length":
                self._length = int(value) if value.strip().isdigit() else -1
            elif lower == b"expect":
                self._expect = value.strip().lower()
            elif lower == b"transfer-encoding":
                self._chunked_body = True

    def on_headers_complete(self) -> None:
        current = self.current
        assert current is not None
        parser = self.parser
        self.head_complete = True
        if self._head_bytes > self.max_header_size:
            raise _Refuse(431, b"Request Header Fields Too Large\n")
        current.method = parser.get_method()
        version = b"1.1" if parser.get_http_version() == "1.1" else b"1.0"
        current.version = version
        current.keep_alive = parser.should_keep_alive()
        current.head_only = current.method == b"HEAD"
        hosts = self._hosts
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            # RFC 9112 3.2: exactly one Host in HTTP/1.1 (at most one in 1.0).
            raise _Refuse(400, b"Bad Request: an HTTP/1.1 request needs exactly one Host.\n")
        length = self._length
        if self.max_body_size and length > self.max_body_size:
            raise _Refuse(413, b"Content Too Large\n")
        expect = self._expect
        if expect is not None and version == b"1.1":
            if expect != b"100-continue":
                raise _Refuse(417, b"Expectation Failed\n")
            if length > 0 or self._chunked_body:  # no body, no 100 (RFC 9110 10.1.1)
                if self.pipeline:
                    self._continue_owed = True  # not in the middle of an earlier response
                else:
                    self.write(_CONTINUE)
        self.head_size = 0
        if not self.pipeline:
            self._arm(self.body_timeout)

    def on_body(self, body: bytes) -> None:
        current = self.current
        assert current is not None
        current.body.append(body)
        if self.max_body_size and current.body.size > self.max_body_size:
            raise _Refuse(413, b"Content Too Large\n")
        if not self.pipeline:
            self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        self.current = None
        if self._write_closed:
            exchange.cancel()  # pipelined after a response that closed the connection
            return
        self.head_complete = False
        self.head_size = 0
        if self.server.closing:
            exchange.close_after = True
        self.pipeline.append(exchange)
        if len(self.pipeline) == 1:
            self._disarm()
            exchange.start(self.loop.time())
        elif len(self.pipeline) > PIPELINE_DEPTH:
            self._pause_reading()

    # -- called by exchanges ------------------------------------------------------------------

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
            self._close()
            return
        if exchange.close_after or not exchange.keep_alive:
            # Requests pipelined after a "close" are dropped unanswered, as RFC 9112 allows.
            self._drop_pipeline()
            self._close()
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
            if self._continue_owed:
                self._continue_owed = False
                self.write(_CONTINUE)

    # -- policy helpers -------------------------------------------------------------------------

    def _refuse(self, status: int, message: bytes) -> None:
        """Answer a bad request with ``status`` and close, after answering earlier requests."""
        if self._write_closed:
            return  # bytes that came after we closed: nobody to answer
        self.closing = True
        current = self.current
        self.current = None
        if current is not None:
            current.cancel()
        self._pause_reading()
        self._refusal = (status, message)
        if not self.pipeline:
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, message = self._refusal
        self._refusal = None
        log.info("%d for a request from %s", status, self.remote_addr.decode())
        self.write(simple_response(status, message, close=True))
        self._close()

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

    def _close(self) -> None:
        self.closing = True
        self._write_closed = True
        self._cancel_timer()
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

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline or self.closed:
            return  # busy or gone: the next _arm starts a timer again
        now = self.loop.time()
        if now < deadline:
            self._timer = self.loop.call_at(
                min(deadline, now + self.server.check_every), self._on_timer
            )
            return
        if self.current is not None and not self.pipeline:
            log.info("408: %s was too slow sending a request", self.remote_addr.decode())
            self.write(simple_response(408, b"Request Timeout\n", close=True))
        self._close()
