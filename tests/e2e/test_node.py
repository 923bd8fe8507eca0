"""Node.js apps: served through Ferryman's loader over HTTP, balanced by open sessions."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import APPS, Gates, Request, Server, alive, serving, wait_until
from .node import EXPRESS, ensure_express_installed

NODE_APP = APPS / "node_http"


@pytest.fixture(scope="module")
def node() -> Iterator[Server]:
    with serving(NODE_APP, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        yield server


@pytest.fixture(scope="module")
def express() -> Iterator[Server]:
    ensure_express_installed()
    with serving(EXPRESS) as server:
        yield server


def test_node_app_is_detected_and_served(node: Server) -> None:
    """app.js is detected as a Node.js app and answers through Ferryman."""
    status, body = node.get("/")
    assert status == 200
    assert body.startswith(b"Hello from Node ")
    assert "app type: Node.js (app.js)" in node.log_text()
    assert "(http protocol, concurrency unlimited)" in node.log_text()


def test_post_and_a_large_upload(node: Server) -> None:
    """Request bodies reach the app whole, with a Content-Length."""
    status, _, body = node.request("POST", "/echo", body=b"hello node")
    assert (status, body) == (200, b"hello node")
    data = bytes(range(256)) * 20_000  # ~5 MB: spooled to a temp file in the core
    status, _, body = node.request("POST", "/digest", body=data)
    assert status == 200
    assert body.decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()} {len(data)}"


def test_chunked_upload_is_de_chunked(node: Server) -> None:
    conn = node.connection()
    conn.request("POST", "/digest", body=iter([b"abc", b"defg"]), encode_chunked=True)
    response = conn.getresponse()
    assert response.read() == f"7 {hashlib.sha256(b'abcdefg').hexdigest()} 7".encode()
    conn.close()


def test_streaming_response_arrives_incrementally(node: Server) -> None:
    """A streamed body is forwarded piece by piece, chunked to the client."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(b"GET /stream?n=3&delay=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"chunk 0" not in first:
            first += sock.recv(4096)
        assert b"Transfer-Encoding: chunked" in first
        assert b"chunk 1" not in first  # the rest is still on its way
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            data = sock.recv(4096)
            assert data
            rest += data
        assert b"chunk 2" in rest


def test_keep_alive_and_head(node: Server) -> None:
    """One client connection carries several requests, HEAD included."""
    conn = node.connection()
    for _ in range(5):
        conn.request("GET", "/pid")
        assert conn.getresponse().read().isdigit()
    conn.request("HEAD", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    conn.request("GET", "/")
    assert conn.getresponse().read().startswith(b"Hello")
    conn.close()


def test_forwarded_headers_and_hop_by_hop(node: Server) -> None:
    """The app learns the client through X-Forwarded-*; hop-by-hop headers stop at Ferryman."""
    status, headers, body = node.request(
        "GET",
        "/headers",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret",
            "X-End": "kept",
        },
    )
    seen = json.loads(body)
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the untrusted client's claim is dropped
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-end"] == "kept"
    assert "x-hop" not in seen
    assert "keep-alive" not in headers  # Node's Keep-Alive response header is hop-by-hop


def test_app_closing_its_connection_is_handled(node: Server) -> None:
    """Connection: close from the app ends only the connection to the app, not the client's."""
    conn = node.connection()
    conn.request("GET", "/close")
    response = conn.getresponse()
    assert response.read() == b"closing\n"
    assert response.getheader("Connection") is None
    for _ in range(3):
        conn.request("GET", "/pid")
        assert conn.getresponse().read().isdigit()
    conn.close()


def test_response_without_length_is_forwarded_whole(node: Server) -> None:
    """A body that ends with the app's connection arrives complete, chunked to the client."""
    status, headers, body = node.request("GET", "/no-length")
    assert (status, body) == (200, b"until close\n")
    assert headers.get("transfer-encoding") == "chunked"


