"""Any-language apps: a command that serves HTTP on $PORT, started and stopped by Ferryman."""

from __future__ import annotations

import time
from pathlib import Path

from .harness import APPS, alive, serving

GENERIC = APPS / "generic_http"


def test_app_start_command_serves_http() -> None:
    """--app-start-command runs the command with $PORT and forwards HTTP to it."""
    with serving(GENERIC, "--app-start-command", "python3 server.py") as server:
        match = server.wait_for_log(r"generic app listening on (\d+)")
        port = int(match.group(1))
        status, body = server.get("/some/path?q=1")
        assert status == 200
        assert body.startswith(b"generic pid ")
        assert body.endswith(b"path /some/path?q=1\n")
        # A simple command is exec'd: the process Ferryman started is the app itself.
        assert server.children() == [int(body.split()[2])]
        status, _, body = server.request("POST", "/", body=b"posted body")
        assert (status, body) == (200, b"posted body")
        assert "any-language app, started with: python3 server.py" in server.log_text()
        assert 1024 <= port <= 65535


def test_procfile_web_line_is_used() -> None:
    """With no Python or Node.js startup file, a Procfile's web: line starts the app."""
    with serving(GENERIC) as server:
        assert "any-language app, started with: python3 server.py" in server.log_text()
        conn = server.connection()
        for _ in range(5):  # keep-alive towards the client
            conn.request("GET", "/x")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read().endswith(b"path /x\n")
        conn.close()


def test_app_start_command_from_ferrymanfile() -> None:
    """app_start_command in Ferrymanfile.toml works like the flag."""
    with serving(APPS / "generic_toml", wait_ready=2) as server:
        assert len(server.children()) == 2
        assert server.get("/")[0] == 200


def test_a_command_that_fails_shows_the_error_page(tmp_path: Path) -> None:
    """A command that exits at once: the error page has its output and exit code."""
    with serving(
        tmp_path, "--app-start-command", "echo 'no such server, sorry' >&2; exit 7",
        "--min-instances", "0", wait_ready=0,
    ) as server:  # fmt: skip
        status, body = server.get("/")
        assert status == 500
        assert b"no such server, sorry" in body
        assert b"exit code 7" in body
        assert b"Waiting for the app to accept connections on $PORT &larr; failed here" in body


def test_a_command_that_never_listens_times_out(tmp_path: Path) -> None:
    with serving(
        tmp_path, "--app-start-command", "sleep 60", "--start-timeout", "1",
        "--min-instances", "0", wait_ready=0,
    ) as server:  # fmt: skip
        status, body = server.get("/")
        assert status == 500
        assert b"did not become ready within 1 s" in body
        assert b"PORT=" in body  # the port it was expected on
        assert server.children() == []


def test_stopping_kills_an_app_that_ignores_sigterm() -> None:
    """SIGTERM, then SIGKILL after the grace period: nothing of the app is left."""
    with serving(APPS / "generic_ignores_sigterm") as server:
        shell = server.children()
        assert len(shell) == 1
        app_pids = [int(line.split()[0]) for line in _descendants(shell[0])]
        assert app_pids, "the shell should have started the server"
        start = time.monotonic()
        assert server.stop() == 0
        assert not any(alive(pid) for pid in [*shell, *app_pids])
        server.wait_for_log("ignored SIGTERM; sending SIGKILL")
        assert time.monotonic() - start < 15


def _descendants(pid: int) -> list[str]:
    """'pid ppid' lines of the processes below ``pid`` (from /proc)."""
    import os

    found = []
    frontier = {pid}
    for _ in range(5):
        next_frontier = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
            if ppid in frontier:
                found.append(f"{entry} {ppid}")
                next_frontier.add(int(entry))
        frontier = next_frontier
    return found


def test_a_chunked_response_cut_short_by_the_app_is_not_passed_off_as_complete() -> None:
    """If the app dies inside a chunked body, the client sees a cut, not a clean end."""
    import socket

    with serving(APPS / "generic_cut") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"hello" in data
        assert not data.endswith(b"0\r\n\r\n")  # no terminating chunk: visibly incomplete


def test_an_app_that_breaks_http_gets_502_and_a_log_line_naming_it() -> None:
    """A response that is not HTTP: 502 for the request, and the log says which process
    broke the protocol and how; the next request is served."""
    with serving(GENERIC, "--app-start-command", "python3 server.py") as server:
        pid = server.children()[0]
        status, body = server.get("/garbage")
        assert status == 502
        assert b"the app broke the protocol" in body
        server.wait_for_log(
            rf"Protocol error on a connection to app process {pid}: invalid HTTP response"
        )
        assert server.get("/")[0] == 200


def test_server_sent_events_from_a_generic_app_arrive_as_they_are_sent() -> None:
    """Over HTTP to the app (not the session protocol): each event (one per 100 ms)
    reaches the client within 50 ms of the app writing it."""
    import http.client

    with serving(GENERIC, "--app-start-command", "python3 server.py") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", "/sse?n=8")
            response = conn.getresponse()
            assert response.status == 200
            lags: list[float] = []
            buffer = b""
            while len(lags) < 8 and (chunk := response.read1(65536)):
                now = time.monotonic()
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    lags.append(now - float(event.split()[2]))
            assert response.read() == b""
        finally:
            conn.close()
        assert len(lags) == 8 and all(0 <= lag < 0.05 for lag in lags), lags
