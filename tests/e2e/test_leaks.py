"""Resource discipline under load: fds, child processes and temp files return to baseline."""

from __future__ import annotations

import http.client
import socket
import threading

from .harness import STUB, Server, serving, wait_until


def warm_every_connection(server: Server) -> None:
    """Four overlapping requests: each of 2 processes x 2 threads gets its own connection."""
    threads = [threading.Thread(target=server.get, args=("/slow?t=0.3",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_thousands_of_requests_leave_no_trace() -> None:
    """5,000 keep-alive and 1,000 new-connection requests, with errors and aborts mixed in."""
    with serving(
        STUB,
        "--min-instances", "2",
        "--max-pool-size", "2",
        "--thread-count", "2",
        "--no-access-log",
        wait_ready=2,
    ) as server:  # fmt: skip
        warm_every_connection(server)
        server.request("POST", "/digest", body=b"w" * (2 * 1024 * 1024))  # spools to a temp file
        before = server.settled_resources()

        conn = server.connection()
        big = b"b" * (2 * 1024 * 1024)
        for i in range(5000):
            if i % 500 == 0:
                conn.request("POST", "/digest", body=big)  # spooled body
                expected = 200
            elif i % 250 == 0:
                conn.request("GET", "/error")  # the app raises: 500
                expected = 500
            elif i % 100 == 0:
                conn.request("GET", "/missing")
                expected = 404
            else:
                conn.request("GET", "/")
                expected = 200
            response = conn.getresponse()
            response.read()
            assert response.status == expected, (i, response.status)
        conn.close()

        for i in range(1000):
            if i % 100 == 0:
                # A client that leaves mid-response, and one that leaves mid-request.
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(b"GET /big?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(1024)
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(
                        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
                        + b"x" * 2_000_000
                    )
                continue
            single = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            single.request("GET", "/")
            response = single.getresponse()
            assert response.status == 200, (i, response.status)
            assert response.read() == b"Hello from Ferryman's stub app\n"
            single.close()

        warm_every_connection(server)
        assert wait_until(lambda: server.resources() == before, timeout=10), (
            before,
            server.resources(),
            server.log_text()[-3000:],
        )
