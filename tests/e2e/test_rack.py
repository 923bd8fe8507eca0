"""Ruby Rack apps through the Rack loader: a plain Rack app wrapped in Rack::Lint, and
Sinatra, with real ruby processes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from .harness import APPS, serving
from .test_spawn_errors import assert_explained, flags, report_dir  # noqa: F401 - fixture

STUB = APPS / "rack_stub"


def _ruby_has(library: str) -> bool:
    ruby = shutil.which("ruby")
    if ruby is None:
        return False
    done = subprocess.run(
        [ruby, "-e", f'require "{library}"'], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def _need(library: str) -> None:
    if not _ruby_has(library):
        if os.environ.get("CI"):
            raise AssertionError(f"CI installs ruby and {library} (.ci/run); it is missing")
        pytest.skip(f"needs ruby with {library} (apt-get install ruby ruby-rack ruby-sinatra)")


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
        assert server.get("/raise")[0] == 500
        server.wait_for_log(r"RuntimeError: the handler blew up")
        log = server.log_text()
        assert "LintError" not in log, log  # Rack::Lint found nothing wrong with the loader


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
        assert server.request("GET", "/stream")[2] == b"part 0\npart 1\npart 2\n"


def test_three_slow_requests_on_three_single_threaded_processes() -> None:
    with serving(
        STUB, "--min-instances", "3", "--max-pool-size", "3", "--thread-count", "1",
        wait_ready=3,
    ) as server:  # fmt: skip
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: results.append(server.get("/slow?t=1")[1]))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(int(pid) for pid in results) == sorted(server.app_pids)


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
        assert_explained(
            server, report_dir, step="load_app", category="import_error",
            texts=["LoadError: cannot load such file -- a_gem_that_is_not_installed"],
        )  # fmt: skip


def test_fds_and_children_return_to_their_baseline() -> None:
    # One process only: a single-threaded process busy with a request makes the pool start
    # another, which could land between the two readings.
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "1") as server:
        server.get("/")
        before = server.settled_resources()
        for _ in range(200):
            assert server.get("/")[0] == 200
        server.request("POST", "/digest", os.urandom(2 * 1024 * 1024))
        assert server.settled_resources() == before


def test_a_gem_missing_from_the_gemfile_is_explained(report_dir: Path) -> None:  # noqa: F811
    """With a Gemfile, the app loads through bundler/setup: a gem it names that is not
    installed stops the start, naming the gem."""
    with serving(APPS / "rack_bundler_missing", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server, report_dir, step="load_app", category="import_error",
            texts=["a_gem_the_gemfile_wants_xyz"],
        )  # fmt: skip