def test_app_dropping_the_connection_gives_502(node: Server) -> None:
    status, _ = node.get("/drop")
    assert status == 502
    assert node.get("/pid")[0] == 200


def test_express_app(express: Server) -> None:
    """An Express app (package.json main, npm dependencies) works as is."""
    assert "app type: Node.js (server.js)" in express.log_text()
    status, body = express.get("/")
    assert status == 200 and body.startswith(b"Hello from Express")
    status, _, body = express.request(
        "POST", "/echo", body=b"x" * 100_000, headers={"Content-Type": "application/octet-stream"}
    )
    assert (status, len(body)) == (200, 100_000)
    status, body = express.get("/json?a=1")
    assert json.loads(body)["query"] == {"a": "1"}
    status, body = express.get("/stream?n=4")
    assert body == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"


def test_sessions_spread_evenly_over_unlimited_processes(tmp_path: Path) -> None:
    """64 concurrent requests over 4 Node processes: 16 each while they are all in flight."""
    gates = Gates(tmp_path)
    with serving(NODE_APP, "--min-instances", "4", "--max-pool-size", "4", wait_ready=4) as server:
        mark = server.mark()
        requests = [Request(server, f"/wait?gate={gates.path('g')}") for _ in range(64)]
        arrivals: list[int] = []
        index = mark
        while len(arrivals) < 64:
            match = server.wait_for_log(r"waiting g (\d+) \d+", start=index, timeout=20)
            arrivals.append(int(match.group(1)))
            index = server.lines.index(match.string, index) + 1
        per_process = {pid: arrivals.count(pid) for pid in set(arrivals)}
        assert len(per_process) == 4, per_process
        assert max(per_process.values()) - min(per_process.values()) <= 1, per_process
        gates.open("g")
        for r in requests:
            r.join(30)
        assert [r.status for r in requests] == [200] * 64


def test_soft_limit_grows_the_pool(tmp_path: Path) -> None:
    """With a per-process cap of 8, 32 concurrent slow requests grow the pool to 4 processes."""
    gates = Gates(tmp_path)
    with serving(
        NODE_APP,
        "--force-max-concurrent-requests-per-process", "8",
        "--min-instances", "1",
        "--max-pool-size", "4",
    ) as server:  # fmt: skip
        requests = [Request(server, f"/wait?gate={gates.path('g')}") for _ in range(32)]
        assert wait_until(lambda: len(server.children()) == 4, timeout=30), server.log_text()
        mark = 0
        holding: dict[int, int] = {}
        for _ in range(32):
            match = server.wait_for_log(r"waiting g (\d+) (\d+)", start=mark, timeout=20)
            holding[int(match.group(1))] = max(
                holding.get(int(match.group(1)), 0), int(match.group(2))
            )
            mark = server.lines.index(match.string, mark) + 1
        assert sorted(holding.values()) == [8, 8, 8, 8]
        gates.open("g")
        for r in requests:
            r.join(30)
        assert [r.status for r in requests] == [200] * 32


@pytest.mark.parametrize(
    ("app", "category", "text"),
    [
        ("node_throws", "import_error", "cannot connect to the message queue"),
        ("node_syntax", "syntax_error", "SyntaxError"),
    ],
)
def test_node_start_failures_show_the_error_page(app: str, category: str, text: str) -> None:
    """A Node app that fails while loading gets the error page with its own error text."""
    with serving(APPS / app, "--min-instances", "0", wait_ready=0) as server:
        status, body = server.get("/")
        assert status == 500
        assert text.encode() in body
        assert b"Loading the application &larr; failed here" in body
        # The log line is written before the page is sent, but read by another thread.
        server.wait_for_log(re.escape(f"category: {category}]"))


