"""Ruby Rack apps through the Rack loader: a plain Rack app wrapped in Rack::Lint (and the
Rack 3 shapes beside it), Sinatra and Rails, with real ruby processes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .harness import APPS, Server, serving, wait_until
from .test_spawn_errors import assert_explained, flags, report_dir  # noqa: F401 - fixture
from .test_websockets import _sessions

STUB = APPS / "rack_stub"


def _ruby_has(library: str) -> bool:
    ruby = shutil.which("ruby")
    if ruby is None:
        return False
    done = subprocess.run(
        [ruby, "-e", f'require "{library}"'], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def _need(library: str, package: str = "ruby-rack ruby-sinatra") -> None:
    if not _ruby_has(library):
        if os.environ.get("CI"):
            raise AssertionError(f"CI installs ruby and {library} (.ci/run); it is missing")
        pytest.skip(f"needs ruby with {library} (apt-get install ruby {package})")


@pytest.fixture(autouse=True)
def _rack() -> None:
    _need("rack")


def test_a_rack_app_under_rack_lint_serves_get_post_uploads_and_streams() -> None:
    with serving(STUB, "--min-instances", "1", "--thread-count", "2") as server:
        server.wait_for_log(r"app type: Ruby Rack \(config\.ru\), run by \S+ \(ruby 3\.")
        (pid,) = server.app_pids
        assert server.get("/") == (200, f"Hello from Rack {pid}\n".encode())
        status, _, body = server.request(
            "POST", "/form", b"name=ferry&count=3",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert (status, body) == (200, b"ferry:3")
        data = os.urandom(5 * 1024 * 1024)  # above the loader's in-memory bound: a temp file
        status, _, body = server.request("POST", "/digest", data)
        assert (status, body) == (200, f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())
        # rack.input is rewindable (Rack 2), in memory and in a temp file alike.
        for size in (10, 3 * 1024 * 1024):
            assert server.request("POST", "/reread", b"r" * size)[2] == f"{size} true".encode()
        status, headers, body = server.request("GET", "/stream")
        assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")
        assert headers.get("transfer-encoding") == "chunked"
        status, headers, body = server.request("HEAD", "/")
        assert (status, body) == (200, b"")
        # Keep-alive: several requests on one connection, one process.
        conn = server.connection()
        try:
            for _ in range(5):
                conn.request("GET", "/pid")
                response = conn.getresponse()
                assert response.read() == str(pid).encode()
        finally:
            conn.close()
        env = dict(line.split("=", 1) for line in server.get("/env?x=1")[1].decode().splitlines())
        assert env["PATH_INFO"] == "/env" and env["QUERY_STRING"] == "x=1"
        assert env["rack.url_scheme"] == "http"
        assert env["rack.multithread"] == "true"  # --thread-count 2
        assert env["rack.hijack?"] == "true"
        assert server.get("/raise")[0] == 500
        server.wait_for_log(r"RuntimeError: the handler blew up")
        log = server.log_text()
        assert "LintError" not in log, log  # Rack::Lint found nothing wrong with the loader


def _first_chunk_then_rest(server: Server, path: str, first: bytes) -> tuple[float, float, bytes]:
    """Seconds until ``first`` arrived, seconds until the whole response did, and the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        first_at = 0.0
        while chunk := sock.recv(65536):
            data += chunk
            if not first_at and first in data:
                first_at = time.monotonic() - start
        return first_at, time.monotonic() - start, data


@pytest.mark.parametrize(
    ("path", "first", "last"),
    [("/stream?delay=0.5", b"chunk 0\n", b"chunk 2\n"),
     ("/rack3/stream?delay=0.5", b"part 0\n", b"part 2\n")],
    ids=["each", "rack3-call"],
)  # fmt: skip
def test_a_streaming_body_reaches_the_client_as_the_app_writes_it(
    path: str, first: bytes, last: bytes
) -> None:
    """A body that yields (Rack 2, each) or writes to the stream (Rack 3, call) with
    0.5 s between its parts: the first part is at the client long before the last is
    written."""
    with serving(STUB, "--min-instances", "1") as server:
        server.get("/")  # the process is warm
        first_at, total, data = _first_chunk_then_rest(server, path, first)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in data.lower()
        assert last in data and data.endswith(b"0\r\n\r\n")
        assert total >= 1.0, total  # two pauses of 0.5 s
        # Held back, the first part would come with the last (a busy machine may add some
        # latency to the first, never a whole pause).
        assert first_at < total - 0.5, (first_at, total)


