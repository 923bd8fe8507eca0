"""Slow clients never hold an app process, and never make the core buffer without bound."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import socket
import struct
import termios
import time

import pytest

from .harness import STUB, Server, serving, wait_until
from .wire import Wire, req


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _response_files(server: Server) -> int:
    """Anonymous temp files the core holds open (buffered responses, spooled bodies)."""
    count = 0
    for fd in os.listdir(f"/proc/{server.pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{server.pid}/fd/{fd}").endswith("(deleted)")
    return count


def _unread(sock: socket.socket) -> int:
    """Bytes that arrived in ``sock``'s receive queue and the client has not read yet."""
    data = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
    value: int = struct.unpack("i", data)[0]
    return value


def _unacked_toward(server: Server, sock: socket.socket) -> int:
    """Bytes the core's socket toward ``sock`` holds that the client has not taken in
    (tx_queue in /proc/net/tcp: written by the core, not yet acknowledged by the client)."""
    local = f"0100007F:{server.port:04X}"
    remote = f"0100007F:{sock.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[0], 16)
    return 0


def _client_is_full(server: Server, sock: socket.socket) -> bool:
    """The client's receive window is full: bytes wait unread in its socket and the core
    has more written toward it that it cannot take in. (On loopback, unacknowledged bytes
    stay only while the receiver has no room.)"""
    return _unread(sock) > 0 and _unacked_toward(server, sock) > 0


def test_a_slow_upload_does_not_hold_the_only_process() -> None:
    """While one client trickles its body, another client's request is served at once."""
    with (
        serving(
            STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
        ) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow,
    ):
        slow.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
        # The body is incomplete, so no process was taken for it: the next request
        # is answered by the one process there is.
        status, body = server.get("/pid", timeout=5)
        assert status == 200
        slow.sendall(b" done")
        slow.sendall(b"!")
        data = b""
        while not data.endswith(b"half done!"):
            chunk = slow.recv(4096)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")


def test_a_slow_reader_gets_a_big_response_without_the_core_buffering_it_all() -> None:
    """A 64 MB response to a client that reads nothing until the app is done with it: the
    core holds it back mostly on disk (its memory grows by less than 16 MiB), then delivers."""
    size = 64 * 1024 * 1024
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "1") as server:
        before = _rss_kb(server.pid)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(
                f"GET /big?n={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            # The client reads nothing until the core has taken the whole response from the
            # app: the response has begun, then the one process (1 thread) answers another
            # request, which it can only do once it has written all 64 MB.
            assert wait_until(lambda: _unread(sock) > 0, 10)
            assert server.get("/pid", timeout=30)[0] == 200
            stalled = _rss_kb(server.pid)
            # The core keeps about a megabyte per connection in memory, the rest on disk.
            assert stalled - before < 16 * 1024, (before, stalled)
            assert _response_files(server) == 1
            received = 0
            tail = b""
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
                tail = (tail + chunk)[-16:]
        # All of it arrives, chunked: the payload plus chunk framing, properly ended.
        assert received > size
        assert tail.endswith(b"0\r\n\r\n")


def _slow_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_client_leaving_a_held_back_download_frees_the_process() -> None:
    """The core holds back a download the client does not take; the client leaves: the
    process serves the next request and the held-back bytes' temp file is gone."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        with _slow_socket(server.port) as sock:
            sock.sendall(b"GET /big?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            # The core holds back what the client does not take (past its write buffer, in
            # a temp file); then the client gives up.
            assert wait_until(lambda: _response_files(server) == 1, 10)
        status, _ = server.get("/pid", timeout=10)
        assert status == 200
        assert wait_until(lambda: _response_files(server) == 0, 10)


def test_connections_paused_for_one_client_are_not_reused_paused() -> None:
    """After slow readers, the next requests on new connections are answered."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        for size in (1_100_000, 2_500_000, 4_000_000, 6_000_000, 1_700_000, 3_300_000,
                     1_300_000, 5_200_000, 2_100_000, 4_600_000):  # fmt: skip
            with _slow_socket(server.port) as sock:
                request = f"GET /blob?n={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                sock.sendall(request.encode())
                # The client takes nothing until the core has filled it up and holds more.
                assert wait_until(functools.partial(_client_is_full, server, sock), 10)
                received = 0
                while chunk := sock.recv(65536):
                    received += len(chunk)
                assert received > size
            status, _ = server.get("/pid", timeout=10)
            assert status == 200


