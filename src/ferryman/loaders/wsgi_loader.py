"""Ferryman's WSGI loader: runs inside an app process, under the app's own Python.

It imports the app's startup file, listens on a Unix socket and serves requests
that the Ferryman core has already parsed, over the *session protocol*
(docs/session-protocol.md; the core's side is ferryman/http/session_protocol.py).
Standard library only, Python >= 3.9: it must not import Ferryman or anything
the app does not have.

Life of the process:
* argv[1] is a JSON object: app root, startup file, socket path, thread count,
  handshake fd. The loader reports each step of its journey on the handshake fd
  as JSON lines, then ``ready`` (or ``error``) and closes it.
* ``thread_count`` threads each accept a connection from the core and serve the
  requests on it, one at a time, until the core closes it.
* stdin is the *owner pipe*: EOF means "exit now". If the core still lives, the
  loader stops accepting and finishes the requests in flight; if the core died,
  it exits at once.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import io
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import types

# Type names for mypy only: importing typing would cost every app process 0.6 MB of
# memory when the app does not import it itself (annotations are not evaluated).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Type

    # Spelled with typing's names: this file runs on Python 3.9.
    ExcInfo = Tuple[Type[BaseException], BaseException, Optional[TracebackType]]
    WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# -- session protocol (keep in step with ferryman/http/session_protocol.py) --------------

#: Request head: environ length, body length.
REQUEST_HEAD = struct.Struct("!IQ")
#: Response frame head: type byte, payload length.
FRAME_HEAD = struct.Struct("!cI")
FRAME_HEAD_RESPONSE = b"H"
FRAME_BODY = b"B"
FRAME_END = b"E"
FRAME_ABORT = b"A"
PROTOCOL = "session"
#: The handshake's version (keep in step with ferryman/spawning/kinds.py).
HANDSHAKE_VERSION = 1

MAX_FRAME = 1 << 20  # body chunks larger than this are split into several frames
#: How often a stopping loader looks whether its requests in flight have finished.
STOP_POLL_INTERVAL = 0.02
RECV_SIZE = 1 << 16
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    ]
)
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class Handshake(object):
    """Journey steps and the final ready/error message, as JSON lines to the core."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def keep_across_exec(self, keep: bool) -> None:
        """While the app loads, the fd survives exec: Passenger's INTERP idiom re-executes
        this loader under another interpreter (``os.execl(INTERP, INTERP, *sys.argv)``),
        which then reports on the same fd. Once loaded, processes the app starts must not
        hold it open."""
        if self.fd is not None:
            os.set_inheritable(self.fd, keep)

    def send(self, message: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(message) + "\n").encode("utf-8")
        while data:
            written = os.write(self.fd, data)
            data = data[written:]

    def step(self, name: str, state: str) -> None:
        self.send({"step": name, "state": state, "at": time.time()})

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class AppLoadError(Exception):
    """The app could not be loaded; ``kind`` says how (the core words the page)."""

    def __init__(self, kind: str, message: str, exc_info: ExcInfo | None = None) -> None:
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.exc_info = exc_info


