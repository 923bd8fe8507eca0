"""The WSGI loader's pure parts: the response head, body frames and wsgi.input."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ferryman.http.session_protocol import FRAME_BODY, FRAME_HEAD, FrameReader

from .loader_copy import LOADER_PATH, wsgi_loader

loader = wsgi_loader()
BadResponse: type[Exception] = loader.BadResponse
MAX_FRAME: int = loader.MAX_FRAME


def head_payload(status: Any, headers: list[Any]) -> bytes:
    payload: bytes = loader._head_payload(status, headers)
    return payload


# -- the head frame ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "payload"),
    [
        ("204 No Content", [], b"204 No Content\r\n"),
        (
            "200 OK",
            [("Content-Type", "text/plain"), ("X-A", "1")],
            b"200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n",
        ),
        ("200 OK", [("X-Dup", "a"), ("X-Dup", "b")], b"200 OK\r\nX-Dup: a\r\nX-Dup: b\r\n"),
        ("200 ", [("X-Empty", "")], b"200 \r\nX-Empty: \r\n"),
        ("404 Not Found", [("X-Tab", "a\tb")], b"404 Not Found\r\nX-Tab: a\tb\r\n"),
        ("200 OK", [("X-Latin", "caf\xe9")], b"200 OK\r\nX-Latin: caf\xe9\r\n"),
        ("599 Odd", [("!#$%&'*+-.^_`|~", "v")], b"599 Odd\r\n!#$%&'*+-.^_`|~: v\r\n"),
    ],
)  # fmt: skip
def test_head_payload_layout(status: str, headers: list[Any], payload: bytes) -> None:
    """The status line, then one 'Name: value' line per header, each ending in CRLF."""
    assert head_payload(status, headers) == payload


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "keep-alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "UPGRADE",
    ],
)
def test_hop_by_hop_headers_are_dropped(name: str) -> None:
    """Hop-by-hop headers belong to the server and are dropped whatever their case."""
    headers = [("X-Before", "1"), (name, "x"), ("X-After", "2")]
    assert head_payload("200 OK", headers) == b"200 OK\r\nX-Before: 1\r\nX-After: 2\r\n"


@pytest.mark.parametrize(
    ("status", "headers", "added"),
    [
        ("200 OK", [("Content-Type", "text/plain")], True),
        ("404 Not Found", [], True),
        ("200 OK", [("content-LENGTH", "5")], False),  # the app's own stays, no second one
        ("204 No Content", [], False),  # no body allowed: no length either
        ("304 Not Modified", [("ETag", '"x"')], False),
        ("103 Early Hints", [], False),
    ],
)
def test_content_length_added_for_a_known_body(
    status: str, headers: list[Any], added: bool
) -> None:
    """With the whole body's length known, Content-Length is added where the app gave none
    and the status allows a body; the headers are the same either way otherwise."""
    with_length: bytes = loader._head_payload(status, headers, 5)
    without = head_payload(status, headers)
    if added:
        assert with_length == without + b"Content-Length: 5\r\n"
    else:
        assert with_length == without


@pytest.mark.parametrize(
    "status",
    [
        b"200 OK",
        200,
        None,
        "200",
        "200OK",
        "2000 OK",
        " 200 OK",
        "abc OK",
        "099 Too Low",
        "000 Zero",
        "",
        "200 OK\r\nX-Injected: 1",
        "200 OK\n",
        "200 O\0K",
        "200 \u2713",
    ],
)
def test_invalid_status_is_refused(status: Any) -> None:
    """A status that is not '<3 digits >= 100> <reason>' on one line of latin-1 is refused."""
    with pytest.raises(BadResponse):
        head_payload(status, [])


@pytest.mark.parametrize(
    "header",
    [
        ("", "v"),
        ("Bad Name", "v"),
        ("Bad:Name", "v"),
        ("Bad\r\nName", "v"),
        ("X-Caf\xe9", "v"),
        ("X-(paren)", "v"),
        ("X-A", "line\r\nX-Injected: 1"),
        ("X-A", "line\nbreak"),
        ("X-A", "carriage\rreturn"),
        ("X-A", "nul\0byte"),
        ("X-A", "vertical\x0btab"),
        ("X-A", "escape\x1b[31m"),
        ("X-A", "delete\x7f"),
        ("X-A", "bell\x07"),
        ("X-A", "\u20ac"),
        (b"X-A", "v"),
        ("X-A", b"v"),
        ("X-A", 1),
        ("X-A", None),
        ["X-A", "v"],
        ("X-A", "v", "extra"),
        ("X-A",),
        "X-A: v",
    ],
)
def test_invalid_headers_are_refused(header: Any) -> None:
    """Headers must be (str, str) tuples with a token name and a one-line latin-1 value."""
    with pytest.raises(BadResponse):
        head_payload("200 OK", [("X-Good", "1"), header])


def test_tabs_and_latin_1_text_are_fine_in_values() -> None:
    payload = head_payload("200 OK", [("X-A", "a\tb"), ("X-B", "caf\xe9")])
    assert payload == b"200 OK\r\nX-A: a\tb\r\nX-B: caf\xe9\r\n"


def test_the_name_and_status_caches_are_bounded_in_bytes() -> None:
    """Long names and statuses are checked every time rather than kept."""
    long_name = "X-" + "n" * 100
    long_status = "200 " + "r" * 100
    head_payload(long_status, [(long_name, "v")])
    assert long_name not in loader._GOOD_NAMES
    assert long_status not in loader._GOOD_STATUSES
    assert all(len(name) <= 64 for name in loader._GOOD_NAMES)


def test_invalid_hop_by_hop_header_is_still_refused() -> None:
    """A hop-by-hop header is checked before it is dropped: a bad value is an error."""
    with pytest.raises(BadResponse):
        head_payload("200 OK", [("Connection", "close\r\nX-Injected: 1")])


# -- body frames -------------------------------------------------------------------------


def read_frames(pieces: list[bytes | memoryview]) -> list[tuple[bytes, bytes]]:
    reader = FrameReader()
    frames = reader.feed(b"".join(pieces))
    assert reader.pending == 0
    return frames


def body_of(size: int) -> bytes:
    return (bytes(range(253)) * (size // 253 + 1))[:size]


@pytest.mark.parametrize(
    ("size", "frame_sizes"),
    [
        (0, [0]),
        (1, [1]),
        (MAX_FRAME - 1, [MAX_FRAME - 1]),
        (MAX_FRAME, [MAX_FRAME]),
        (MAX_FRAME + 1, [MAX_FRAME, 1]),
        (2 * MAX_FRAME, [MAX_FRAME, MAX_FRAME]),
        (2 * MAX_FRAME + MAX_FRAME // 2, [MAX_FRAME, MAX_FRAME, MAX_FRAME // 2]),
    ],
)
def test_body_frames_split_at_max_frame(size: int, frame_sizes: list[int]) -> None:
    """A body becomes B frames of at most MAX_FRAME bytes that join back to the body."""
    data = body_of(size)
    frames = read_frames(loader.body_frames(data))
    assert [kind for kind, _ in frames] == [FRAME_BODY] * len(frame_sizes)
    assert [len(payload) for _, payload in frames] == frame_sizes
    assert b"".join(payload for _, payload in frames) == data


def test_body_frames_heads_and_pieces_alternate() -> None:
    """The pieces alternate: a frame head, then exactly the payload it announces."""
    pieces = loader.body_frames(body_of(2 * MAX_FRAME + 7))
    assert len(pieces) == 6
    for head, payload in zip(pieces[0::2], pieces[1::2], strict=True):
        assert FRAME_HEAD.unpack(head) == (FRAME_BODY, len(payload))


# -- wsgi.input --------------------------------------------------------------------------

BODY = b"first line\nsecond\n\nlast without newline"
AFTER = b"NEXT REQUEST BYTES\n"


class Trickle:
    """A connection that hands out at most ``step`` bytes per recv (short reads on purpose)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.stream = io.BytesIO(data)
        self.step = step

    def recv_into(self, buffer: memoryview, size: int) -> int:
        assert 0 < size <= len(buffer)
        data = self.stream.read(min(size, self.step))
        buffer[: len(data)] = data
        return len(data)


