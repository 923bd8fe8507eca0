"""Graceful shutdown: in-flight requests finish, then everything is gone."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from ferryman.core import STOP_MARGIN

from .harness import APPS, GATE_APP, Gates, Request, alive, serving, wait_until


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    """SIGTERM during 10 in-flight requests: all 10 get 200, exit 0, nothing left behind."""
    gates = Gates(tmp_path)
    with serving(
        GATE_APP, "--min-instances", "2", "--max-pool-size", "2", "--thread-count", "5",
        wait_ready=2,
    ) as server:  # fmt: skip
        mark = server.mark()
        requests = [Request(server, f"/wait?gate={gates.path('go')}") for _ in range(10)]
        for _ in range(10):
            match = server.wait_for_log(r"waiting go", start=mark)
            mark = server.lines.index(match.string, mark) + 1
        apps = server.children()
        assert len(apps) == 2
        instance = server.instance_dirs()
        assert len(instance) == 1

        server.send_signal(signal.SIGTERM)
        server.wait_for_log("Shutting down")
        # No new connections are accepted once shutdown has begun.
        assert wait_until(lambda: _refused(server.port), timeout=5)
        gates.open("go")
        for r in requests:
            r.join(30)
        assert [r.status for r in requests] == [200] * 10
        assert server.proc.wait(30) == 0
        assert not any(alive(pid) for pid in apps)
        assert server.instance_dirs() == []


def test_sigint_stops_like_sigterm() -> None:
    """Ctrl-C (SIGINT) is a graceful stop too."""
    with serving(GATE_APP) as server:
        apps = server.children()
        assert server.stop(signal.SIGINT) == 0
        assert not any(alive(pid) for pid in apps)
        assert server.instance_dirs() == []


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_a_second_signal_cuts_requests_short_without_internal_errors(tmp_path: Path) -> None:
    """Two SIGTERMs while a request hangs: the server stops at once and cleanly (exit 0)."""
    gates = Gates(tmp_path)
    with serving(GATE_APP) as server:
        mark = server.mark()
        hanging = Request(server, f"/wait?gate={gates.path('never')}")
        server.wait_for_log("waiting never", start=mark)
        apps = server.children()
        server.send_signal(signal.SIGTERM)
        server.wait_for_log("Shutting down")
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        hanging.join(10)
        log = server.log_text()
        assert "Traceback" not in log and "internal error" not in log, log
        assert "did not exit after its stdin closed" not in log  # no 5 s wait: SIGTERM at once
        assert not any(alive(pid) for pid in apps)


def test_the_whole_stop_fits_in_the_graceful_timeout(tmp_path: Path) -> None:
    """--graceful-timeout 2 with a request that would take a minute: the request is cut,
    and the server has exited 0, its app processes gone, within the graceful timeout plus
    the documented margin (STOP_MARGIN, 1.5 s) — not 5 s more per process."""
    gates = Gates(tmp_path)
    with serving(
        GATE_APP, "--graceful-timeout", "2", "--min-instances", "2", "--max-pool-size", "2",
        wait_ready=2,
    ) as server:  # fmt: skip
        mark = server.mark()
        stuck = Request(server, f"/wait?gate={gates.path('never')}")
        server.wait_for_log(r"waiting never", start=mark)
        apps = server.children()
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        took = time.monotonic() - started
        assert took < 2 + STOP_MARGIN, took
        assert not any(alive(pid) for pid in apps)
        stuck.join(10)
        assert stuck.status != 200


def test_a_request_outlasting_the_graceful_timeout_is_cut_off(tmp_path: Path) -> None:
    """--graceful-timeout 1: a request still running 1 s after SIGTERM is cut off (the
    client gets no response, the access log says 499); the server exits 0 within the
    graceful timeout plus STOP_MARGIN, no app process survives, the instance is gone."""
    gates = Gates(tmp_path)
    with serving(GATE_APP, "--graceful-timeout", "1", "--max-pool-size", "1") as server:
        mark = server.mark()
        hanging = Request(server, f"/wait?gate={gates.path('never')}")
        server.wait_for_log("waiting never", start=mark)
        server.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        hanging.join(15)
        cut_after = time.monotonic() - stopped_at
        assert not hanging.is_alive()
        assert hanging.status == -1, hanging.body  # closed without a response
        assert b"RemoteDisconnected" in hanging.body
        # The request had its whole graceful time, and not much more.
        assert 0.95 <= cut_after < 3, cut_after
        assert server.proc.wait(30) == 0
        took = time.monotonic() - stopped_at
        assert took < 1 + STOP_MARGIN, took
        server.wait_for_log("Graceful timeout reached; closing the remaining connections")
        server.wait_for_log(r'"GET /wait\?gate=\S+ HTTP/1\.1" 499 ')
        assert server.app_pids
        assert not any(alive(pid) for pid in server.app_pids)
        assert server.instance_dirs() == []
        assert "Traceback" not in server.log_text()


def test_an_app_that_ignores_its_stdin_and_sigterm_still_stops_within_the_margin() -> None:
    """The worst case for the stop's bound: a request that never ends, in an app whose
    SIGTERM handler does nothing. Graceful timeout, stdin closed, SIGTERM, SIGKILL: the
    server has exited 0 within --graceful-timeout plus STOP_MARGIN, and the app is gone."""
    with serving(APPS / "wsgi_ignores_sigterm", "--graceful-timeout", "1") as server:
        hanging = Request(server, "/hang")
        server.wait_for_log("app: hanging")
        apps = server.children()
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        took = time.monotonic() - started
        assert took < 1 + STOP_MARGIN, took
        server.wait_for_log(r"App \d+ ignored SIGTERM; sending SIGKILL")
        assert not any(alive(pid) for pid in apps)
        hanging.join(10)
        assert hanging.status == -1
