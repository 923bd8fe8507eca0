#!/usr/bin/env python3
"""The WSGI loader's request path in Python alone: µs per request without the socket.

    python bench/loader_path.py [--requests 100000] [--profile]

The loader's ``Server.serve_connection`` gets a fake connection that hands it the
same request (an environ block as the core sends it, no body) again and again and
keeps count of what the loader sends back; the app is bench/apps/wsgi's ``hello``.
What remains is the loader's own work per request (environ dict, start_response,
the response frames), the part of an app process's CPU that is ours: compare a
change against it here, and the whole thing against peers with bench/run.py.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from ferryman.loaders import wsgi_loader
from ferryman.loaders.wsgi_loader import REQUEST_HEAD, Server

APP = Path(__file__).resolve().parent / "apps" / "wsgi" / "passenger_wsgi.py"

#: What the core sends for ``GET /hello`` from wrk (keys as ferryman/http/environ.py makes them).
ENVIRON = b"\0".join(
    [
        *(b"REQUEST_METHOD", b"GET", b"REQUEST_URI", b"/hello", b"PATH_INFO", b"/hello"),
        *(b"QUERY_STRING", b"", b"SERVER_PROTOCOL", b"HTTP/1.1", b"SERVER_NAME", b"127.0.0.1"),
        *(b"SERVER_PORT", b"3000", b"REMOTE_ADDR", b"127.0.0.1", b"REMOTE_PORT", b"50000"),
        *(b"ferryman.url_scheme", b"http", b"HTTP_HOST", b"127.0.0.1:3000"),
        *(b"HTTP_USER_AGENT", b"wrk", b"HTTP_ACCEPT", b"*/*"),
    ]
)
REQUEST = REQUEST_HEAD.pack(len(ENVIRON), 0) + ENVIRON


class Connection:
    """Hands out ``count`` requests, one per recv, then EOF; counts the sends."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.sent = 0

    def recv(self, size: int) -> bytes:
        if self.left <= 0:
            return b""
        self.left -= 1
        return REQUEST

    def sendall(self, data: bytes) -> None:
        self.sent += 1


def load_app() -> Any:
    spec = importlib.util.spec_from_file_location("bench_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.application


def run(requests: int, profile: bool) -> float:
    base_environ = {
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": wsgi_loader.FileWrapper,
    }
    server = Server(load_app(), None, 1, base_environ)  # type: ignore[arg-type]
    server.serve_connection(Connection(1000), 0)  # type: ignore[arg-type]  # warm caches
    connection = Connection(requests)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    start = time.process_time()
    server.serve_connection(connection, 0)  # type: ignore[arg-type]
    elapsed = time.process_time() - start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    assert connection.sent == requests, connection.sent
    return elapsed * 1e6 / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    results = sorted(run(args.requests, args.profile) for _ in range(args.repeats))
    print(
        f"loader path: {results[len(results) // 2]:.2f} µs/request (median of {len(results)};"
        f" min {results[0]:.2f}, max {results[-1]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