def body_input(conn: Trickle, head: bytes, length: int) -> Any:
    """wsgi.input as the loader makes it: ``head`` came with the request, the rest of the
    body is in ``conn``."""
    return loader.Bodies(conn).input(head, 0, length)


#: How the body reaches the loader: (bytes that came with the request head, recv size).
ARRIVALS = [(0, 1 << 16), (len(BODY), 1 << 16), (5, 3), (0, 1)]
MakeInput = Callable[..., tuple[Any, io.BytesIO]]


@pytest.fixture(params=ARRIVALS, ids=lambda a: f"buffered{a[0]}-step{a[1]}")
def wsgi_input(request: pytest.FixtureRequest) -> MakeInput:
    """Makes an Input whose connection holds the rest of the body and then bytes that belong
    to the next request; each test runs with the body arriving in several ways."""
    buffered, step = request.param

    def make(body: bytes = BODY, after: bytes = AFTER) -> tuple[Any, io.BytesIO]:
        head = body[:buffered]
        conn = Trickle(body[len(head) :] + after, step)
        return body_input(conn, head, len(body)), conn.stream

    return make


def assert_rest_unread(stream: io.BytesIO, after: bytes = AFTER) -> None:
    assert stream.read() == after, "read past the body"


@pytest.mark.parametrize("size", [-1, None, len(BODY), len(BODY) + 1, 10**9])
def test_read_all_stops_at_the_body_end(size: int | None, wsgi_input: MakeInput) -> None:
    """read() with no size, a negative one or one past the end returns exactly the body."""
    body, rfile = wsgi_input()
    assert body.read(size) == BODY
    assert body.read(size) == b""
    assert body.read() == b""
    assert_rest_unread(rfile)


