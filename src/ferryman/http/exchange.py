"""Exchange: one request/response cycle, from the parsed request to the last byte sent.

Theory of operation
-------------------
The front fills in the request (head and a fully buffered body) and starts the
exchange when it reaches the head of its connection's pipeline. The exchange
asks the app's group for a session: it gets one at once, waits in the queue
(``granted``/``rejected`` are called later), or is rejected. With a session it
takes a keep-alive connection to the process, sends the request, and turns the
loader's frames into the HTTP response.

Responses are read from the app as fast as it writes them. When the client reads
slower, what it has not taken yet waits in a ``ResponseBuffer`` (memory, then a
temp file, up to ``--max-response-buffer`` and the spool budget), and the session
is given back as soon as the app has finished (state DRAINING: the app is done,
the client is still being fed) — so a slow reader never holds an app process.
Responses that must not wait in a buffer (server-sent events, ``X-Accel-Buffering:
no``) are passed through with back-pressure instead: while the client is not
reading, the app's connection is not read either. When the buffer is full, the
same back-pressure applies to a buffered response.

This is the hot path, so it runs on callbacks, not on a task per request.
``_finish`` is the single place where everything the exchange holds for the app is
given back — upstream connection, session, request body — and it runs exactly
once, on success, error and cancellation alike; ``_end`` does the same for the
client side (response buffer, access log, the connection's next request).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from typing import Protocol

from ..alerts import Alert
from ..pool import Reason, Rejected, Session, Waiter
from .body import RequestBody
from .environ import BadTarget
from .listener import fd_limit_text
from .request import RequestHead
from .response import DATES, simple_response, status_allows_body
from .site import Site
from .spool import ResponseBuffer, SpoolBudget
from .static import FileSender, StaticReply
from .upstream import AppConnection


class Client(Protocol):
    """What an exchange needs of its client connection (``front.ClientConnection``)."""

    #: The client's transport is full: more bytes would only pile up in it.
    writing_paused: bool
    spool: SpoolBudget
    max_response_buffer: int
    fd_alert: Alert
    #: The client's transport (None before it is made): static files go to it directly.
    transport: asyncio.Transport | None

    def write(self, data: bytes) -> None: ...

    def exchange_done(self, exchange: Exchange, *, abort: bool = False) -> None: ...

    def start_tunnel(self, exchange: Exchange) -> None:
        """The app accepted ``exchange``'s upgrade: client bytes go to it from now on."""

    def hold_client(self, held: bool) -> None:
        """Stop (or resume) reading the client: the app is not taking its bytes (a tunnel,
        a streamed body), or is not there yet."""


log = logging.getLogger("ferryman")

# Exchange states
RECEIVING = 0  # request head parsed, body arriving
QUEUED = 1  # waiting for a session (in the pipeline or the group's queue)
CONNECTING = 2  # has a session, opening a connection to the process
FORWARDING = 3  # request sent, response arriving
DRAINING = 4  # the app is done and its session given back; buffered bytes still go out
DONE = 5

_CHUNKED_END = b"0\r\n\r\n"
#: Bytes written to the client at a time when a buffered response drains from a file.
_DRAIN_CHUNK = 256 * 1024
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


def sticky_id(headers: list[tuple[bytes, bytes]], name: bytes) -> int:
    """The process a request's sticky-sessions cookie names (0: none, or not a number)."""
    for header, value in headers:
        if len(header) == 6 and header.lower() == b"cookie":
            for pair in value.split(b";"):
                key, sep, found = pair.strip().partition(b"=")
                if sep and key == name:
                    found = found.strip().strip(b'"')
                    return int(found) if found.isdigit() and len(found) <= 9 else 0
    return 0


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
HeadPlan = tuple[int, bytes, bool, bool, bytes, bool, int, bool, bool, bool]
_NOT_A_HEAD: HeadPlan = (0, b"", False, False, b"", True, -1, False, False, False)
_HEAD_PLANS: dict[tuple[bytes, bool, bytes, bool], HeadPlan] = {}
_HEAD_PLANS_LIMIT = 512
_HEAD_PLAN_MAX_SIZE = 256


