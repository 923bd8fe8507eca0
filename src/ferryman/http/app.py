"""App: what the front needs to serve one app, and the driver it talks to.

The HTTP side meets the supervisor only through ``PoolDriver``, a small typed
protocol (carry out effects, tell the time, report an unreachable process) that
``core`` wires to the real supervisor; so ``http/`` and ``supervisor.py`` never
import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..alerts import Alert
from ..log import AccessLog
from ..pool import Effect, Group, Process, Rejected
from .request import RequestHead
from .static import StaticFiles
from .stats import RequestStats
from .target import path_of, under
from .upstream import Upstreams

log = logging.getLogger("ferryman")


class PoolDriver(Protocol):
    """The driver of the pool, as the HTTP side sees it (``supervisor.Supervisor``)."""

    def apply(self, effects: list[Effect]) -> None:
        """Carry out the effects of a pool transition."""

    def now(self) -> float:
        """The loop's clock, which every pool transition takes."""

    def process_unreachable(self, process: Process, exc: BaseException) -> None:
        """A connection to ``process`` was refused: it cannot serve."""

    def request_timed_out(self, process: Process, request: str, limit: float) -> None:
        """``process`` worked on ``request`` ("GET /path") longer than --max-request-time."""


class LocalResponse:
    """A response the core makes itself, without the app (health check, admin API)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: bytes = b"",
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        #: More header lines, each ending with CRLF.
        self.headers = headers


#: Answers a request itself (a LocalResponse) or leaves it to the app (None); given the
#: request and the loop's time.
LocalRoutes = Callable[[RequestHead, float], "LocalResponse | None"]


class App:
    """What the front needs to serve one app: its group, its driver and its responses.

    It also watches ``tmp/restart.txt``: at most every ``stat_throttle_rate`` seconds,
    when a request arrives, the file's mtime is compared with the last one seen; a
    change restarts the app's processes.
    """

    def __init__(
        self,
        group: Group,
        driver: PoolDriver,
        *,
        upstreams: Upstreams,
        access_log: AccessLog,
        rejection_response: Callable[[Rejected], tuple[int, bytes, bytes]],
        restart_file: Path | None = None,
        stat_throttle_rate: float = 1.0,
        sticky_cookie: str | None = None,
        sticky_attributes: str = "",
        prefix: str = "/",
        hosts: tuple[str, ...] = (),
        static: StaticFiles | None = None,
        stream_bodies: bool = False,
        stream_paths: tuple[str, ...] = (),
    ) -> None:
        self.group = group
        #: Where it is mounted (see site.Site): the URL prefix, and the hosts it serves
        #: (none: any); "*.example.com" names every subdomain.
        self.prefix = prefix.encode()
        self.hosts = tuple(host.encode() for host in hosts)
        #: Static directories the core serves itself (public/, --static-dir), if any.
        self.static = static
        #: --no-buffer-request-bodies: every body with a length goes to the app as it
        #: arrives; else only those to these paths (--unbuffered-request-path), each
        #: joined to the prefix, as the client sends them.
        self.stream_bodies = stream_bodies
        base = self.prefix.rstrip(b"/")
        self.stream_paths = tuple(base + path.encode() for path in stream_paths)
        #: --sticky-sessions: the cookie's name (None: off), and what follows its value.
        self.sticky_cookie = sticky_cookie.encode() if sticky_cookie else None
        # Path: the app's prefix, so that two apps on one host keep their own cookies.
        self._sticky_tail = (
            b"; Path="
            + self.prefix
            + (b"; " + sticky_attributes.encode() if sticky_attributes else b"")
        )
        self.stats = RequestStats()
        self.driver = driver
        #: The connections to each of the group's processes.
        self.upstreams = upstreams
        self.access_log = access_log
        self.rejection_response = rejection_response
        self.now = driver.now
        self.restart_file = restart_file
        self.stat_throttle_rate = stat_throttle_rate
        #: loop time of the next restart.txt check (read on the hot path: a float compare)
        self.next_restart_check = 0.0
        self._restart_mtime = self._restart_file_mtime()
        name = group.name.replace("%", "%%")
        self.queue_full_alert = Alert(
            f"The request queue of {name} is full: answered 503 to %d more request(s) since "
            "the last report"
        )

    def streams_body(self, target: bytes) -> bool:
        """Whether the body of a request for ``target`` goes to the app as it arrives."""
        if self.stream_bodies:
            return True
        if not self.stream_paths:
            return False
        path = path_of(target)
        return any(under(path, prefix) for prefix in self.stream_paths)

    def sticky_line(self, seq: int) -> bytes:
        """The Set-Cookie header line that sends a client back to process ``seq``."""
        assert self.sticky_cookie is not None
        return b"Set-Cookie: %s=%d%s\r\n" % (self.sticky_cookie, seq, self._sticky_tail)

    def _restart_file_mtime(self) -> int | None:
        if self.restart_file is None:
            return None
        try:
            return self.restart_file.stat().st_mtime_ns
        except OSError:
            return None

    def queue_full(self, now: float) -> None:
        """A request got 503 because the queue is full: say so in the log (throttled)."""
        self.queue_full_alert.fire(
            now,
            "The request queue of %s is full (max_request_queue_size %d): answered 503. More "
            "processes (--max-pool-size), threads (--thread-count) or a longer queue would "
            "take such requests.",
            self.group.name,
            self.group.options.max_queue_size,
        )

    def check_restart(self, now: float) -> None:
        self.next_restart_check = now + self.stat_throttle_rate
        mtime = self._restart_file_mtime()
        if mtime is None or mtime == self._restart_mtime:
            return
        self._restart_mtime = mtime
        log.info("Restarting %s: %s was touched", self.group.name, self.restart_file)
        self.driver.apply(self.group.restart(now))


class HealthCheck:
    """``--health-check-path``: answered by the core, never by an app. 200 while every app
    has a ready process, 503 while one has none (starting, or failing to start)."""

    _NO_STORE = b"Cache-Control: no-store\r\n"

    def __init__(self, path: str, groups: list[Group]) -> None:
        self.path = path.encode()
        self.with_query = self.path + b"?"
        self.groups = groups

    def __call__(self, head: RequestHead, now: float) -> LocalResponse | None:
        target = head.target
        if target != self.path and not target.startswith(self.with_query):
            return None
        if head.method not in (b"GET", b"HEAD"):
            return LocalResponse(
                405, b"Method Not Allowed\n", headers=b"Allow: GET, HEAD\r\n" + self._NO_STORE
            )
        ready = 0
        for group in self.groups:
            if not group.processes:
                # Which app: in `ferryman status`, not told to whoever asks.
                return LocalResponse(
                    503, b"Unavailable: no ready process\n", headers=self._NO_STORE
                )
            ready += len(group.processes)
        return LocalResponse(200, b"OK: %d ready process(es)\n" % ready, headers=self._NO_STORE)