@pytest.mark.parametrize("size", [1, 3, 7, 16])
def test_read_in_pieces(size: int, wsgi_input: MakeInput) -> None:
    """read(n) returns n bytes at a time, the last piece short, then b''."""
    body, rfile = wsgi_input()
    pieces = []
    while piece := body.read(size):
        assert len(piece) <= size
        pieces.append(piece)
    assert b"".join(pieces) == BODY
    assert all(len(p) == size for p in pieces[:-1])
    assert_rest_unread(rfile)


def test_read_zero(wsgi_input: MakeInput) -> None:
    """read(0) returns b'' and consumes nothing."""
    body, rfile = wsgi_input()
    assert body.read(0) == b""
    assert body.read() == BODY
    assert_rest_unread(rfile)


def test_readline_stops_at_the_body_end(wsgi_input: MakeInput) -> None:
    """readline() gives each line with its newline; the last one ends at the body, not beyond."""
    body, rfile = wsgi_input()
    assert body.readline() == b"first line\n"
    assert body.readline() == b"second\n"
    assert body.readline() == b"\n"
    assert body.readline() == b"last without newline"
    assert body.readline() == b""
    assert_rest_unread(rfile)


@pytest.mark.parametrize("size", [1, 4, 5, 11, 100])
def test_readline_with_a_size(size: int, wsgi_input: MakeInput) -> None:
    """readline(n) returns at most n bytes, and all lines together are the body."""
    body, rfile = wsgi_input()
    lines = []
    while line := body.readline(size):
        assert len(line) <= size
        lines.append(line)
    assert b"".join(lines) == BODY
    assert_rest_unread(rfile)


def test_readlines(wsgi_input: MakeInput) -> None:
    """readlines() returns every line of the body and no line of what follows it."""
    body, rfile = wsgi_input()
    assert body.readlines() == [b"first line\n", b"second\n", b"\n", b"last without newline"]
    assert_rest_unread(rfile)


@pytest.mark.parametrize(
    ("hint", "count"), [(1, 1), (11, 1), (12, 2), (18, 2), (19, 3), (20, 4), (10**6, 4)]
)
def test_readlines_with_a_hint(hint: int, count: int, wsgi_input: MakeInput) -> None:
    """readlines(hint) stops after the line that brings the total to the hint."""
    body, rfile = wsgi_input()
    lines = body.readlines(hint)
    assert len(lines) == count
    rest = body.read()
    assert b"".join(lines) + rest == BODY
    assert_rest_unread(rfile)


def test_iteration(wsgi_input: MakeInput) -> None:
    """Iterating wsgi.input gives the body's lines and stops at its end."""
    body, rfile = wsgi_input()
    assert list(body) == [b"first line\n", b"second\n", b"\n", b"last without newline"]
    assert_rest_unread(rfile)


def test_body_ending_in_a_newline_with_a_line_after_it(wsgi_input: MakeInput) -> None:
    """A body ending at a newline does not run into the next request's line."""
    body, rfile = wsgi_input(b"a\nb\n", b"c\nd\n")
    assert list(body) == [b"a\n", b"b\n"]
    assert_rest_unread(rfile, b"c\nd\n")


def test_empty_body(wsgi_input: MakeInput) -> None:
    """With no body every read returns b'' and the stream is not touched."""
    body, rfile = wsgi_input(b"")
    assert (body.read(), body.readline(), body.readlines(), list(body)) == (b"", b"", [], [])
    assert_rest_unread(rfile)


