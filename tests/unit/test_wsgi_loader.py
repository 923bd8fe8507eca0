"""The WSGI loader's pure parts: the response head, body frames and wsgi.input."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from ferryman.http.session_protocol import FRAME_BODY, FRAME_HEAD, FrameReader

from .loader_copy import wsgi_loader

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


def wsgi_input(body: bytes = BODY, after: bytes = AFTER) -> tuple[Any, io.BytesIO]:
    """An Input over a stream holding the body and then bytes that belong to the next request."""
    rfile = io.BytesIO(body + after)
    return loader.Input(rfile, len(body)), rfile


def assert_rest_unread(rfile: io.BytesIO, body: bytes = BODY, after: bytes = AFTER) -> None:
    assert rfile.tell() == len(body), "read past the body"
    assert rfile.read() == after


@pytest.mark.parametrize("size", [-1, None, len(BODY), len(BODY) + 1, 10**9])
def test_read_all_stops_at_the_body_end(size: int | None) -> None:
    """read() with no size, a negative one or one past the end returns exactly the body."""
    body, rfile = wsgi_input()
    assert body.read(size) == BODY
    assert body.read(size) == b""
    assert body.read() == b""
    assert_rest_unread(rfile)


@pytest.mark.parametrize("size", [1, 3, 7, 16])
def test_read_in_pieces(size: int) -> None:
    """read(n) returns n bytes at a time, the last piece short, then b''."""
    body, rfile = wsgi_input()
    pieces = []
    while piece := body.read(size):
        assert len(piece) <= size
        pieces.append(piece)
    assert b"".join(pieces) == BODY
    assert all(len(p) == size for p in pieces[:-1])
    assert_rest_unread(rfile)


def test_read_zero() -> None:
    """read(0) returns b'' and consumes nothing."""
    body, rfile = wsgi_input()
    assert body.read(0) == b""
    assert body.read() == BODY
    assert_rest_unread(rfile)


def test_readline_stops_at_the_body_end() -> None:
    """readline() gives each line with its newline; the last one ends at the body, not beyond."""
    body, rfile = wsgi_input()
    assert body.readline() == b"first line\n"
    assert body.readline() == b"second\n"
    assert body.readline() == b"\n"
    assert body.readline() == b"last without newline"
    assert body.readline() == b""
    assert_rest_unread(rfile)


@pytest.mark.parametrize("size", [1, 4, 5, 11, 100])
def test_readline_with_a_size(size: int) -> None:
    """readline(n) returns at most n bytes, and all lines together are the body."""
    body, rfile = wsgi_input()
    lines = []
    while line := body.readline(size):
        assert len(line) <= size
        lines.append(line)
    assert b"".join(lines) == BODY
    assert_rest_unread(rfile)


def test_readlines() -> None:
    """readlines() returns every line of the body and no line of what follows it."""
    body, rfile = wsgi_input()
    assert body.readlines() == [b"first line\n", b"second\n", b"\n", b"last without newline"]
    assert_rest_unread(rfile)


@pytest.mark.parametrize(
    ("hint", "count"), [(1, 1), (11, 1), (12, 2), (18, 2), (19, 3), (20, 4), (10**6, 4)]
)
def test_readlines_with_a_hint(hint: int, count: int) -> None:
    """readlines(hint) stops after the line that brings the total to the hint."""
    body, rfile = wsgi_input()
    lines = body.readlines(hint)
    assert len(lines) == count
    rest = body.read()
    assert b"".join(lines) + rest == BODY
    assert_rest_unread(rfile)


def test_iteration() -> None:
    """Iterating wsgi.input gives the body's lines and stops at its end."""
    body, rfile = wsgi_input()
    assert list(body) == [b"first line\n", b"second\n", b"\n", b"last without newline"]
    assert_rest_unread(rfile)


def test_body_ending_in_a_newline_with_a_line_after_it() -> None:
    """A body ending at a newline does not run into the next request's line."""
    body, rfile = wsgi_input(b"a\nb\n", b"c\nd\n")
    assert list(body) == [b"a\n", b"b\n"]
    assert_rest_unread(rfile, b"a\nb\n", b"c\nd\n")


def test_empty_body() -> None:
    """With no body every read returns b'' and the stream is not touched."""
    body, rfile = wsgi_input(b"")
    assert (body.read(), body.readline(), body.readlines(), list(body)) == (b"", b"", [], [])
    assert_rest_unread(rfile, b"")


def test_mixed_reads() -> None:
    """read, readline and iteration can be mixed and share one position."""
    body, rfile = wsgi_input()
    assert body.read(6) == b"first "
    assert body.readline() == b"line\n"
    assert next(body) == b"second\n"
    assert body.read() == b"\nlast without newline"
    assert_rest_unread(rfile)


def test_drain_consumes_only_the_body() -> None:
    """drain() reads what the app left of the body and stops at its end."""
    body, rfile = wsgi_input()
    body.read(3)
    body.drain()
    assert body.remaining == 0
    assert_rest_unread(rfile)


def test_short_body_is_a_connection_error() -> None:
    """A body that ends before its announced length raises ConnectionError from read()."""
    body = loader.Input(io.BytesIO(b"abc"), 10)
    with pytest.raises(ConnectionError):
        body.read()
    assert body.read() == b""


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