def test_rack3_shapes() -> None:
    """What Rack 3 changed, under the rack gem installed (2.2): lowercase header names
    with several values as an array, a body with both each and call is enumerated, a
    streaming body reads the request body from its stream, rack.response_finished
    runs; and a status the loader's own table does not have keeps its reason."""
    with serving(STUB, "--min-instances", "1") as server:
        conn = server.connection()
        try:
            conn.request("GET", "/rack3/headers")
            response = conn.getresponse()
            assert (response.status, response.reason, response.read()) == (410, "Gone", b"gone\n")
            assert response.headers.get_all("set-cookie") == ["a=1", "b=2"]
            assert response.headers["x-rack"] == "3"
        finally:
            conn.close()
        assert server.get("/rack3/both") == (200, b"each\n")
        data = os.urandom(300_000)
        status, _, body = server.request("POST", "/rack3/read", data)
        assert (status, body) == (200, f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())
        assert server.get("/rack3/finished") == (200, b"done\n")
        server.wait_for_log(r"output: response finished: 200 nil$")


def test_app_output_reaches_the_log_as_it_is_written() -> None:
    """What the app prints to $stdout is in the log at once, not when the process exits
    (Ruby buffers $stdout when it is a pipe)."""
    with serving(STUB, "--min-instances", "1") as server:
        assert server.get("/print?msg=right-away") == (200, b"printed")
        server.wait_for_log(r"output: stub says: right-away", timeout=5)