def test_mixed_reads(wsgi_input: MakeInput) -> None:
    """read, readline and iteration can be mixed and share one position."""
    body, rfile = wsgi_input()
    assert body.read(6) == b"first "
    assert body.readline() == b"line\n"
    assert next(body) == b"second\n"
    assert body.read() == b"\nlast without newline"
    assert_rest_unread(rfile)


def test_drain_consumes_only_the_body(wsgi_input: MakeInput) -> None:
    """drain() reads what the app left of the body and stops at its end."""
    body, rfile = wsgi_input()
    body.read(3)
    body.drain()
    assert body.remaining == 0
    assert_rest_unread(rfile)


def test_short_body_is_a_connection_error() -> None:
    """A body that ends before its announced length raises ConnectionError from read()."""
    body = body_input(Trickle(b"bc", 1), b"a", 10)
    with pytest.raises(ConnectionError):
        body.read()
    assert body.read() == b""


@pytest.mark.parametrize("step", [1, 4, 1 << 16])
def test_short_body_is_a_connection_error_in_readline(step: int) -> None:
    """readline() on a body cut short raises ConnectionError too, and then the body is over."""
    body = body_input(Trickle(b"bc", step), b"a", 10)
    with pytest.raises(ConnectionError):
        body.readline()
    assert body.readline() == b""


def test_a_large_read_comes_whole() -> None:
    """read(n) for more than one recv gives back n bytes, received in many pieces."""
    data = bytes(range(256)) * 1000
    body = body_input(Trickle(data[1000:], 4096), data[:1000], len(data))
    assert body.read(200_000) == data[:200_000]
    assert body.read() == data[200_000:]


def test_a_missing_application_names_the_callables_found(tmp_path: Path) -> None:
    """An app named 'server' instead of 'application': the error says so and how to fix it."""
    (tmp_path / "app.py").write_text(
        "class App:\n    def __call__(self, environ, start_response):\n        return []\n"
        "server = App()\n"
    )
    with pytest.raises(loader.AppLoadError) as info:
        loader.load_app(str(tmp_path), "app.py")
    assert info.value.kind == "app_missing"
    assert "it has server" in info.value.message
    assert "application = server" in info.value.message


def test_the_loader_imports_little() -> None:
    """Every app process pays for the loader's imports: typing and traceback (over 1 MB
    together) are left to the error paths and to mypy."""
    script = (
        "import importlib.util, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('loader', {str(LOADER_PATH)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    imported = set(result.stdout.split())
    assert "socket" in imported, "the check must see the loader's own imports"
    assert not imported & {"typing", "traceback"}


# -- ASGI apps are recognised -----------------------------------------------------------


async def _asgi_function(scope: Any, receive: Any, send: Any) -> None:
    pass


class _AsgiApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class _InheritsAsgi(_AsgiApp):
    pass


class _WsgiApp:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


def _wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize(
    ("app", "asgi"),
    [
        (_asgi_function, True),
        (_AsgiApp(), True),
        (_InheritsAsgi(), True),
        (_AsgiApp().__call__, True),
        (_WsgiApp(), False),
        (_wsgi_function, False),
        (len, False),
    ],
)
def test_asgi_apps_are_told_from_wsgi_apps(app: Any, asgi: bool) -> None:
    assert loader.is_asgi_app(app) is asgi


SIGTERM_PROBE = """
import importlib.util, signal, sys
spec = importlib.util.spec_from_file_location("probe_loader", sys.argv[1])
loader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loader)
loader._WAITING[0] = sys.argv[2] == "waiting"
signal.signal(signal.SIGTERM, lambda signum, frame: loader.on_sigterm())
try:
    signal.raise_signal(signal.SIGTERM)
except loader.Terminated:
    print("terminated: an orderly stop")
    signal.raise_signal(signal.SIGTERM)  # a second one: at once
print("still running")
"""


@pytest.mark.parametrize("when", ["waiting", "stopping"])
def test_sigterm_raises_only_into_the_wait_and_a_later_one_ends_the_process(when: str) -> None:
    """Regression (seen in CI): a SIGTERM just after stdin closed raised Terminated into
    the stop, a traceback. Only the wait gets Terminated, once; after it, at once."""
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_PROBE, str(LOADER_PATH), when],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == -15, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "still running" not in result.stdout
    assert ("terminated: an orderly stop" in result.stdout) is (when == "waiting")