def plan_head(payload: bytes, head_only: bool, version: bytes, close: bool) -> HeadPlan:
    """(status, head up to the Date line, add Date?, add Server?, framing lines and the
    blank line, no body?, Content-Length or -1, chunked?, close after?, streaming?) for
    an H frame. A streaming response (server-sent events, ``X-Accel-Buffering: no``) is
    never buffered toward the client."""
    status_line, _, block = payload.partition(b"\r\n")
    if _VALID_STATUS_LINE.fullmatch(status_line) is None:
        return (INVALID_STATUS, *_NOT_A_HEAD[1:])
    status = int(status_line[:3])
    if _VALID_FIELDS.fullmatch(block) is None:
        return (INVALID_FIELDS, *_NOT_A_HEAD[1:])
    if status < 200:
        return (status, *_NOT_A_HEAD[1:])
    lower = block.lower()
    streaming = _STREAMING_TYPE.search(lower) is not None
    accel = _ACCEL_BUFFERING.search(lower)
    if accel is not None:
        # Ferryman's instruction, not the client's (nginx drops it too).
        streaming = streaming or accel.group(1).strip() == b"no"
        block = block[: accel.start()] + block[accel.end() :]
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
        streaming,
    )


_STREAMING_TYPE = re.compile(rb"(?:^|\n)content-type:[ \t]*text/event-stream")
_ACCEL_BUFFERING = re.compile(rb"(?:^|(?<=\n))x-accel-buffering:([^\r]*)\r\n")


_NO_HEAD = RequestHead(
    b"", b"", b"1.1", [], host=b"", peer_addr=b"", peer_port=b"", trusted=False,
    server_name=b"", server_port=b"",
)  # fmt: skip


