#!/usr/bin/env python3
"""The core's request path in Python alone: µs per request with the sockets taken away.

    python bench/request_path.py [--requests 100000] [--profile]

A client connection and an app connection get fake transports; each request is
fed to the front as bytes, and the app's reply (the session protocol's H, B and
E frames) is fed back, all in one process. What remains is exactly the Python
work of the request path (parsing glue, routing, checkout, environ, response
head, release, timers), without system calls or the event loop's polling, so
the figure is steady enough to compare a change against (bench/run.py measures
the whole thing, syscalls included, against peers).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from ferryman.config import Config
from ferryman.http.app import App
from ferryman.http.front import ClientConnection, FrontServer
from ferryman.http.session_protocol import FRAME_BODY, FRAME_END, FRAME_HEAD, FRAME_HEAD_RESPONSE
from ferryman.http.site import Site
from ferryman.http.upstream import SessionConnection, Upstreams
from ferryman.log import AccessLog, LogSink
from ferryman.pool import Effect, Grant, Pool, Process, Reject, Rejected
from ferryman.pool.group import GroupOptions

REQUEST = (
    b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
BODY = b"Hello world\n"
HEAD = b"200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
REPLY = (
    FRAME_HEAD.pack(FRAME_HEAD_RESPONSE, len(HEAD))
    + HEAD
    + FRAME_HEAD.pack(FRAME_BODY, len(BODY))
    + BODY
    + FRAME_HEAD.pack(FRAME_END, 0)
)


class Sink:
    """A transport that keeps nothing."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Supervisor:
    """Carries out Grant/Reject only; no processes here."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.time()

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Grant):
                effect.waiter.token.granted(effect.session)
            elif isinstance(effect, Reject):
                effect.waiter.token.rejected(effect.rejected)

    def process_unreachable(self, process: Process, exc: BaseException) -> None:
        raise AssertionError(f"unreachable: {exc!r}")

    def request_timed_out(self, process: Process, request: str, limit: float) -> None:
        raise AssertionError(request)


async def run(requests: int, profile: bool, queued: bool) -> float:
    loop = asyncio.get_running_loop()
    config = Config(app_dir=Path("."), access_log=False)
    pool = Pool(1)
    group = pool.add_group("app", GroupOptions(min_instances=1, max_queue_size=0))
    supervisor = Supervisor(loop)
    group.spawning = True
    process, _ = group.spawn_done(pid=1, concurrency=1, now=loop.time())
    upstreams = Upstreams()
    upstreams.open(process, "/nonexistent", "session", 1)
    upstream = upstreams.of(process)
    assert upstream is not None
    app_conn = SessionConnection(upstream)
    app_conn.connection_made(Sink())  # type: ignore[arg-type]
    upstream.connections.add(app_conn)
    upstream.release(app_conn)

    def reject(rejected: Rejected) -> tuple[int, bytes, bytes]:
        raise AssertionError(rejected)

    sink = LogSink(sys.stderr.fileno(), owned=False)
    app = App(
        group,
        supervisor,
        upstreams=upstreams,
        access_log=AccessLog(sink, False),
        rejection_response=reject,
    )
    front = FrontServer(config, Site([app]))
    client = ClientConnection(front)
    client_transport = Sink()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    other = ClientConnection(front)
    other.connection_made(Sink())  # type: ignore[arg-type]

    def once() -> None:
        client.data_received(REQUEST)
        app_conn.data_received(REPLY)

    def twice_one_queued() -> None:
        # The second request finds the only process busy, waits in the queue, and gets
        # the process when the first one's reply ends: the path of a loaded server.
        client.data_received(REQUEST)
        other.data_received(REQUEST)
        app_conn.data_received(REPLY)
        app_conn.data_received(REPLY)

    if queued:
        once = twice_one_queued
        requests //= 2

    for _ in range(1000):  # warm caches
        once()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    start = time.process_time()
    for _ in range(requests):
        once()
    elapsed = time.process_time() - start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    assert client_transport.written == requests + 1000, client_transport.written
    return elapsed * 1e6 / (requests * (2 if queued else 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--queued", action="store_true", help="every other request waits in the queue"
    )
    args = parser.parse_args()
    results = []
    for _ in range(1 if args.profile else args.repeats):
        results.append(uvloop.run(run(args.requests, args.profile, args.queued)))
    results.sort()
    print(
        f"request path: {results[len(results) // 2]:.2f} µs/request (median of {len(results)};"
        f" min {results[0]:.2f}, max {results[-1]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
