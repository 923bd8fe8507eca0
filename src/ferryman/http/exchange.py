"""Exchange: one request/response cycle, from the parsed request to the last byte sent.

Theory of operation
-------------------
The front fills in the request (head and a fully buffered body) and starts the
exchange when it reaches the head of its connection's pipeline. The exchange
asks the app's group for a session: it gets one at once, waits in the queue
(``granted``/``rejected`` are called later), or is rejected. With a session it
takes a keep-alive connection to the process, sends the request, and turns the
loader's frames into the HTTP response.

This is the hot path, so it runs on callbacks, not on a task per request.
``_finish`` is the single place where everything the exchange holds is given
back — upstream connection, session, body file — and it runs exactly once, on
success, error and cancellation alike.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from typing import TYPE_CHECKING

from ..pool import Reason, Rejected, Session, Waiter
from .body import BodyBudget, RequestBody
from .environ import BadTarget
from .listener import fd_limit_text
from .response import DATES, simple_response, status_allows_body
from .upstream import AppConnection

if TYPE_CHECKING:
    from .front import App, ClientConnection

log = logging.getLogger("ferryman")

# Exchange states
RECEIVING = 0  # request head parsed, body arriving
QUEUED = 1  # waiting for a session (in the pipeline or the group's queue)
CONNECTING = 2  # has a session, opening a connection to the process
FORWARDING = 3  # request sent, response arriving
DONE = 4

_CHUNKED_END = b"0\r\n\r\n"
#: After the client left, an app's reply is read and dropped up to this size, so the
#: session (the process's capacity) is returned when the app is really done. A longer
#: reply closes the connection instead, which stops a streaming app at its next write.
DRAIN_LIMIT = 1024 * 1024
#: Logged as the status of a request whose client left before the response (as nginx does).
CLIENT_CLOSED = 499
#: Methods that may be sent again when a reused connection turns out dead (as nginx).
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"])
_OUT_OF_FDS = frozenset([errno.EMFILE, errno.ENFILE])
#: Attempts to reach a process for one request when the process turns out unreachable
#: before anything was sent (it died between checkout and connect).
_CONNECT_ATTEMPTS = 3


def _has_header(lower_block: bytes, name: bytes) -> bool:
    """Whether a CRLF-terminated, lower-cased header block has a ``name:`` line."""
    return lower_block.startswith(name) or (b"\n" + name) in lower_block


#: A response head's header lines as RFC 9110 5.5 allows them: token names, values of
#: visible characters, spaces, tabs and obs-text. No other control characters: a
#: client or proxy downstream may read \x0b or \x1b differently from us.
_VALID_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_VALID_STATUS_LINE = re.compile(rb"[1-5][0-9][0-9] [\t\x20-\x7e\x80-\xff]*")
#: plan_head's status for a head that must not be forwarded.
INVALID_STATUS, INVALID_FIELDS = 0, -1

#: What a response head becomes on the wire, for each (payload, HEAD?, version, close?):
#: most responses of an app repeat the same few heads, so each is worked out once.
HeadPlan = tuple[int, bytes, bool, bool, bytes, bool, int, bool, bool]
_HEAD_PLANS: dict[tuple[bytes, bool, bytes, bool], HeadPlan] = {}
_HEAD_PLANS_LIMIT = 512
_HEAD_PLAN_MAX_SIZE = 256


def plan_head(payload: bytes, head_only: bool, version: bytes, close: bool) -> HeadPlan:
    """(status, head up to the Date line, add Date?, add Server?, framing lines and the
    blank line, no body?, Content-Length or -1, chunked?, close after?) for an H frame."""
    status_line, _, block = payload.partition(b"\r\n")
    if _VALID_STATUS_LINE.fullmatch(status_line) is None:
        return (INVALID_STATUS, b"", False, False, b"", True, -1, False, False)
    status = int(status_line[:3])
    if _VALID_FIELDS.fullmatch(block) is None:
        return (INVALID_FIELDS, b"", False, False, b"", True, -1, False, False)
    if status < 200:
        return (status, b"", False, False, b"", True, -1, False, False)
    lower = block.lower()
    framing = b""
    remaining = -1
    chunked = no_body = False
    length_at = lower.find(b"content-length:")
    if length_at > 0 and lower[length_at - 1] != 10:  # not at a line start: look further
        length_at = lower.find(b"\ncontent-length:") + 1 or -1
    if length_at >= 0 and lower.find(b"\ncontent-length:", length_at) >= 0:
        close = True  # two lengths: trust neither; the body ends with the connection
        length_at = -1
    if head_only or not status_allows_body(status):
        no_body = True
        if version == b"1.0" and not close:
            framing = b"Connection: keep-alive\r\n"
    elif length_at >= 0:
        value = lower[length_at + 15 : lower.find(b"\r\n", length_at)].strip()
        if value.isdigit():
            remaining = int(value)
        else:
            close = True  # not a length (e.g. "-1"): the body ends with the connection
        if version == b"1.0" and not close:
            framing = b"Connection: keep-alive\r\n"
    elif version == b"1.1":
        chunked = True
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        close = True  # HTTP/1.0 without a length: the body ends when the connection does
    if close:
        framing += b"Connection: close\r\n"
    return (
        status,
        b"HTTP/1.1 " + status_line + b"\r\n" + block,
        not _has_header(lower, b"date:"),
        not _has_header(lower, b"server:"),
        framing + b"\r\n",
        no_body,
        remaining,
        chunked,
        close,
    )


class Exchange:
    __slots__ = (
        "_attempts",
        "_chunked",
        "_client_gone",
        "_connect_task",
        "_drain_head",
        "_drained",
        "_head_sent",
        "_no_body",
        "_out",
        "_remaining",
        "_retried",
        "app",
        "body",
        "bytes_sent",
        "close_after",
        "conn",
        "head_only",
        "headers",
        "keep_alive",
        "method",
        "session",
        "started_at",
        "state",
        "status",
        "target",
        "upstream",
        "version",
        "waiter",
    )

    def __init__(self, conn: ClientConnection, app: App, bodies: BodyBudget) -> None:
        self.conn = conn
        self.app = app
        self.method = b""
        self.target = b""
        self.version = b"1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = RequestBody(bodies)
        #: The client allows keep-alive (its version and Connection header).
        self.keep_alive = True
        #: Close the connection after this response, whatever the client wants.
        self.close_after = False
        self.head_only = False
        self.state = RECEIVING
        self.session: Session | None = None
        self.waiter: Waiter | None = None
        self.upstream: AppConnection | None = None
        self.status = 0
        self.bytes_sent = 0
        self.started_at = 0.0
        self._out: list[bytes] = []
        self._head_sent = False
        self._chunked = False
        self._no_body = False
        self._remaining = -1  # bytes left of the app's Content-Length; -1 = none given
        self._attempts = 0
        self._retried = False
        self._client_gone = False
        self._drain_head = False
        self._drained = 0
        #: Holds the connect task while it runs (asyncio keeps only weak references to tasks).
        self._connect_task: asyncio.Task[AppConnection] | None = None

    # -- getting a session ------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The request is complete and it is this exchange's turn on the connection."""
        self.state = QUEUED
        self.started_at = now
        if now >= self.app.next_restart_check:
            self.app.check_restart(now)
        self._checkout(now)

    def _checkout(self, now: float) -> None:
        app = self.app
        outcome, effects = app.group.checkout(self, now)
        if isinstance(outcome, Session):
            self.session = outcome
            self._forward()
        elif isinstance(outcome, Waiter):
            self.waiter = outcome
        else:
            self._respond_rejected(outcome)
        if effects:
            app.supervisor.apply(effects)

    def granted(self, session: Session) -> None:
        """Called by the supervisor: the group handed this queued request a session."""
        self.waiter = None
        if self.state == DONE:
            # Cancelled in the same turn it was granted: give the capacity straight back.
            self.app.supervisor.apply(session.close(self.app.now()))
            return
        self.session = session
        self._forward()

    def rejected(self, rejected: Rejected) -> None:
        """Called by the supervisor: this queued request will not get a session."""
        self.waiter = None
        if self.state != DONE:
            self._respond_rejected(rejected)

    def _respond_rejected(self, rejected: Rejected) -> None:
        if rejected.reason is Reason.QUEUE_FULL:
            self.app.queue_full(self.app.now())
        status, body, content_type = self.app.rejection_response(rejected)
        self._respond_simple(status, body, content_type=content_type)

    # -- forwarding ---------------------------------------------------------------------------

    def _forward(self) -> None:
        session = self.session
        assert session is not None
        conn = session.process.handle.upstream.take_idle()
        if conn is not None:
            self._send_request(conn)
        else:
            self._connect()

    def _connect(self) -> None:
        session = self.session
        assert session is not None
        self.state = CONNECTING
        task = asyncio.ensure_future(session.process.handle.upstream.connect())
        self._connect_task = task
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[AppConnection]) -> None:
        self._connect_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if self.state == DONE:
            # The client left while we connected; the session is already given back.
            if exc is None:
                conn = task.result()
                conn.upstream.release(conn)
            return
        if exc is not None:
            self._unreachable(exc)
            return
        self._send_request(task.result())

    def _unreachable(self, exc: BaseException) -> None:
        """Connecting to the process failed. If it refused (its socket is gone), retire it
        and try another; other failures (no fds left, a timeout) are not the process's
        fault and get a 502 without retiring anything."""
        session = self.session
        self.session = None
        assert session is not None
        supervisor = self.app.supervisor
        gone = isinstance(exc, ConnectionRefusedError | FileNotFoundError)
        if gone:
            supervisor.process_unreachable(session.process, exc)
        now = self.app.now()
        supervisor.apply(session.close(now))
        if not gone:
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
                self.conn.server.fd_alert.fire(
                    now,
                    "Cannot connect to app process %d: %s (%s): answered 502. Raise the "
                    "limit (ulimit -n, or LimitNOFILE= in a systemd unit).",
                    session.process.pid,
                    exc.strerror,
                    fd_limit_text(),
                )
            else:
                log.warning("Cannot connect to app process %d: %r", session.process.pid, exc)
            self._respond_simple(502, b"Bad Gateway: the app process could not be reached.\n")
            return
        self._attempts += 1
        if self._attempts >= _CONNECT_ATTEMPTS:
            self._respond_simple(502, b"Bad Gateway: the app process could not be reached.\n")
            return
        self.state = QUEUED
        self._checkout(now)

    def _send_request(self, conn: AppConnection) -> None:
        self.state = FORWARDING
        self.upstream = conn
        try:
            conn.start(self)
        except BadTarget:
            self._respond_simple(400, b"Bad Request: invalid request target.\n", upstream_ok=True)
            return
        if self.conn.writing_paused:
            conn.pause_reading()  # the client is still taking in an earlier response

    # -- the response, frame by frame (called by AppConnection) ------------------------------

    def on_head(self, payload: bytes) -> None:
        if self.state == DONE:
            return
        if self._client_gone:
            self._drain_head = True  # the app is sending a reply nobody will read
            return
        close = self.close_after or not self.keep_alive
        key = (payload, self.head_only, self.version, close)
        plan = _HEAD_PLANS.get(key)
        if plan is None:
            plan = plan_head(*key)
            if len(payload) <= _HEAD_PLAN_MAX_SIZE:  # per-response heads (cookies) churn
                if len(_HEAD_PLANS) >= _HEAD_PLANS_LIMIT:
                    _HEAD_PLANS.clear()
                _HEAD_PLANS[key] = plan
        status, prefix, date, server, suffix, no_body, remaining, chunked, close = plan
        if status < 200:  # 1xx interim responses are not forwarded; a final one must follow
            if status == INVALID_STATUS:
                self._respond_bad_gateway(b"the app sent an invalid status line")
            elif status == INVALID_FIELDS:
                self._respond_bad_gateway(b"the app sent an invalid header (name or value)")
            return
        self.status = status
        self._no_body = no_body
        self._remaining = remaining
        self._chunked = chunked
        if close:
            self.close_after = True
        self._head_sent = True
        self._out.append(prefix + DATES.lines(date, server) + suffix)

    def on_body(self, payload: bytes) -> None:
        if self.state == DONE:
            return
        if self._client_gone:
            self._drained += len(payload)
            if self._drained > DRAIN_LIMIT:
                self._finish(upstream_ok=False)
            return
        if self._no_body or not self._head_sent or not payload:
            return
        self.bytes_sent += len(payload)
        if self._chunked:
            self._out.append(b"%x\r\n" % len(payload))
            self._out.append(payload)
            self._out.append(b"\r\n")
            return
        if self._remaining >= 0:
            if len(payload) > self._remaining:
                # More than the app's own Content-Length: the rest would corrupt the stream.
                payload = payload[: self._remaining]
                self.close_after = True
            self._remaining -= len(payload)
        self._out.append(payload)

    def on_end(self) -> None:
        if self.state == DONE:
            return
        if self._client_gone:
            conn = self.upstream
            self._finish(upstream_ok=conn is not None and conn.reusable())
            return
        if not self._head_sent:
            self._respond_bad_gateway(b"the app ended the response without a head")
            return
        if self._chunked:
            self._out.append(_CHUNKED_END)
        elif self._remaining > 0:
            self.close_after = True  # shorter than announced: the client must see a cut
        self.flush()
        conn = self.upstream
        reusable = conn is not None and conn.reusable()
        self._finish(upstream_ok=reusable, abort_client=self._remaining > 0)

    def on_abort(self) -> None:
        """The app failed after sending the head: the client must not take it as complete."""
        if self.state == DONE:
            return
        self.flush()
        conn = self.upstream
        self._finish(upstream_ok=conn is not None and conn.reusable(), abort_client=True)

    def on_upstream_lost(self) -> None:
        """The connection to the process closed before the response ended."""
        conn = self.upstream
        self.upstream = None
        if self.state == DONE:
            return
        if self._head_sent or self._client_gone:
            self.flush()
            self._finish(upstream_ok=False, abort_client=True)
        elif (
            conn is not None and conn.uses > 1 and not self._retried and self.method in _IDEMPOTENT
        ):
            # A reused connection the app had just closed (its keep-alive timeout):
            # the request did not get there. Send it again on a new connection.
            self._retried = True
            self._connect()
        else:
            self._respond_bad_gateway(b"the app process closed the connection")

    def on_bad_response(self, why: str) -> None:
        """The app's HTTP response could not be parsed (the connection will be closed)."""
        if self.state != DONE:
            self._respond_bad_gateway(b"the app sent an invalid response: " + why.encode())

    def flush(self) -> None:
        """Send what the app's last batch of data produced (called after each batch)."""
        out = self._out
        if self._client_gone:
            out.clear()
            if self._drain_head and self.state != DONE:
                # The reply did not end with this batch: it streams. Closing the connection
                # stops the app at its next write, so its capacity is not held for nothing.
                self._finish(upstream_ok=False)
        elif out:
            self.conn.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()

    def _respond_bad_gateway(self, why: bytes) -> None:
        log.warning(
            "502 for %s %s: %s",
            self.method.decode("latin-1"),
            self.target.decode("latin-1")[:200],
            why.decode(),
        )
        self._respond_simple(502, b"Bad Gateway: " + why + b".\n")

    # -- ending -------------------------------------------------------------------------------

    def _respond_simple(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = b"text/plain; charset=utf-8",
        upstream_ok: bool = False,
    ) -> None:
        """Answer with a response of the core's own, unless part of one was already sent."""
        if self.state == DONE:
            return
        if self._head_sent:
            self._finish(upstream_ok=upstream_ok, abort_client=True)
            return
        # After a 400 the client's framing cannot be trusted: the connection closes.
        close = self.close_after or not self.keep_alive or status == 400
        self.close_after = close
        self.status = status
        data = simple_response(
            status, body, close=close, content_type=content_type, head_only=self.head_only
        )
        self.bytes_sent += 0 if self.head_only else len(body)
        self.conn.write(data)
        self._finish(upstream_ok=upstream_ok)

    def cancel(self) -> None:
        """The client went away: give everything back, answer nothing.

        If the app is already working on the request, keep the session until it answers
        (the reply is read and dropped, see DRAIN_LIMIT): the process is busy until then,
        and the pool must go on counting it so.
        """
        if self.state == DONE:
            return
        self._client_gone = True
        self._out.clear()
        conn = self.upstream
        if self.state == FORWARDING and conn is not None and conn.request_sent:
            self._drain_head = self._head_sent  # a reply already streaming is cut at once
            conn.resume_reading()  # it may be paused for the client, who is gone now
            return  # on_end, on_abort, on_upstream_lost or flush finishes it
        # A connection still being opened goes back to the pool when it arrives (_connected).
        self._finish(upstream_ok=False)

    def _finish(self, *, upstream_ok: bool, abort_client: bool = False) -> None:
        if self.state == DONE:
            return
        was_request = self.state != RECEIVING
        self.state = DONE
        app = self.app
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            if upstream_ok:
                conn.upstream.release(conn)
            else:
                conn.exchange = None
                conn.close()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            app.group.cancel(waiter)
        self.body.close()
        session = self.session
        self.session = None
        effects = session.close(app.now()) if session is not None else None
        if self._client_gone:
            if was_request:
                self.status = self.status or CLIENT_CLOSED
                app.access_log.record(self)
        else:
            app.access_log.record(self)
            self.conn.exchange_done(self, abort=abort_client)
        if effects:
            app.supervisor.apply(effects)

    def header(self, name: bytes) -> bytes | None:
        """The first value of a request header (``name`` lower-case); for logging."""
        size = len(name)
        for key, value in self.headers:
            if len(key) == size and key.lower() == name:
                return value
        return None