class Exchange:
    __slots__ = (
        "_abort_after",
        "_attempts",
        "_body_done",
        "_buffer",
        "_chunked",
        "_client_gone",
        "_connect_task",
        "_drain_head",
        "_drained",
        "_early_body",
        "_file",
        "_head_sent",
        "_held",
        "_no_body",
        "_out",
        "_remaining",
        "_retried",
        "_sticky",
        "_streaming",
        "_tunnel",
        "app",
        "body",
        "bytes_sent",
        "close_after",
        "conn",
        "forwarded_at",
        "head",
        "head_only",
        "keep_alive",
        "session",
        "site",
        "started_at",
        "state",
        "status",
        "stream_length",
        "upgrade",
        "upstream",
        "waiter",
    )

    def __init__(self, conn: Client, site: Site, bodies: SpoolBudget) -> None:
        self.conn = conn
        self.site = site
        #: The app it goes to: the site's default until the head is routed (start).
        self.app = site.default
        #: Set when the head is complete (the placeholder until then is never read).
        self.head = _NO_HEAD
        self.body = RequestBody(bodies)
        #: The client allows keep-alive (its version and Connection header).
        self.keep_alive = True
        #: Close the connection after this response, whatever the client wants.
        self.close_after = False
        self.head_only = False
        #: A WebSocket upgrade request (the front decided): a fresh connection to the app,
        #: and on 101 a tunnel that holds the session until either side closes.
        self.upgrade = False
        self._tunnel = False
        #: The sticky id its cookie asked for (sticky sessions), 0 for none.
        self._sticky = 0
        #: A body streamed to the app as it arrives: its Content-Length (-1: buffered);
        #: its pieces that came before the request went out; whether its last came.
        self.stream_length = -1
        self._early_body: list[bytes] = []
        self._body_done = False
        self.state = RECEIVING
        self.session: Session | None = None
        self.waiter: Waiter | None = None
        self.upstream: AppConnection | None = None
        self.status = 0
        self.bytes_sent = 0
        self.started_at = 0.0
        #: When it got its session (the app's time starts: --max-request-time).
        self.forwarded_at = 0.0
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
        #: The response's bytes the client has not taken yet (made when first needed).
        self._buffer: ResponseBuffer | None = None
        #: Bytes the buffer had no room for: the app is held back until they are sent.
        self._held: bytes | None = None
        #: The response passes through unbuffered, with back-pressure to the app.
        self._streaming = False
        #: In DRAINING: close the connection once the buffer is sent (a cut response).
        self._abort_after = False
        #: A static file being sent (owned until _end).
        self._file: FileSender | None = None

    # -- getting a session ------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The request is complete and it is this exchange's turn on the connection."""
        self.state = QUEUED
        self.started_at = now
        site = self.site
        local = site.local
        if local is not None:
            answer = local(self.head, now)
            if answer is not None:  # the core's own (health check, admin API)
                self._respond_simple(
                    answer.status,
                    answer.body,
                    content_type=answer.content_type,
                    headers=answer.headers,
                )
                return
        app = site.only
        if app is None:
            app = site.route(self.head)
            if app is None:
                self._respond_simple(404, b"Not Found: no app is mounted here.\n")
                return
            self.app = app
        static = app.static
        if static is not None:
            reply = static.answer(self.head)
            if reply is not None:  # a file from a static directory, or its 404
                self._respond_static(reply)
                return
        if now >= app.next_restart_check:
            app.check_restart(now)
        self._checkout(now)

    def _checkout(self, now: float) -> None:
        app = self.app
        cookie = app.sticky_cookie
        if cookie is not None:
            self._sticky = sticky_id(self.head.headers, cookie)
        if self.stream_length >= 0 and not self._body_done:
            self.conn.hold_client(True)  # until the request goes out: no body piles up here
        outcome, effects = app.group.checkout(self, now, self._sticky)
        if isinstance(outcome, Session):
            self.session = outcome
            self.forwarded_at = now
            self._forward()
        elif isinstance(outcome, Waiter):
            self.waiter = outcome
        else:
            self._respond_rejected(outcome)
        if effects:
            app.driver.apply(effects)

    def granted(self, session: Session) -> None:
        """Called by the driver: the group handed this queued request a session."""
        self.waiter = None
        app = self.app
        now = self.forwarded_at = app.now()
        app.stats.queue_wait.observe(now - self.started_at)
        if self.state == DONE:
            # Cancelled in the same turn it was granted: give the capacity straight back.
            self.app.driver.apply(session.close(now))
            return
        self.session = session
        self._forward()

    def rejected(self, rejected: Rejected) -> None:
        """Called by the driver: this queued request will not get a session."""
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
        upstream = self.app.upstreams.of(session.process)
        # An upgrade gets a connection of its own: it may never come back to the pool.
        conn = upstream.take_idle() if upstream is not None and not self.upgrade else None
        if conn is not None:
            self._send_request(conn)
        else:
            self._connect()

    def _connect(self) -> None:
        session = self.session
        assert session is not None
        upstream = self.app.upstreams.of(session.process)
        if upstream is None:  # the process stopped since it was picked
            self._unreachable(ConnectionRefusedError("the app process has stopped"))
            return
        self.state = CONNECTING
        task = asyncio.ensure_future(upstream.connect())
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
        driver = self.app.driver
        gone = isinstance(exc, ConnectionRefusedError | FileNotFoundError)
        if gone:
            driver.process_unreachable(session.process, exc)
        now = self.app.now()
        driver.apply(session.close(now))
        if not gone:
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
                self.conn.fd_alert.fire(
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
        if self.stream_length >= 0:
            early, self._early_body = self._early_body, []
            for piece in early:
                conn.send_raw(piece)
            if not self._body_done:
                self.conn.hold_client(False)

    # -- the response, frame by frame (called by AppConnection) ------------------------------

    def on_head(self, payload: bytes) -> None:
        if self.state >= DRAINING:
            return
        if self._client_gone:
            self._drain_head = True  # the app is sending a reply nobody will read
            return
        if self.upgrade and payload.startswith(b"101 "):
            self._open_tunnel(payload)
            return
        # Answered before the client sent its whole (streamed) body: the rest of it makes
        # the connection unusable for another request.
        close = self.close_after or not self.keep_alive or self._body_streaming()
        key = (payload, self.head_only, self.head.version, close)
        plan = _HEAD_PLANS.get(key)
        if plan is None:
            plan = plan_head(*key)
            if len(payload) <= _HEAD_PLAN_MAX_SIZE:  # per-response heads (cookies) churn
                if len(_HEAD_PLANS) >= _HEAD_PLANS_LIMIT:
                    _HEAD_PLANS.clear()
                _HEAD_PLANS[key] = plan
        status, prefix, date, server, suffix, no_body, remaining, chunked, close, streaming = plan
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
        if streaming:
            self._streaming = True
            if self.conn.writing_paused and self.upstream is not None:
                self.upstream.pause_reading()  # the client is still taking in earlier bytes
        self._head_sent = True
        session = self.session
        if self.app.sticky_cookie is not None and session is not None:
            seq = session.process.seq
            if seq != self._sticky:  # a client new to this process learns its way back
                self._out.append(
                    prefix + DATES.lines(date, server) + self.app.sticky_line(seq) + suffix
                )
                return
        self._out.append(prefix + DATES.lines(date, server) + suffix)

    # -- a tunnel (WebSocket) -------------------------------------------------------------------

    def _open_tunnel(self, payload: bytes) -> None:
        """The app answered 101 to a WebSocket upgrade: the client gets the 101, then bytes
        pass both ways as they are, with back-pressure each way, until either side closes.
        The session stays open all along: the process counts the WebSocket as busy."""
        block = payload.partition(b"\r\n")[2]
        if _VALID_FIELDS.fullmatch(block) is None:  # as for any head (plan_head)
            self._respond_bad_gateway(b"the app sent an invalid header (name or value)")
            return
        head = [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        ]
        for line in block.split(b"\r\n"):
            name = line.partition(b":")[0].strip().lower()
            if line and name not in (
                b"upgrade",
                b"connection",
                b"content-length",
                b"transfer-encoding",
            ):
                head.append(line + b"\r\n")
        head.append(b"\r\n")
        self.status = 101
        self._head_sent = True
        self._tunnel = True
        self._streaming = True  # the app is paused while the client is, never buffered
        self._remaining = -1
        self._chunked = False
        self._no_body = False
        self.close_after = True
        conn = self.upstream
        if conn is not None:
            conn.tunnel = True
        self._out.append(b"".join(head))
        self.flush()
        self.conn.start_tunnel(self)

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the client, in a tunnel: to the app as they are."""
        conn = self.upstream
        if conn is not None:
            conn.send_raw(data)

    def upstream_paused(self) -> None:
        if self._tunnel or self._body_streaming():
            self.conn.hold_client(True)

    def upstream_resumed(self) -> None:
        if self._tunnel or self._body_streaming():
            self.conn.hold_client(False)

    # -- a streamed request body (--no-buffer-request-bodies) -----------------------------------

    @property
    def body_length(self) -> int:
        """The body's length: buffered, or (streamed) as its Content-Length says."""
        return self.stream_length if self.stream_length >= 0 else self.body.size

    def _body_streaming(self) -> bool:
        """Body bytes are still to come from the client, for the app."""
        return self.stream_length >= 0 and not self._body_done

    def stream_body(self, data: bytes) -> None:
        """A piece of a streamed body from the client: to the app, or kept until the
        request is sent (the client is held meanwhile)."""
        if self.state >= DRAINING:
            return  # answered already: the rest of the body goes nowhere
        conn = self.upstream
        if conn is not None and self.state == FORWARDING:
            conn.send_raw(data)
        else:
            self._early_body.append(data)

    def body_done(self) -> None:
        """The streamed body's last byte arrived (and went on to the app)."""
        self._body_done = True

    def on_body(self, payload: bytes) -> None:
        if self.state >= DRAINING:
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
        if self.state >= DRAINING:
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
        reusable = conn is not None and conn.reusable() and not self._tunnel
        self._finish(upstream_ok=reusable, abort_client=self._remaining > 0)

    def on_abort(self) -> None:
        """The app failed after sending the head: the client must not take it as complete."""
        if self.state >= DRAINING:
            return
        self.flush()
        conn = self.upstream
        self._finish(upstream_ok=conn is not None and conn.reusable(), abort_client=True)

    def on_upstream_lost(self, exc: Exception | None = None) -> None:
        """The connection to the process closed before the response ended (``exc``: how)."""
        conn = self.upstream
        self.upstream = None
        if self.state >= DRAINING:
            return
        if self._head_sent or self._client_gone:
            self.flush()
            self._finish(upstream_ok=False, abort_client=True)
        elif conn is not None and conn.uses == 1 and isinstance(exc, ConnectionResetError):
            # Reset, not closed: the process never accepted this connection (its listening
            # socket went away with the process, with ours still in its backlog). The
            # request did not reach the app: as if the connection had been refused.
            self._unreachable(ConnectionRefusedError(f"the connection was reset: {exc}"))
        elif (
            conn is not None
            and conn.uses > 1
            and not self._retried
            and self.head.method in _IDEMPOTENT
        ):
            # A reused connection the app had just closed (its keep-alive timeout):
            # the request did not get there. Send it again on a new connection.
            self._retried = True
            self._connect()
        else:
            self._respond_bad_gateway(b"the app process closed the connection")

    def on_bad_response(self, why: str) -> None:
        """The app broke the protocol on its connection (which will be closed)."""
        if self.state < DRAINING:
            self._respond_bad_gateway(b"the app broke the protocol: " + why.encode())

    def flush(self) -> None:
        """Send what the app's last batch of data produced (called after each batch)."""
        out = self._out
        if self._client_gone:
            out.clear()
            if self._drain_head and self.state < DRAINING:
                # The reply did not end with this batch: it streams. Closing the connection
                # stops the app at its next write, so its capacity is not held for nothing.
                self._finish(upstream_ok=False)
        elif out:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            if self._buffer is None and not self.conn.writing_paused:
                self.conn.write(data)  # the common case: the client keeps up
            else:
                self._send_slowly(data)

    # -- a client slower than the app ---------------------------------------------------------

    def _send_slowly(self, data: bytes) -> None:
        """The client is not keeping up (or bytes already wait): buffer ``data``, or hold
        the app back when it must not be (or cannot be) buffered."""
        conn = self.conn
        buffer = self._buffer
        if self._held is None and (buffer is None or not buffer.size) and not conn.writing_paused:
            conn.write(data)
            return
        if self._streaming:
            conn.write(data)  # its upstream is paused while the client is (client_paused)
            return
        if buffer is None:
            buffer = self._buffer = ResponseBuffer(conn.spool, conn.max_response_buffer)
        if self._held is None and buffer.push(data):
            return
        # No room: keep this piece aside and stop reading the app until the client catches up.
        self._held = data if self._held is None else self._held + data
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_paused(self) -> None:
        """The client's transport is full (called by the connection)."""
        if self._streaming and self.upstream is not None:
            self.upstream.pause_reading()

    def client_resumed(self) -> None:
        """The client's transport has room again (called by the connection)."""
        sender = self._file
        if sender is not None:
            sender.pump()
            return
        if self._streaming:
            if self.upstream is not None:
                self.upstream.resume_reading()
            return
        self._drain()

    def _drain(self) -> None:
        """Send what waits for the client while it takes it; end a DRAINING exchange once
        everything is out."""
        conn = self.conn
        buffer = self._buffer
        while not conn.writing_paused:
            data = buffer.take(_DRAIN_CHUNK) if buffer is not None else b""
            if not data:
                held = self._held
                if held is None:
                    break
                self._held = None
                data = held
                if self.upstream is not None:
                    self.upstream.resume_reading()
            conn.write(data)
        if self._held is not None and buffer is not None and buffer.push(self._held):
            self._held = None
            if self.upstream is not None:
                self.upstream.resume_reading()
        if self.state == DRAINING and self._held is None and (buffer is None or not buffer.size):
            self._end(self._abort_after)

    def time_out(self, limit: float) -> None:
        """The app has worked on this request for ``limit`` seconds (--max-request-time):
        504 to the client (or, with part of the response sent, a cut connection), and the
        process is killed and replaced: it hung."""
        session = self.session
        if session is None or self.state != FORWARDING:
            return
        process = session.process
        conn = self.upstream
        if conn is not None:
            # Left open: it closes with the process, which is killed (a Node loader asked
            # what it is doing still lists this request).
            self.upstream = None
            conn.exchange = None
        self._respond_simple(
            504, b"Gateway Timeout: the app took too long to answer (max_request_time).\n"
        )
        head = self.head
        request = f"{head.method.decode('latin-1')} {head.target.decode('latin-1')[:200]}"
        self.app.driver.request_timed_out(process, request, limit)

    def _respond_bad_gateway(self, why: bytes) -> None:
        session = self.session
        log.warning(
            "502 for %s %s%s: %s",
            self.head.method.decode("latin-1"),
            self.head.target.decode("latin-1")[:200],
            f" (app process {session.process.pid})" if session is not None else "",
            why.decode("utf-8", "replace"),
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
        headers: bytes = b"",
    ) -> None:
        """Answer with a response of the core's own, unless part of one was already sent."""
        if self.state >= DRAINING:
            return
        if self._head_sent:
            self._finish(upstream_ok=upstream_ok, abort_client=True)
            return
        # After a 400 the client's framing cannot be trusted: the connection closes.
        close = self.close_after or not self.keep_alive or status == 400
        self.close_after = close
        self.status = status
        data = simple_response(
            status,
            body,
            close=close,
            content_type=content_type,
            head_only=self.head_only,
            headers=headers,
        )
        self.bytes_sent += 0 if self.head_only else len(body)
        self.conn.write(data)
        self._finish(upstream_ok=upstream_ok)

    def _respond_static(self, reply: StaticReply) -> None:
        """Answer from a static directory (static.py): a head, then its small body or its
        file, which a FileSender writes while the client takes it."""
        # A streamed body still on its way: the connection cannot carry another request.
        close = self.close_after or not self.keep_alive or self._body_streaming()
        self.close_after = close
        self.status = reply.status
        if close:
            ending = b"Connection: close\r\n\r\n"
        elif self.head.version == b"1.0":
            ending = b"Connection: keep-alive\r\n\r\n"
        else:
            ending = b"\r\n"
        file = reply.file
        transport = self.conn.transport
        if file is None or self.head_only or transport is None:
            if file is not None:
                file.close()
            body = b"" if self.head_only else reply.body
            self.bytes_sent += len(body)
            self.conn.write(reply.head + ending + body)
            self._finish(upstream_ok=False)
            return
        # The app side has nothing to give back: only the request body (a GET may have one).
        self.state = DRAINING
        self.body.close()
        sender = FileSender(file, transport, self._static_sent)
        self._file = sender
        self.conn.write(reply.head + ending)
        sender.pump()

    def _static_sent(self, complete: bool) -> None:
        """The FileSender handed over the file's last byte (or failed: the connection is
        cut, the response being incomplete)."""
        if self.state != DONE:
            self._end(not complete)

    def cancel(self) -> None:
        """The client went away: give everything back, answer nothing.

        If the app is already working on the request, keep the session until it answers
        (the reply is read and dropped, see DRAIN_LIMIT): the process is busy until then,
        and the pool must go on counting it so.
        """
        if self.state == DONE:
            return
        if self._client_gone:
            return  # told already
        self._client_gone = True
        if (self._tunnel or self._body_streaming()) and self.state < DRAINING:
            # Either side closing ends a tunnel; a body cut short would keep the app
            # waiting for the rest: its connection closes, which tells it.
            self._finish(upstream_ok=False)
            return
        self._out.clear()
        self._held = None
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
        if self.state == DRAINING:
            self._end(abort=True)  # the app was done already: only the record is left
            return
        conn = self.upstream
        if self.state == FORWARDING and conn is not None and conn.request_sent:
            self._drain_head = self._head_sent  # a reply already streaming is cut at once
            conn.resume_reading()  # it may be paused for the client, who is gone now
            return  # on_end, on_abort, on_upstream_lost or flush finishes it
        # A connection still being opened goes back to the pool when it arrives (_connected).
        self._finish(upstream_ok=False)

    def _finish(self, *, upstream_ok: bool, abort_client: bool = False) -> None:
        """The app side is over: give back the upstream connection, the queue place or the
        session, and the request body; then end, or drain what waits for the client."""
        if self.state >= DRAINING:
            return
        was_request = self.state != RECEIVING
        self.state = DRAINING
        if self._body_streaming():
            # Answered before the whole body came (e.g. 413): the rest of it is still on
            # its way on both connections; neither can carry another request.
            upstream_ok = False
            self.close_after = True
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
        buffer = self._buffer
        if self._client_gone or (self._held is None and (buffer is None or not buffer.size)):
            self._end(abort_client, was_request)
        else:
            self._abort_after = abort_client  # _drain ends it once the client has it all
        if effects:
            app.driver.apply(effects)

    def _record(self) -> None:
        """The access log line and the counters (a request refused before it was complete
        has no duration)."""
        app = self.app
        app.access_log.record(self.head, self.status, self.bytes_sent)
        started = self.started_at
        app.stats.record(self.status, app.now() - started if started else 0.0)

    def _end(self, abort: bool, was_request: bool = True) -> None:
        """The client side is over: record the request, move the connection on."""
        self.state = DONE
        sender = self._file
        if sender is not None:
            self._file = None
            self.bytes_sent += sender.close()
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
        self._held = None
        if self._client_gone:
            if was_request:
                self.status = self.status or CLIENT_CLOSED
                self._record()
        else:
            self._record()
            self.conn.exchange_done(self, abort=abort)
