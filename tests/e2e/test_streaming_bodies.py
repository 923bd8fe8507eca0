"""--no-buffer-request-bodies: a body with a Content-Length reaches the app as it
arrives, through the front, the session protocol and the loaders."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from .harness import APPS, STUB, Server, serving

FASTAPI = APPS / "asgi_fastapi"


def _slow_upload(server: Server, path: str, pieces: list[bytes], gap: float) -> tuple[bytes, float]:
    """POST the pieces with ``gap`` seconds between them; (response, when the last piece
    was sent, on the monotonic clock)."""
    size = sum(len(p) for p in pieces)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
            "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n".encode()
        )
        last_sent = 0.0
        for piece in pieces:
            time.sleep(gap)
            sock.sendall(piece)
            last_sent = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data, last_sent


def _json_body(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response[:300]
    result: dict[str, object] = json.loads(body)
    return result


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "buffered"])
def test_an_asgi_app_reads_a_slow_upload_as_it_arrives(streaming: bool) -> None:
    pieces = [os.urandom(256 * 1024) for _ in range(8)]
    flag = "--no-buffer-request-bodies" if streaming else "--buffer-request-bodies"
    with serving(FASTAPI, "--min-instances", "1", flag) as server:
        response, last_sent = _slow_upload(server, "/upload-stream", pieces, 0.15)
        got = _json_body(response)
        data = b"".join(pieces)
        assert (got["size"], got["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        first_at = float(got["first_at"])  # type: ignore[arg-type]
        if streaming:
            # The app had the body's first bytes long before the client sent its last.
            assert first_at < last_sent - 0.5, (first_at, last_sent)
            assert int(got["pieces"]) > 1  # type: ignore[call-overload]
        else:
            assert first_at > last_sent  # whole, after the last byte
        assert server.get("/pid")[0] == 200  # the connection and process serve on


def _arrived_as_sent(server: Server, path: str) -> bool:
    """A slow upload to ``path``: True if the app read it as it arrived, False if whole."""
    pieces = [os.urandom(256 * 1024) for _ in range(8)]
    response, last_sent = _slow_upload(server, path, pieces, 0.15)
    got = _json_body(response)
    assert got["size"] == 8 * 256 * 1024
    first_at = float(got["first_at"])  # type: ignore[arg-type]
    assert first_at < last_sent - 0.5 or first_at > last_sent, (first_at, last_sent)
    return first_at < last_sent


def test_only_the_paths_named_get_their_bodies_as_they_arrive() -> None:
    """--unbuffered-request-path /upload-stream: that route (and below it) streams, the
    app's other routes keep getting whole bodies (slow clients never hold the process)."""
    with serving(
        FASTAPI, "--min-instances", "1", "--unbuffered-request-path", "/upload-stream"
    ) as server:
        assert _arrived_as_sent(server, "/upload-stream")
        assert not _arrived_as_sent(server, "/elsewhere/upload-stream")


def test_body_buffering_is_set_per_app_and_path(tmp_path: Path) -> None:
    """[[app]] tables: one app takes every body as it arrives; another, mounted at /s, only
    those to its /upload-stream (a path as the app sees it, below its prefix)."""
    (tmp_path / "Ferrymanfile.toml").write_text(
        f"""
[[app]]
root = "{FASTAPI}"
prefix = "/"
buffer_request_bodies = false

[[app]]
root = "{FASTAPI}"
prefix = "/s"
unbuffered_request_path = ["/upload-stream"]
"""
    )
    with serving(tmp_path, "--min-instances", "1", wait_ready=2) as server:
        assert _arrived_as_sent(server, "/elsewhere/upload-stream")
        assert _arrived_as_sent(server, "/s/upload-stream")
        assert not _arrived_as_sent(server, "/s/elsewhere/upload-stream")


def test_a_wsgi_app_reads_a_streamed_body_through_wsgi_input() -> None:
    pieces = [os.urandom(1024 * 1024) for _ in range(5)]
    with serving(STUB, "--min-instances", "1", "--no-buffer-request-bodies") as server:
        response, _ = _slow_upload(server, "/digest", pieces, 0.05)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), response[:300]
        data = b"".join(pieces)
        assert body.decode().split()[:2] == [str(len(data)), hashlib.sha256(data).hexdigest()]


def test_an_answer_before_the_body_ends_closes_the_connection_and_the_app_serves_on() -> None:
    with serving(FASTAPI, "--min-instances", "1", "--no-buffer-request-bodies") as server:
        server.get("/pid")  # one pooled connection to the app, as after any request
        before = server.settled_resources()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /refuse-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
                + b"x" * 65536
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 413 ")
        assert b"\r\nConnection: close\r\n" in data
        assert server.get("/pid")[0] == 200
        assert server.settled_resources() == before


def test_a_client_gone_mid_body_frees_the_process() -> None:
    with serving(
        FASTAPI, "--min-instances", "1", "--max-pool-size", "1", "--no-buffer-request-bodies"
    ) as server:
        server.get("/pid")  # one pooled connection to the app, as after any request
        before = server.settled_resources()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(
            b"POST /upload-stream HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
            + b"x" * 100000
        )
        time.sleep(0.3)
        sock.close()
        # The app's receive() said http.disconnect; its process takes requests again.
        assert server.get("/pid")[0] == 200
        assert server.settled_resources() == before


def test_a_nodejs_app_gets_a_streamed_body() -> None:
    pieces = [os.urandom(512 * 1024) for _ in range(4)]
    with serving(
        APPS / "node_http", "--min-instances", "1", "--no-buffer-request-bodies"
    ) as server:
        response, _ = _slow_upload(server, "/echo", pieces, 0.05)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), response[:300]
        assert b"\r\nTransfer-Encoding: chunked" in head
        assert _dechunk(body) == b"".join(pieces)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            return out
        out += data[:size]
        data = data[size + 2 :]


def test_a_request_pipelined_after_a_streamed_body_is_served() -> None:
    with serving(STUB, "--min-instances", "1", "--no-buffer-request-bodies") as server:
        body = os.urandom(300 * 1024)
        request = b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        reply = server.raw(
            request + body + b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert reply.count(b"HTTP/1.1 200 OK") == 2, reply[:500]
        assert hashlib.sha256(body).hexdigest().encode() in reply


def test_a_streamed_body_that_stalls_times_out() -> None:
    with serving(
        FASTAPI, "--min-instances", "1", "--no-buffer-request-bodies", "--body-timeout", "1"
    ) as server:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /upload-stream HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        took = time.monotonic() - started
        assert took < 5, took
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
        assert server.get("/pid")[0] == 200