def load_app(
    app_root: str, startup_file: str, interface: str = "wsgi", attribute: str | None = None
) -> Any:
    """Import the startup file as a module and return its ``interface`` ("wsgi" or
    "asgi") callable: ``attribute``, else 'application' or 'app'."""
    path = os.path.join(app_root, startup_file)
    if not os.path.isfile(path):
        raise AppLoadError("startup_file_missing", "startup file %s does not exist" % path)
    module_name = os.path.splitext(os.path.basename(startup_file))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError("import_error", "cannot import %s" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise AppLoadError(
            "syntax_error", "%s: %s" % (type(exc).__name__, exc), _exc_info(exc)
        ) from exc
    except BaseException as exc:  # the app may raise anything at import, SystemExit too
        raise AppLoadError(
            "import_error", "%s: %s" % (type(exc).__name__, exc), _exc_info(exc)
        ) from exc
    kind = interface.upper()
    for name in (attribute,) if attribute else ("application", "app"):
        app = getattr(module, name, None)
        if app is not None:
            if not callable(app):
                raise AppLoadError(
                    "app_not_callable",
                    "%s.%s is a %s, not a callable %s app"
                    % (module_name, name, type(app).__name__, kind),
                )
            if interface == "wsgi" and is_asgi_app(app):
                raise AppLoadError(
                    "asgi_app",
                    "%s.%s is an ASGI application (its __call__ is 'async def', taking scope, "
                    "receive and send), not a WSGI one" % (module_name, name),
                )
            if interface == "asgi" and not is_asgi_app(app) and call_arity(app) == 2:
                raise AppLoadError(
                    "wsgi_app",
                    "%s.%s is a WSGI application (it takes environ and start_response), not "
                    "an ASGI one" % (module_name, name),
                )
            return app
    if attribute:
        raise AppLoadError("app_missing", "%s defines no '%s'" % (startup_file, attribute))
    found = [name for name, value in vars(module).items() if _maybe_app(name, value, module_name)]
    hint = (
        " (it has %s; to serve it, add e.g. 'application = %s')" % (", ".join(found), found[0])
        if found
        else ""
    )
    raise AppLoadError(
        "app_missing", "%s defines neither 'application' nor 'app'%s" % (startup_file, hint)
    )


def load_or_report(
    handshake: Handshake,
    app_root: str,
    startup_file: str,
    interface: str = "wsgi",
    attribute: str | None = None,
) -> Any:
    """load_app, journey steps around it; on failure the error goes to the core and the
    process exits 1."""
    handshake.step("load_app", "in_progress")
    handshake.keep_across_exec(True)
    try:
        app = load_app(app_root, startup_file, interface, attribute)
    except AppLoadError as exc:
        tb = app_traceback(exc.exc_info) if exc.exc_info else ""
        if tb:
            sys.stderr.write(tb)
            sys.stderr.flush()
        handshake.send(
            {
                "error": {
                    "step": "load_app",
                    "kind": exc.kind,
                    "message": exc.message,
                    "traceback": tb,
                }
            }
        )
        handshake.close()
        sys.exit(1)
    handshake.keep_across_exec(False)
    handshake.step("load_app", "performed")
    return app


def call_arity(app: Any) -> int:
    """Positional parameters ``app`` takes when called (-1: cannot tell): 2 for a WSGI
    callable (environ, start_response), 3 for an ASGI one (scope, receive, send)."""
    if isinstance(app, types.MethodType):
        return app.__func__.__code__.co_argcount - 1
    if isinstance(app, types.FunctionType):
        return app.__code__.co_argcount
    call = next((vars(c)["__call__"] for c in type(app).__mro__ if "__call__" in vars(c)), None)
    if isinstance(call, types.FunctionType):
        return call.__code__.co_argcount - 1  # self
    return -1


#: The code flag of an ``async def`` function (inspect.CO_COROUTINE, without importing
#: inspect into every app process).
_CO_COROUTINE = 0x80


def is_asgi_app(app: Any) -> bool:
    """Whether ``app`` is an ASGI callable: an ``async def`` function, or an object whose
    ``__call__`` is one (FastAPI, Starlette, Django's ASGIHandler...)."""
    if isinstance(app, types.MethodType):
        app = app.__func__
    if not isinstance(app, types.FunctionType):
        # The __call__ the class defines or inherits, as a plain function (looked up in
        # the class dicts: getattr would bind it, or find a builtin slot wrapper).
        call = next((vars(c)["__call__"] for c in type(app).__mro__ if "__call__" in vars(c)), None)
        if not isinstance(call, types.FunctionType):
            return False
        app = call
    return bool(app.__code__.co_flags & _CO_COROUTINE)


def _maybe_app(name: str, value: Any, module_name: str) -> bool:
    """A public callable the startup file made itself: a function of its own, or an object
    (a Flask or Django app is an instance of an imported class)."""
    if name.startswith("_") or not callable(value) or isinstance(value, type):
        return False
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return getattr(value, "__module__", None) == module_name
    return True


def _exc_info(exc: BaseException) -> ExcInfo:
    return (type(exc), exc, exc.__traceback__)


#: The loaders' own files: their frames are left out of the app's tracebacks.
LOADER_FILES = {os.path.abspath(__file__)}


def app_traceback(exc_info: ExcInfo) -> str:
    """The traceback from the app's own first frame: the loader's and importlib's frames
    before it say nothing to the app's developer."""
    kind, value, tb = exc_info
    while tb is not None and (
        os.path.abspath(tb.tb_frame.f_code.co_filename) in LOADER_FILES
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    import traceback  # noqa: PLC0415 - see print_exception

    return "".join(traceback.format_exception(kind, value, tb))


def print_exception(header: str = "") -> None:
    """Write the exception being handled to stderr, which the core logs as the app's output."""
    # Imported here, on error paths only: it costs every app process 0.6 MB of memory
    # when the app does not import it itself.
    import traceback  # noqa: PLC0415

    sys.stderr.write(header + traceback.format_exc())
    sys.stderr.flush()


class BodySource(io.RawIOBase):
    """A request body that did not come whole with its head, as a raw stream: first the
    bytes that did come (``pending``), then the connection, ending where the body does
    (``left``), so that a buffered reader over it never reads into what follows."""

    def __init__(self, sock: Any) -> None:
        io.RawIOBase.__init__(self)
        self._sock = sock
        self.pending: memoryview | None = None
        #: Bytes of the current body still in the connection.
        self.left = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        pending = self.pending
        if pending is not None:
            count = min(len(view), len(pending))
            view[:count] = pending[:count]
            self.pending = pending[count:] if count < len(pending) else None
            return count
        if self.left <= 0:
            return 0
        received: int = self._sock.recv_into(view, min(len(view), self.left))
        self.left -= received
        return received  # 0: the core closed the connection


class Bodies(object):
    """The request bodies on one connection: each one's wsgi.input."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        # Made for the first body that does not come whole: its 64 KiB buffer would stay
        # resident for every kept-alive connection otherwise.
        self._source: BodySource | None = None
        self._reader: io.BufferedReader[Any] | None = None

    def input(self, data: bytes, start: int, length: int) -> Input:
        """wsgi.input for a body of ``length`` bytes, the first of which are ``data[start:]``."""
        if not length:
            return EMPTY_INPUT  # one for all bodiless requests: it has nothing to change
        end = start + length
        if end <= len(data):
            return Input(None, data[start:end], length)  # small: it came whole
        if self._source is None or self._reader is None:
            self._source = BodySource(self._sock)
            self._reader = io.BufferedReader(self._source, RECV_SIZE)
        self._source.pending = memoryview(data)[start:] if start < len(data) else None
        self._source.left = end - len(data)
        return Input(self._reader, None, length)


class Input(object):
    """wsgi.input: the request body, never read past its end (the next request follows it).

    A body that came whole with the request head is served from memory (``body``); a
    larger one streams through the connection's buffered reader.
    """

    __slots__ = ("_body", "_reader", "remaining")

    def __init__(
        self, reader: io.BufferedReader[Any] | None, body: bytes | None, length: int
    ) -> None:
        self._reader = reader
        #: The whole body when it came with the head (read from ``len(body) - remaining``).
        self._body = body
        #: Bytes of the body not yet returned.
        self.remaining = length

    def _cut_short(self) -> ConnectionError:
        self.remaining = 0
        return ConnectionError("request body cut short")

    def read(self, size: int | None = -1) -> bytes:
        remaining = self.remaining
        if remaining <= 0:
            return b""
        if size is None or size < 0 or size > remaining:
            size = remaining
        body = self._body
        if body is not None:
            start = len(body) - remaining
            self.remaining = remaining - size
            return body if size == len(body) else body[start : start + size]
        assert self._reader is not None
        data = self._reader.read(size)
        if len(data) < size:
            raise self._cut_short()
        self.remaining = remaining - size
        return data

    def readline(self, size: int | None = -1) -> bytes:
        remaining = self.remaining
        if remaining <= 0:
            return b""
        if size is None or size < 0 or size > remaining:
            size = remaining
        body = self._body
        if body is not None:
            start = len(body) - remaining
            end = body.find(b"\n", start, start + size) + 1 or start + size
            self.remaining = len(body) - end
            return body[start:end]
        assert self._reader is not None
        data = self._reader.readline(size)
        if len(data) < size and not data.endswith(b"\n"):
            raise self._cut_short()
        self.remaining = remaining - len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self) -> None:
        """Read and drop what the app left of the body, so the next request starts in step."""
        while self.remaining > 0:
            self.read(min(self.remaining, RECV_SIZE))


EMPTY_INPUT = Input(None, b"", 0)


class FileWrapper(object):
    """wsgi.file_wrapper: iterates a file in blocks and closes it when done."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data  # type: ignore[no-any-return]
        raise StopIteration


def frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME_HEAD.pack(kind, len(payload)) + payload


class BadResponse(Exception):
    """The app broke the WSGI contract (status or headers)."""


def _check_status(status: Any) -> None:
    if not isinstance(status, str):
        raise BadResponse("status must be a str, got %r" % (status,))
    code = status[:3]
    if len(status) < 4 or not code.isdigit() or status[3] != " " or int(code) < 100:
        raise BadResponse("status must look like '200 OK', got %r" % (status,))
    if not _CONTROL.isdisjoint(status):
        raise BadResponse("status contains a control character: %r" % (status,))


#: Statuses and header names already checked, so that each is checked once, not per request.
#: A name maps to what it is: DROP (hop-by-hop), KEEP, or LENGTH (Content-Length). Bounded
#: in entries and bytes: at most _CACHE_LIMIT of them, none longer than _CACHE_MAX_CHARS.
_GOOD_STATUSES: set[str] = set()
_GOOD_NAMES: dict[str, int] = {}
_CACHE_LIMIT = 1024
_CACHE_MAX_CHARS = 64
#: Control characters other than tab (RFC 9110 5.5): never in a status or header value.
_CONTROL = frozenset([chr(i) for i in range(32) if i != 9] + ["\x7f"])
DROP, KEEP, LENGTH = 0, 1, 2


def _head_payload(status: str, headers: list[Any], length: int | None = None) -> bytes:
    """The H frame: status line, then 'Name: value' lines, CRLF-terminated, hop-by-hop dropped.

    With ``length`` (the whole body's size, when the app returned it at once), a
    Content-Length is added if the app gave none and the status allows one.
    """
    if status not in _GOOD_STATUSES:
        _check_status(status)
        if len(_GOOD_STATUSES) < _CACHE_LIMIT and len(status) <= _CACHE_MAX_CHARS:
            _GOOD_STATUSES.add(status)
    parts = [status, "\r\n"]
    good_names = _GOOD_NAMES
    seen_length = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise BadResponse("headers must be (name, value) tuples, got %r" % (item,))
        name, value = item
        kind = good_names.get(name)
        if kind is None:
            if type(name) is not str or not name or not _TOKEN_CHARS.issuperset(name):
                raise BadResponse("invalid header name %r" % (name,))
            lower = name.lower()
            # PEP 3333: hop-by-hop headers are the server's own
            kind = DROP if lower in HOP_BY_HOP else LENGTH if lower == "content-length" else KEEP
            if len(good_names) < _CACHE_LIMIT and len(name) <= _CACHE_MAX_CHARS:
                good_names[name] = kind
        if type(value) is not str:
            raise BadResponse("header values must be str, got %r" % (item,))
        if not value.isprintable() and not _CONTROL.isdisjoint(value):  # the first: fast path
            raise BadResponse("header %s has a control character in its value" % name)
        if kind == LENGTH:
            if not value.isdigit() or seen_length:
                raise BadResponse("invalid or repeated Content-Length: %r" % (value,))
            seen_length = True
        if kind:
            parts += (name, ": ", value, "\r\n")
    # No Content-Length where a body is not allowed (1xx, 204, 304: RFC 9110 8.6).
    if length is not None and not seen_length and status[0] != "1" and status[:3] not in NO_BODY:
        parts += ("Content-Length: ", str(length), "\r\n")
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError:
        raise BadResponse("status and headers must be latin-1 text") from None


#: Whole H frames by (status, headers, length): at most _HEAD_FRAME_LIMIT of them, none
#: larger than _HEAD_FRAME_MAX_BYTES (256 KiB in all, per process).
_HEAD_FRAMES: dict[Any, bytes] = {}
_HEAD_FRAME_LIMIT = 256
_HEAD_FRAME_MAX_BYTES = 1024
NO_BODY = ("204", "304")
ERROR_500 = (
    b"500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 22\r\n"
)
ERROR_500_BODY = b"Internal Server Error\n"


class Request(object):
    """One request's WSGI cycle on a connection."""

    __slots__ = ("head_only", "head_sent", "headers", "sock", "status")

    def __init__(self, sock: socket.socket, head_only: bool) -> None:
        self.sock = sock
        self.status: str | None = None
        self.headers: list[Any] = []
        self.head_sent = False
        self.head_only = head_only

    def start_response(
        self, status: str, headers: list[Any], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        if not isinstance(headers, list):
            raise BadResponse("headers must be a list, got %s" % type(headers).__name__)
        self.status = status
        self.headers = headers
        return self.write

    def head_frame(self, length: int | None = None) -> bytes:
        """The H frame; ``length`` is the whole body's size when it is known."""
        status = self.status
        if status is None:
            raise BadResponse("the app returned without calling start_response")
        # Most responses of an app repeat a few heads: the whole frame is cached by
        # what makes it. Only heads that passed the checks are cached, so a hit needs none.
        try:
            key: Any = (status, tuple(self.headers), length)
            head = _HEAD_FRAMES.get(key)
        except TypeError:  # an unhashable header (a list, say): _head_payload says what
            key = head = None
        if head is None:
            payload = _head_payload(status, self.headers, length)
            head = FRAME_HEAD.pack(FRAME_HEAD_RESPONSE, len(payload)) + payload
            if key is not None and len(head) <= _HEAD_FRAME_MAX_BYTES:
                if len(_HEAD_FRAMES) >= _HEAD_FRAME_LIMIT:
                    _HEAD_FRAMES.clear()  # heads that vary per request (dates, cookies)
                _HEAD_FRAMES[key] = head
        self.head_sent = True  # only now: headers the app got wrong still allow a 500
        return head

    def write(self, data: bytes) -> None:
        """The legacy write() callable: sends at once."""
        if type(data) is not bytes:
            raise BadResponse("write() takes bytes, got %s" % type(data).__name__)
        out: list[bytes | memoryview] = [] if self.head_sent else [self.head_frame()]
        if data and not self.head_only:
            out.extend(body_frames(data))
        if out:
            self.sock.sendall(b"".join(out))


def body_frames(data: bytes) -> list[bytes | memoryview]:
    if len(data) <= MAX_FRAME:
        return [FRAME_HEAD.pack(FRAME_BODY, len(data)), data]
    out: list[bytes | memoryview] = []
    view = memoryview(data)
    for start in range(0, len(data), MAX_FRAME):
        piece = view[start : start + MAX_FRAME]
        out.append(FRAME_HEAD.pack(FRAME_BODY, len(piece)))
        out.append(piece)
    return out


END_FRAME = frame(FRAME_END, b"")


class Server(object):
    """The accept-and-serve threads and the graceful exit."""

    def __init__(
        self, app: WSGIApp, listener: socket.socket, threads: int, base_environ: dict[str, Any]
    ) -> None:
        self.app = app
        self.listener = listener
        self.threads = threads
        self.base_environ = base_environ
        self.stopping = False
        #: busy[i]: worker i is serving a request. Each worker writes only its own slot, so
        #: no lock is taken per request; stop() polls the list.
        self.busy = [False] * threads

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self.worker, args=(i,), name="ferryman-worker-%d" % i)
            t.daemon = True  # interpreter exit must not wait for idle keep-alive reads
            t.start()

    def worker(self, index: int) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # listener shut down: the process is stopping
            try:
                self.serve_connection(conn, index)
            except (ConnectionError, BrokenPipeError):
                pass  # the core closed the connection mid-request; it knows
            except Exception:
                print_exception()
            finally:
                conn.close()

    def serve_connection(self, conn: socket.socket, index: int) -> None:
        # Straight recv() into bytes, not a buffered file: a small request arrives whole in
        # one recv, and this loop is much of the loader's work per request.
        recv = conn.recv
        head_size = REQUEST_HEAD.size
        data = b""  # received, not yet handled
        bodies = Bodies(conn)
        busy = self.busy
        while not self.stopping:
            while len(data) < head_size:
                more = recv(RECV_SIZE)
                if not more:
                    return  # the core closed the connection
                data += more
            environ_len, body_len = REQUEST_HEAD.unpack_from(data)
            body_at = head_size + environ_len
            while len(data) < body_at:
                more = recv(max(RECV_SIZE, body_at - len(data)))
                if not more:
                    return
                data += more
            body_end = body_at + body_len
            busy[index] = True
            try:
                self.handle(conn, data[head_size:body_at], bodies.input(data, body_at, body_len))
            finally:
                busy[index] = False
            data = data[body_end:] if len(data) > body_end else b""

    def handle(self, conn: socket.socket, block: bytes, wsgi_input: Input) -> None:
        """One request: its environ block, and its body as wsgi.input."""
        items = iter(block.decode("latin-1").split("\0"))
        environ = self.base_environ.copy()
        environ.update(zip(items, items))  # noqa: B905 - pairs; zip(strict) is 3.10+
        environ["wsgi.input"] = wsgi_input
        environ["wsgi.url_scheme"] = environ.pop("ferryman.url_scheme", "http")
        request = Request(conn, environ["REQUEST_METHOD"] == "HEAD")
        result: Iterable[bytes] | None = None
        try:
            result = self.app(environ, request.start_response)
            self.send_result(request, result)
        except BaseException as exc:
            if isinstance(exc, (ConnectionError, BrokenPipeError)) and request.head_sent:
                raise  # the core went away mid-response: this connection is finished
            # SystemExit and KeyboardInterrupt from a request are app errors too: ending
            # this thread would leave the process listed with a thread fewer than it has.
            self.app_failed(request)
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()  # PEP 3333: on every path
                except Exception:
                    print_exception()
        wsgi_input.drain()

    def send_result(self, request: Request, result: Iterable[bytes]) -> None:
        if type(result) in (list, tuple):
            # The whole body is known: one write, with Content-Length when the app left it out.
            if len(result) == 1:  # type: ignore[arg-type]
                body = result[0]  # type: ignore[index]
                if type(body) is not bytes:
                    raise BadResponse("the app yielded %s, not bytes" % type(body).__name__)
            else:
                for chunk in result:
                    if type(chunk) is not bytes:
                        raise BadResponse("the app yielded %s, not bytes" % type(chunk).__name__)
                body = b"".join(result)
            # An empty body for HEAD says nothing of the GET body's length (frameworks
            # return [] for HEAD): no Content-Length then.
            known = len(body) if body or not request.head_only else None
            head = request.head_frame(known) if not request.head_sent else b""
            if not body or request.head_only:
                request.sock.sendall(head + END_FRAME)
            elif len(body) <= MAX_FRAME:
                request.sock.sendall(
                    b"".join((head, FRAME_HEAD.pack(FRAME_BODY, len(body)), body, END_FRAME))
                )
            else:
                request.sock.sendall(b"".join([head, *body_frames(body), END_FRAME]))
            return
        for chunk in result:
            if type(chunk) is not bytes:
                raise BadResponse("the app yielded %s, not bytes" % type(chunk).__name__)
            if not chunk:
                continue
            if request.head_only:
                break  # HEAD: headers are set once the first chunk exists; skip the body
            frames: list[bytes | memoryview] = [] if request.head_sent else [request.head_frame()]
            frames.extend(body_frames(chunk))
            request.sock.sendall(b"".join(frames))
        last = END_FRAME if request.head_sent else request.head_frame() + END_FRAME
        request.sock.sendall(last)

    def app_failed(self, request: Request) -> None:
        """Log the app's exception; answer 500 if nothing was sent yet, else abort the response."""
        print_exception("Error while serving a request:\n")
        if request.head_sent:
            request.sock.sendall(frame(FRAME_ABORT, b"the app raised mid-response"))
        else:
            out: list[bytes | memoryview] = [frame(FRAME_HEAD_RESPONSE, ERROR_500)]
            if not request.head_only:
                out.extend(body_frames(ERROR_500_BODY))
            out.append(END_FRAME)
            request.sock.sendall(b"".join(out))

    def stop(self, core_alive: Callable[[], bool]) -> None:
        """Stop accepting; finish requests in flight unless the core is gone."""
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes threads blocked in accept()
        except OSError:
            pass
        self.listener.close()
        while any(self.busy) and core_alive():
            time.sleep(STOP_POLL_INTERVAL)


def set_process_title(title: str) -> None:
    try:
        import setproctitle  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        return
    setproctitle.setproctitle(title)


#: Whether the process still waits for its stop (see on_sigterm): a list, so that the
#: signal handler and the main flow share it.
_WAITING = [False]


def wait_for_owner_eof() -> None:
    """Block until the core closes our stdin (or dies), or SIGTERM raises Terminated."""
    while True:
        try:
            data = os.read(0, 4096)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
    # (A SIGTERM from here on finds the wait over: it does not raise into the stop.)
    _WAITING[0] = False


def begin(args: dict[str, Any], title: str) -> Handshake:
    """A Python loader's first steps: loader_start on the handshake, the app's directory
    as the working directory and first on sys.path, the process title."""
    handshake = Handshake(args.get("handshake_fd"))
    handshake.send(
        {
            "step": "loader_start",
            "state": "performed",
            "at": time.time(),
            "interpreter": "Python %s (%s)" % (sys.version.split()[0], sys.executable),
        }
    )
    app_root = args["app_root"]
    # The loaders' own directory must not shadow the app's modules (wsgi.py, app.py...).
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.path.insert(0, app_root)
    os.chdir(app_root)
    set_process_title("%s: %s" % (title, app_root))
    # Signals ignored by whoever started the server (a shell runs a background job with
    # SIGINT and SIGQUIT ignored) are not the app's choice, and would keep the stop on
    # SIGTERM and the stack dump on SIGQUIT from working: back to the defaults, before
    # the app loads and may set its own.
    for sig in (signal.SIGTERM, signal.SIGQUIT):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    return handshake


def main() -> None:
    args = json.loads(sys.argv[1])
    parent = os.getppid()
    handshake = begin(args, "Ferryman WSGI")
    app_root = args["app_root"]

    app = load_or_report(
        handshake, app_root, args["startup_file"], "wsgi", args.get("app_attribute")
    )

    handshake.step("listen", "in_progress")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args["socket"])
    listener.listen(max(64, args["threads"] * 4))
    handshake.step("listen", "performed")

    threads = args["threads"]
    base_environ = {
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": threads > 1,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    server = Server(app, listener, threads, base_environ)
    server.start()

    # The handlers before "ready": a SIGTERM sent as soon as the core hears it (systemd's
    # control-group kill right after a spawn) is an orderly stop, not signal 15. From
    # here on it raises Terminated, caught below wherever it lands.
    _WAITING[0] = True
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # the app's own handler wins
            signal.signal(signal.SIGTERM, lambda signum, frame: on_sigterm())
        if signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL:
            # Before killing a hung process (--max-request-time), the core sends SIGQUIT:
            # every thread's stack goes to the log. faulthandler writes from the C signal
            # handler, so it works even while a thread holds the GIL in a C extension.
            faulthandler.register(signal.SIGQUIT, file=2, all_threads=True)
        try:
            handshake.step("ready", "performed")
            handshake.send(
                {
                    "ready": {
                        "version": HANDSHAKE_VERSION,
                        "socket": args["socket"],
                        "protocol": PROTOCOL,
                        "concurrency": threads,
                        "pid": os.getpid(),
                    }
                }
            )
        finally:
            handshake.close()
        wait_for_owner_eof()
    except Terminated:
        pass  # SIGTERM (systemd, docker stop): the same orderly stop as the core's
    server.stop(core_alive=lambda: os.getppid() == parent)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(0)


class Terminated(Exception):
    """SIGTERM arrived: stop as when the core closes stdin."""


def on_sigterm() -> None:
    """The first SIGTERM stops the process in order: no new requests, those in flight
    finish, exit 0 (as under systemd's control-group kill or docker stop, which signal
    every process at once). One that comes while stopping already (stdin closed, or a
    SIGTERM before) ends it at once.

    It raises Terminated only into the wait (wait_for_owner_eof), which is the one place
    that catches it: the flag is cleared by whichever comes first, the end of the wait or
    this handler. Judged by the server's own stopping flag instead, a SIGTERM just after
    stdin closed (a second stop: the core closes stdin, then signals at once) raised into
    Server.stop, before it set that flag: a traceback instead of a stop."""
    if not _WAITING[0]:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _WAITING[0] = False
    sys.stderr.write("Ferryman loader: received SIGTERM; finishing the requests in flight\n")
    sys.stderr.flush()
    raise Terminated


if __name__ == "__main__":
    main()