def test_a_client_leaving_a_stream_frees_the_process() -> None:
    """A client that leaves an endless stream (think Server-Sent Events) frees the process."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /stream?n=100000&delay=0.2 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200 ")
        status, _ = server.get("/pid", timeout=10)
        assert status == 200


# -- response buffering: a slow reader never holds the process ---------------------------


def test_a_reader_that_reads_nothing_does_not_hold_the_only_process() -> None:
    """1 process x 1 thread. Client A asks for 10 MB and reads nothing; client B is served
    at once: the core took A's response from the app into its buffer (memory up to a
    threshold, the rest in a temp file), and the temp file is gone once A leaves."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        idle = server.rss_kb()
        reader = _slow_socket(server.port)
        try:
            reader.sendall(b"GET /pattern?n=10000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _ = server.get("/pid", timeout=1)
            assert status == 200
            # The app is done; the bytes wait in the core, mostly in a temp file.
            assert wait_until(lambda: _response_files(server) == 1, 10)
            grown = server.rss_kb() - idle
            assert grown < 4 * 1024, f"the core grew by {grown} KiB holding a 10 MB response"
        finally:
            reader.close()
        assert wait_until(lambda: _response_files(server) == 0, 10)
        assert server.get("/pid", timeout=5)[0] == 200


def test_a_client_that_reads_slowly_gets_every_byte() -> None:
    """A client reading at about 64 KB/s gets the whole response, in order, intact."""
    size = 448 * 1024
    expected = b"".join(b"%015d\n" % i for i in range((size + 15) // 16))[:size]
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        with _slow_socket(server.port) as sock:
            sock.sendall(
                f"GET /pattern?n={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            received = bytearray()
            while chunk := sock.recv(8192):
                received += chunk
                time.sleep(0.125)  # 8 KiB per 1/8 s: 64 KiB/s
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("query", ["", "&accel=no"], ids=["event-stream", "x-accel-buffering"])
def test_server_sent_events_arrive_as_they_are_sent(query: str) -> None:
    """Each event (one per 100 ms) reaches the client within 50 ms of the app sending it;
    X-Accel-Buffering (an instruction to Ferryman) is not passed on."""
    with serving(STUB) as server, Wire(server.port, timeout=10) as wire:
        wire.send(req("GET", f"/sse?n=8&delay=0.1{query}"))
        head = wire.read_head()
        assert head.status == 200
        assert head.header("X-Accel-Buffering") is None
        lags = []
        for _ in range(8):
            size_line = wire.read_until(b"\r\n")
            assert size_line is not None
            event = wire.read_exact(int(size_line, 16) + 2)
            assert event is not None
            sent_at = float(event.split(b"data: ")[1].split(b"\n")[0])
            lags.append(time.monotonic() - sent_at)
        assert max(lags) < 0.05, lags


def test_a_client_that_takes_nothing_is_closed_after_send_timeout() -> None:
    """--send-timeout 2: a client that stops reading a streamed response is closed after
    about 2 s, the log says so (499), and the core's fds come back to where they were."""
    with serving(
        STUB, "--send-timeout", "2", "--min-instances", "1", "--max-pool-size", "1"
    ) as server:
        fds = server.settled_resources()[0]
        mark = server.mark()
        sock = _slow_socket(server.port)
        try:
            # A stream is passed through with back-pressure: the client's side fills up.
            sock.sendall(
                b"GET /sse?n=100000&delay=0&accel=no&pad=65536 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            started = time.monotonic()
            server.wait_for_log(r"499: 127\.0\.0\.1 took no bytes of a response", 15, mark)
            assert 1.5 < time.monotonic() - started < 10
            server.wait_for_log(r'"GET /sse\?n=100000\S* HTTP/1\.1" 499', 5, mark)
        finally:
            sock.close()
        assert wait_until(lambda: server.fd_count() == fds, 10)
        assert server.get("/pid", timeout=5)[0] == 200
