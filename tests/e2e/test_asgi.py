"""ASGI apps (FastAPI, Starlette) through the ASGI loader: real frameworks, real requests."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .harness import APPS, Server, alive, refused_start, serving, wait_until
from .test_spawn_errors import assert_explained, flags, report_dir  # noqa: F401 - fixture

FASTAPI = APPS / "asgi_fastapi"
STARLETTE = APPS / "asgi_starlette"


def _json(server: Server, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    status, got, data = server.request(method, path, body=body, headers=headers)
    assert status == 200, (status, data)
    assert got["content-type"] == "application/json", got
    return json.loads(data)


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_fastapi_json_forms_uploads_and_lifespan(tmp_path: Path) -> None:
    trace = tmp_path / "lifespan.log"
    with serving(FASTAPI, "--min-instances", "1", env={"LIFESPAN_LOG": str(trace)}) as server:
        log = server.log_text()
        assert "app type: Python ASGI (main.py)" in log
        assert "requests per process: unlimited" in log
        (pid,) = server.app_pids
        assert trace.read_text() == f"startup {pid}\n"  # before it served anything

        assert _json(server, "GET", "/items/42?q=ferry") == {"item_id": 42, "q": "ferry"}
        sent = {"name": "Ferryman", "list": [1, 2, 3], "text": "héllo"}
        got = _json(
            server,
            "POST",
            "/json",
            json.dumps(sent).encode(),
            **{"Content-Type": "application/json"},
        )
        assert got == {"got": sent, "state": pid}  # lifespan state reaches the requests
        body, kind = _multipart({"name": "ferry", "count": "7"}, {})
        assert _json(server, "POST", "/form", body, **{"Content-Type": kind}) == {
            "name": "ferry",
            "count": 7,
        }
        data = os.urandom(3 * 1024 * 1024 + 17)
        body, kind = _multipart({}, {"file": ("blob.bin", data)})
        assert _json(server, "POST", "/upload", body, **{"Content-Type": kind}) == {
            "filename": "blob.bin",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        # FastAPI's own 422 and 404, and an exception in a handler: a 500, logged.
        status, _, data = server.request("GET", "/items/not-a-number")
        assert status == 422 and b"int_parsing" in data
        assert server.get("/nowhere")[0] == 404
        assert server.get("/boom")[0] == 500
        server.wait_for_log(r"RuntimeError: the handler blew up")

        done = tmp_path / "background.txt"
        status, _, data = server.request("POST", f"/background?path={done}")
        assert (status, data) == (200, b"queued")
        # (exists first, then written: wait for the words, not the file)
        assert wait_until(
            lambda: done.exists() and done.read_text() == "done after the response", timeout=10
        )

        assert server.stop() == 0
    assert trace.read_text() == f"startup {pid}\nshutdown {pid}\n"


def test_a_streamed_response_reaches_the_client_as_it_is_produced() -> None:
    """Server-sent events every 100 ms: each arrives within 50 ms of being produced."""
    with serving(FASTAPI, "--min-instances", "1") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", "/stream?n=10&every=0.1")
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Type", "").startswith("text/event-stream")
            arrivals: list[tuple[bytes, float]] = []
            buffer = b""
            while len(arrivals) < 10:
                chunk = response.read1(65536)
                if not chunk:
                    break
                now = time.monotonic()
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    arrivals.append((event, now))
            assert response.read() == b""
        finally:
            conn.close()
        assert [e.split()[1] for e, _ in arrivals] == [str(i).encode() for i in range(10)]
        # Each event carries the app's clock (time.monotonic, shared by every process on
        # the machine) when it was produced: it reached the client within 50 ms.
        delays = [now - float(event.split()[2]) for event, now in arrivals]
        assert all(0 <= delay < 0.05 for delay in delays), delays


def test_an_asgi_process_serves_many_requests_at_once() -> None:
    """Unlimited concurrency per process: 20 requests sleeping 1 s on one process take
    about 1 s, not 20."""
    with serving(FASTAPI, "--min-instances", "1", "--max-pool-size", "1") as server:
        results, took = server.get_at_once("/sleep?seconds=1", 20)
        assert [status for status, _ in results] == [200] * 20
        assert len({body for _, body in results}) == 1  # one process
        assert took < 5, took


def test_starlette_sees_the_request_as_sent() -> None:
    with serving(STARLETTE, "--min-instances", "1") as server:
        assert server.get("/") == (200, b"hello from starlette")
        got = _json(server, "GET", "/headers/a%20b/%C3%A9?x=1&y=%20", Host="example.test:8080")
        assert got == {
            "path": "/headers/a b/é",
            "query": "x=1&y=+",
            "client": "127.0.0.1",
            "host": "example.test:8080",
            "root_path": "",
            "http_version": "1.1",
        }
        status, headers, body = server.request("GET", "/chunks")
        assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")
        assert headers.get("transfer-encoding") == "chunked"
        status, headers, body = server.request("HEAD", "/")
        assert (status, body) == (200, b"")
        assert headers["content-length"] == "20"


def test_lifespan_startup_that_raises_is_a_failed_start_with_the_apps_error(
    report_dir: Path,  # noqa: F811 - the fixture
) -> None:
    with serving(APPS / "asgi_lifespan_fails", *flags(report_dir), wait_ready=0) as server:
        failure = assert_explained(
            server,
            report_dir,
            step="lifespan_startup",
            category="lifespan_failed",
            texts=["the cache server is on fire", "The app's lifespan startup failed"],
        )
        assert "main.py" in failure.page  # the traceback, from the app's own frames


def test_a_wsgi_app_found_as_asgi_is_refused_naming_the_fix(
    report_dir: Path,  # noqa: F811 - the fixture
) -> None:
    with serving(APPS / "asgi_wsgi_app", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="load_app",
            category="wsgi_app",
            texts=["main.app is a WSGI application", "--app-type wsgi"],
        )


def test_the_asgi_loader_stops_in_order_on_sigterm_and_runs_the_lifespan_shutdown(
    tmp_path: Path,
) -> None:
    import signal

    trace = tmp_path / "lifespan.log"
    with serving(FASTAPI, "--min-instances", "1", env={"LIFESPAN_LOG": str(trace)}) as server:
        (pid,) = server.app_pids
        slow: list[tuple[int, bytes]] = []
        request = threading.Thread(target=lambda: slow.append(server.get("/sleep?seconds=1")))
        request.start()
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        request.join(15)
        assert slow == [(200, str(pid).encode())]
        assert wait_until(lambda: not alive(pid), timeout=10)
        server.wait_for_log(rf"App {pid} stopped by itself \(exit code 0\)")
        assert trace.read_text() == f"startup {pid}\nshutdown {pid}\n"
        server.wait_for_ready()  # replaced


@pytest.mark.parametrize("path", ["/", "/pid"])
def test_fds_and_children_return_to_their_baseline(path: str) -> None:
    with serving(STARLETTE, "--min-instances", "1") as server:
        server.get(path)
        before = server.settled_resources()
        for _ in range(200):
            assert server.get(path)[0] == 200
        assert server.settled_resources() == before


def test_a_module_attribute_reference_names_the_app() -> None:
    with serving(STARLETTE, "--startup-file", "main:api") as server:
        server.wait_for_log(r"app type: Python ASGI \(main\.py:api\)")
        assert server.get("/") == (200, b"hello from starlette")
    # As uvicorn users type it: `ferryman start main:api` in the app's directory.
    with serving("main:api", cwd=STARLETTE) as server:
        server.wait_for_log(r"serving \S*/asgi_starlette$")
        server.wait_for_log(r"app type: Python ASGI \(main\.py:api\)")
        assert server.get("/") == (200, b"hello from starlette")
    # --app mounts another app: given uvicorn's form, the one line says what to use.
    line = refused_start("--app", "main:api", app_dir=STARLETTE)
    assert line.endswith(
        "to serve the callable main:api (uvicorn's form), use --startup-file main:api"
    )


def test_the_concurrency_cap_holds_for_an_asgi_process() -> None:
    """--force-max-concurrent-requests-per-process 3 on one process: of 9 concurrent
    requests, never more than 3 are in the app at once (the rest wait in the queue), and 3
    are (it is a cap, not one at a time)."""
    with serving(
        FASTAPI, "--min-instances", "1", "--max-pool-size", "1",
        "--force-max-concurrent-requests-per-process", "3",
    ) as server:  # fmt: skip
        assert "requests per process: at most 3" in server.log_text()
        results, took = server.get_at_once("/held?seconds=0.5", 9)
        assert [status for status, _ in results] == [200] * 9
        peaks = [json.loads(body)["peak"] for _, body in results]
        assert max(peaks) == 3, peaks
        assert took >= 1.5, took  # three rounds of three


def test_uvloop_runs_the_app_when_its_environment_has_it(tmp_path: Path) -> None:
    """The same bare app (asgi.py, found as ASGI) under an interpreter whose environment
    has uvloop (Ferryman's test environment) and under one without (a fresh venv)."""
    import subprocess
    import sys

    bare = tmp_path / "env"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60
    )
    plain_python = bare / "bin" / "python"
    for python, expected in ((sys.executable, b"uvloop.Loop"), (str(plain_python), b"asyncio.")):
        with serving(APPS / "asgi_plain", "--python", python) as server:
            server.wait_for_log(r"app type: Python ASGI \(asgi\.py\)")
            status, body = server.get("/")
            assert status == 200
            assert body.startswith(expected), body
