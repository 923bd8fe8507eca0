"""Upstream: the keep-alive connections from the core to one app process.

Connections are opened on demand and reused (last released, first reused, so
the loader thread that served the previous request serves the next). A process
with concurrency N never has more than N connections: each session holds at
most one. Once the process is retired, connections are closed instead of kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from .session_protocol import (
    FRAME_ABORT,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEAD_RESPONSE,
    FrameReader,
    ProtocolError,
)

if TYPE_CHECKING:
    from .exchange import Exchange


class AppConnection(asyncio.Protocol):
    """One connection to a loader; carries one exchange at a time."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.exchange: Exchange | None = None
        self.closed = False
        #: A request body still being written from a file (flow-controlled).
        self._pump: Iterator[bytes] | None = None
        self._write_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # a loader never speaks unasked
            return
        try:
            frames = self.reader.feed(data)
        except ProtocolError:
            self.close()
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
                self.close()
                return
        exchange.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pump = None
        self.upstream._forget(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.on_upstream_lost()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._run_pump()

    # -- used by the exchange ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send_stream(self, chunks: Iterator[bytes]) -> None:
        """Write ``chunks`` as the transport drains (large bodies spooled to a file)."""
        self._pump = chunks
        self._run_pump()

    def _run_pump(self) -> None:
        pump = self._pump
        transport = self.transport
        while pump is not None and not self._write_paused and transport is not None:
            chunk = next(pump, None)
            if chunk is None:
                self._pump = None
                return
            transport.write(chunk)

    @property
    def request_sent(self) -> bool:
        return self._pump is None

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close the connection; an exchange on it learns through connection_lost."""
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class Upstream:
    """The connection pool to one app process's Unix socket."""

    def __init__(self, address: str, max_idle: int) -> None:
        self.address = address
        self.max_idle = max_idle
        self.idle: list[AppConnection] = []
        self.connections: set[AppConnection] = set()
        #: False once the process is retired: connections are then closed, not reused.
        self.enabled = True

    def take_idle(self) -> AppConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self) -> AppConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(lambda: AppConnection(self), self.address)
        if not self.enabled:
            conn.close()
            raise ConnectionRefusedError("the process was retired while connecting")
        self.connections.add(conn)
        return conn

    def release(self, conn: AppConnection) -> None:
        """The exchange on ``conn`` ended cleanly: keep it for the next one if we can."""
        conn.exchange = None
        if self.enabled and not conn.closed and len(self.idle) < self.max_idle:
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
