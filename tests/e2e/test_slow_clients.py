"""Slow clients never hold an app process, and never make the core buffer without bound."""

from __future__ import annotations

import socket
import time

from .harness import STUB, serving


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


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
    """A 64 MB response to a client that stops reading: the core holds back, then delivers."""
    size = 64 * 1024 * 1024
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "1") as server:
        before = _rss_kb(server.pid)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(
                f"GET /big?n={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            time.sleep(1.5)  # the client reads nothing for a while
            stalled = _rss_kb(server.pid)
            # Back-pressure: the core keeps about a megabyte per connection, not the body.
            assert stalled - before < 16 * 1024, (before, stalled)
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
    """Back-pressure paused the app's connection; the client leaves: the process is freed."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        with _slow_socket(server.port) as sock:
            sock.sendall(b"GET /big?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1)  # the core holds back; the client gives up
        status, _ = server.get("/pid", timeout=10)
        assert status == 200


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
                time.sleep(0.2)
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