def test_node_app_that_never_listens_times_out() -> None:
    with serving(APPS / "node_no_listen", "--start-timeout", "2", "--min-instances", "0",
                 wait_ready=0) as server:  # fmt: skip
        status, body = server.get("/")
        assert status == 500
        assert b"Listening on the app socket &larr; failed here" in body
        assert b"before listening on the app socket" in body
        assert b"forgot to listen" in body
        assert server.children() == []


def test_node_process_exiting_while_serving_is_replaced(node: Server) -> None:
    """process.exit(1) in a request: the process is replaced, the next requests succeed."""
    status, body = node.get("/exit")
    assert (status, body) == (200, b"bye")
    gone = re.search(
        r"App (\d+) exited unexpectedly", node.wait_for_log(r"exited unexpectedly").string
    )
    assert gone
    for _ in range(20):
        assert node.get("/pid")[0] == 200
    assert wait_until(lambda: len(node.children()) == 2, timeout=15)


def test_stopping_leaves_no_node_process_even_if_it_ignores_sigterm() -> None:
    """Ferryman's stop ends Node processes through their stdin, whatever they do with SIGTERM."""
    with serving(APPS / "node_ignores_sigterm", "--min-instances", "2", wait_ready=2) as server:
        apps = server.children()
        assert len(apps) == 2
        start = time.monotonic()
        assert server.stop() == 0
        assert not any(alive(pid) for pid in apps)
        assert time.monotonic() - start < 10


def test_sigterm_lets_node_requests_in_flight_finish(tmp_path: Path) -> None:
    """Graceful stop with Node.js: requests in flight complete, then the processes exit."""
    gates = Gates(tmp_path)
    with serving(NODE_APP, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        mark = server.mark()
        requests = [Request(server, f"/wait?gate={gates.path('go')}") for _ in range(6)]
        for _ in range(6):
            match = server.wait_for_log(r"waiting go", start=mark)
            mark = server.lines.index(match.string, mark) + 1
        apps = server.children()
        server.send_signal(signal.SIGTERM)
        server.wait_for_log("Shutting down")
        gates.open("go")
        for r in requests:
            r.join(30)
        assert [r.status for r in requests] == [200] * 6
        assert server.proc.wait(30) == 0
        assert not any(alive(pid) for pid in apps)


def test_later_listens_are_left_alone() -> None:
    """An app that opens a metrics port (http) and a raw TCP port besides its main server
    starts, and both extra ports answer where the app asked for them."""
    with serving(APPS / "node_two_listens") as server:
        status, body = server.get("/")
        assert status == 200
        ports = json.loads(body)
        assert set(ports) == {"http", "tcp"}, ports
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.endswith(b"metrics ok\n")
        with socket.create_connection(("127.0.0.1", ports["tcp"]), timeout=10) as sock:
            assert sock.recv(100) == b"raw ok\n"
        assert "cluster._getServer" not in server.log_text()


def test_a_multi_line_start_error_is_logged_line_by_line() -> None:
    """Node's 'Cannot find module' message spans lines: each is its own log line, never
    one line with literal backslash-n in it."""
    with serving(APPS / "node_missing_module", "--min-instances", "0", wait_ready=0) as server:
        status, body = server.get("/")
        assert status == 500
        line = server.wait_for_log(r"Could not start a process for .*Cannot find module")
        assert "\\n" not in line.string
        error_id = re.search(r"error ID (\w+)", line.string)
        assert error_id is not None
        server.wait_for_log(rf"\(error ID {error_id.group(1)}\) Require stack:")


def test_a_missing_npm_is_said_in_one_line(tmp_path: Path) -> None:
    """On a machine without npm, the Express tests fail saying exactly that."""
    app = tmp_path / "express"
    app.mkdir()
    (app / "package.json").write_text((EXPRESS / "package.json").read_text())
    with pytest.raises(pytest.fail.Exception) as caught:
        ensure_express_installed(app, path=str(tmp_path / "empty-bin"))
    message = str(caught.value)
    assert message.startswith("npm is needed")
    assert "\n" not in message