def test_sinatra() -> None:
    _need("sinatra/base")
    with serving(APPS / "rack_sinatra", "--min-instances", "1") as server:
        (pid,) = server.app_pids
        assert server.get("/") == (200, f"Hello from Sinatra {pid}".encode())
        status, headers, body = server.request("GET", "/hello/ferry?q=1")
        assert (status, body) == (200, b'{"hello": "ferry", "q": "1"}')
        assert headers["content-type"].startswith("application/json")
        boundary = uuid.uuid4().hex
        data = os.urandom(200_000)
        upload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, _, body = server.request(
            "POST", "/upload", upload, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert (status, body) == (200, f"a.bin {len(data)}".encode())
        # Keep-alive with Sinatra: one connection, one process, several requests.
        conn = server.connection()
        try:
            for name in ("a", "b", "c"):
                conn.request("GET", f"/hello/{name}")
                response = conn.getresponse()
                assert response.read() == f'{{"hello": "{name}", "q": ""}}'.encode()
        finally:
            conn.close()
        assert server.request("GET", "/stream")[2] == b"part 0\npart 1\npart 2\n"


def test_rails() -> None:
    """A Rails application (one file, Debian's ruby-rails): GET, a JSON answer to a POST,
    ActionController::Live streaming, RAILS_ENV from --environment, its log in ours."""
    _need("action_controller/railtie", "ruby-rails")
    with serving(APPS / "rack_rails", "--min-instances", "1", "-e", "production") as server:
        (pid,) = server.app_pids
        version = server.get("/")
        assert version[0] == 200, version
        expected = rf"Hello from Rails \d+\.\d+\.\d+\S* in production, process {pid}"
        assert re.fullmatch(expected, version[1].decode()), version
        status, headers, body = server.request(
            "POST", "/echo?name=ferry", b"x" * 1000, {"Content-Type": "application/octet-stream"}
        )
        assert (status, body) == (200, b'{"name":"ferry","bytes":1000}')
        assert headers["content-type"].startswith("application/json")
        first_at, total, data = _first_chunk_then_rest(server, "/stream", b"part 0\n")
        assert b"part 2\n" in data and total >= 0.6 and first_at < total - 0.3, (first_at, total)
        server.wait_for_log(r'output: .*Started GET "/stream"', timeout=5)


def test_three_slow_requests_on_three_single_threaded_processes() -> None:
    with serving(
        STUB, "--min-instances", "3", "--max-pool-size", "3", "--thread-count", "1",
        wait_ready=3,
    ) as server:  # fmt: skip
        answers, elapsed = server.get_at_once("/slow?t=1.5", 3)
        results = [body for _, body in answers]
        assert sorted(int(pid) for pid in results) == sorted(server.app_pids)
        assert elapsed < 2.9, elapsed  # at once: two of them one after the other take 3 s


def test_thread_count_threads_serve_one_process_at_once() -> None:
    """--thread-count 3, one process: three slow requests run in it together."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "3"
    ) as server:  # fmt: skip
        server.wait_for_log(r"App \d+ ready: .*concurrency 3\)")
        (pid,) = server.app_pids
        answers, elapsed = server.get_at_once("/slow?t=1.5", 3)
        results = [body for _, body in answers]
        assert results == [str(pid).encode()] * 3
        assert elapsed < 2.9, elapsed


@pytest.mark.parametrize("path", ["/ws/full", "/ws/partial"], ids=["full", "partial"])
def test_websockets_through_rack_hijack(path: str) -> None:
    """rack.hijack, full (the app writes the 101) and partial (the rack.hijack response
    header): a WebSocket echo in the app, through the front; the WebSocket holds a
    session while open; keep-alive connections to a single-threaded process do not
    stop it from taking a WebSocket (a fresh connection)."""
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "1") as server:
        (pid,) = server.app_pids
        for _ in range(2):
            assert server.get("/pid") == (200, str(pid).encode())  # a kept-alive connection
            with connect(f"ws://127.0.0.1:{server.port}{path}", max_size=2**21) as ws:
                assert ws.recv(timeout=10) == str(pid)
                ws.send("héllo")
                assert ws.recv(timeout=10) == "héllo"
                ws.send(b"\x00\x01\xff")
                assert ws.recv(timeout=10) == b"\x00\x01\xff"
                big = os.urandom(1024 * 1024)
                ws.send(big)
                assert ws.recv(timeout=10) == big
                assert _sessions(server) == {pid: 1}
                ws.close(4002, "bye")
            assert wait_until(lambda: _sessions(server) == {pid: 0}, timeout=10)
        assert server.get("/") == (200, f"Hello from Rack {pid}\n".encode())
        assert "LintError" not in server.log_text()


def test_faye_websocket() -> None:
    """A real Rack WebSocket library (faye-websocket, on EventMachine) through rack.hijack:
    echo, a large message, the client's close code reaching the app."""
    _need("faye/websocket", "ruby-faye-websocket")
    with serving(APPS / "rack_faye", "--min-instances", "1", "--max-pool-size", "1") as server:
        (pid,) = server.app_pids
        assert server.get("/") == (200, f"plain {pid}".encode())
        for code in (4001, 4002):
            with connect(f"ws://127.0.0.1:{server.port}/", max_size=2**21) as ws:
                assert ws.recv(timeout=10) == str(pid)
                ws.send("héllo")
                assert ws.recv(timeout=10) == "héllo"
                big = os.urandom(300_000)
                ws.send(big)
                assert ws.recv(timeout=10) == big
                ws.close(code, "bye")
            server.wait_for_log(rf"output: faye closed {code}$")
        assert wait_until(lambda: _sessions(server) == {pid: 0}, timeout=10)


def test_a_full_hijack_answering_plain_http_with_its_own_chunking() -> None:
    """A full hijack that answers an ordinary GET with a body it chunk-encodes itself
    (message_bus's long polling): the client gets the body once, framed by the core."""
    with serving(STUB, "--min-instances", "1") as server:
        status, _, body = server.request("GET", "/hijack/chunked")
        assert (status, body) == (200, b"event 0\nevent 1\nevent 2\n")
        assert server.get("/pid")[0] == 200


def test_a_graceful_stop_closes_hijacked_websockets_with_going_away() -> None:
    with serving(STUB, "--min-instances", "1", "--graceful-timeout", "10") as server:
        ws = connect(f"ws://127.0.0.1:{server.port}/ws/partial")
        try:
            ws.recv(timeout=10)
            start = time.monotonic()
            server.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
            assert ws.close_code == 1001
        finally:
            ws.close()
        assert server.proc.wait(30) == 0
        assert time.monotonic() - start < 5  # not held until --graceful-timeout


def test_a_config_ru_that_raises_shows_the_ruby_exception_and_backtrace(
    report_dir: Path,  # noqa: F811 - the fixture
) -> None:
    with serving(APPS / "rack_raises", *flags(report_dir), wait_ready=0) as server:
        failure = assert_explained(
            server, report_dir, step="load_app", category="import_error",
            texts=["RuntimeError: the config.ru is on fire"],
        )  # fmt: skip
        assert "config.ru:1" in failure.page


def test_a_missing_gem_is_explained(report_dir: Path) -> None:  # noqa: F811 - the fixture
    with serving(APPS / "rack_missing_gem", *flags(report_dir), wait_ready=0) as server:
        failure = assert_explained(
            server, report_dir, step="load_app", category="import_error",
            texts=["LoadError: cannot load such file -- a_gem_that_is_not_installed"],
        )  # fmt: skip
        assert "config.ru:1" in failure.page  # the backtrace, down to the app's line


def test_a_syntax_error_in_config_ru_is_explained(report_dir: Path) -> None:  # noqa: F811
    with serving(APPS / "rack_syntax", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server, report_dir, step="load_app", category="syntax_error",
            texts=["SyntaxError", "config.ru:3: syntax error"],
        )  # fmt: skip


def test_fds_and_children_return_to_their_baseline() -> None:
    """As for Python apps (test_leaks): keep-alive and new-connection requests, errors,
    spooled bodies, clients that leave mid-response and mid-request; here WebSockets
    (hijacked connections) too. The core's fds, children and temp files, and the app
    process's own fds, come back to where they were."""
    # One process only: a single-threaded process busy with a request makes the pool start
    # another, which could land between the two readings.
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "1", "--no-access-log") as server:
        (pid,) = server.app_pids

        def app_fds() -> int:
            return len(os.listdir(f"/proc/{pid}/fd"))

        def everything() -> tuple[object, ...]:
            return (*server.resources(), app_fds())

        def one_websocket() -> None:
            with connect(f"ws://127.0.0.1:{server.port}/ws/full") as ws:
                ws.recv(timeout=10)
                ws.send("x")
                assert ws.recv(timeout=10) == "x"

        server.request("POST", "/digest", os.urandom(2 * 1024 * 1024))
        one_websocket()
        server.get("/")
        before = server.settled_resources()
        assert wait_until(lambda: everything() == (*before, app_fds()), timeout=5)
        before_all = everything()

        conn = server.connection()
        big = b"b" * (2 * 1024 * 1024)
        for i in range(1000):
            expected = 200
            if i % 250 == 0:
                conn.request("POST", "/digest", body=big)  # spooled, and a temp file in the app
            elif i % 100 == 0:
                conn.request("GET", "/raise")
                expected = 500
            elif i % 50 == 0:
                conn.request("GET", "/missing")
                expected = 404
            else:
                conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status == expected, (i, response.status)
        conn.close()
        for i in range(100):
            if i % 25 == 0:
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(b"GET /big?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(1024)  # and leaves mid-response
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(
                        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
                        + b"x" * 2_000_000
                    )  # and leaves mid-request
                one_websocket()
                continue
            assert server.get("/")[0] == 200
        assert server.get("/")[0] == 200
        assert wait_until(lambda: everything() == before_all, timeout=10), (
            before_all,
            everything(),
            server.log_text()[-3000:],
        )


def test_a_gem_missing_from_the_gemfile_is_explained(report_dir: Path) -> None:  # noqa: F811
    """With a Gemfile, the app loads through bundler/setup: a gem it names that is not
    installed stops the start, naming the gem."""
    with serving(APPS / "rack_bundler_missing", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server, report_dir, step="load_app", category="import_error",
            texts=["a_gem_the_gemfile_wants_xyz"],
        )  # fmt: skip


def test_an_app_with_a_gemfile_runs_with_its_bundle(tmp_path: Path) -> None:
    """With a Gemfile, bundler/setup is loaded first: the app gets the gems of its bundle,
    and an installed gem the Gemfile does not name cannot be required."""
    _need("sinatra/base")
    app = tmp_path / "bundled"
    shutil.copytree(APPS / "rack_bundled", app)  # bundler writes Gemfile.lock beside it
    with serving(app, "--min-instances", "1") as server:
        status, body = server.get("/")
        assert status == 200, body
        gemfile = app / "Gemfile"
        assert body == f"bundler loaded, gemfile {gemfile}, sinatra: not in the bundle".encode()
    assert (app / "Gemfile.lock").is_file()


def test_ruby_names_the_interpreter(tmp_path: Path) -> None:
    """--ruby: the app runs under that ruby (a relative path is the shell's), named with
    its version in the banner; one that is not a usable ruby stops the start in one line."""
    ruby = shutil.which("ruby")
    assert ruby is not None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ruby3").symlink_to(ruby)
    with serving(STUB, "--ruby", "bin/ruby3", cwd=tmp_path) as server:
        server.wait_for_log(re.escape(f"run by {tmp_path / 'bin' / 'ruby3'} (ruby 3."))
        assert server.get("/pid")[0] == 200
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(STUB), "--port=0", "--ruby=/bin/true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "invalid value '/bin/true' for ruby (from --ruby)" in result.stderr
    assert "Ruby 3.0 (or newer)" in result.stderr


def test_an_apps_own_term_handler_is_kept() -> None:
    """A TERM handler the app installs itself (config.ru) is the one that runs, as under
    the Python and Node.js loaders; the loader's orderly stop is not put over it."""
    with serving(APPS / "rack_own_term", "--min-instances", "1") as server:
        (pid,) = server.app_pids
        assert server.get("/") == (200, str(pid).encode())
        os.kill(pid, signal.SIGTERM)
        server.wait_for_log("app: own TERM handler ran")
        assert wait_until(lambda: pid not in server.children(), timeout=5)
        assert "Ferryman loader: received SIGTERM" not in server.log_text()
