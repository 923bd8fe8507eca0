"""The seed regression: failing spawns, one after another, leak nothing.

Passenger once leaked a file descriptor per error report (its guard was taken
before the report file existed). Here every failed spawn's pipes, pidfd, child
process, socket path and report file must be released.
"""

from __future__ import annotations

import http.client
import re
import time
from datetime import datetime
from pathlib import Path

from .harness import APPS, Server, serving, wait_until

SPAWNS = 1000
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def test_a_thousand_failed_spawns_leave_nothing_behind(tmp_path: Path) -> None:
    """1,000 requests, each spawning an app that raises at import: fds, children and files
    return to their baseline, and exactly error_report_limit reports remain."""
    reports = tmp_path / "reports"
    reports.mkdir()
    with serving(
        APPS / "wsgi_broken",
        "--min-instances", "0",
        "--spawn-backoff", "0",
        "--error-report-dir", str(reports),
        "--error-report-limit", "50",
        "--no-access-log",
        wait_ready=0,
    ) as server:  # fmt: skip

        def fail_once(conn: http.client.HTTPConnection) -> None:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 500
            assert b"the database is on fire" in body

        for _ in range(3):
            warm = server.connection()
            fail_once(warm)
            warm.close()
        before = server.settled_resources()
        conn = server.connection()  # one keep-alive connection for all the failures
        for _ in range(SPAWNS):
            fail_once(conn)
        conn.close()
        assert len(re.findall(r"Could not start a process", server.log_text())) == SPAWNS + 3
        assert wait_until(lambda: server.resources() == before, timeout=10), (
            before,
            server.resources(),
        )
        assert len(list(reports.iterdir())) == 50


def _logged_at(line: str) -> float:
    """The time stamp a log line starts with, in seconds since the epoch."""
    match = _STAMP.match(line)
    assert match, line
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def _back_offs(server: Server, count: int) -> list[float]:
    """The first ``count`` waits, read from the log, between a process dying right after it
    started (the back-off begins) and the start of the next one (it ends)."""
    waits = []
    index = 0
    for _ in range(count):
        died = server.wait_for_log(r"App \d+ exited unexpectedly", timeout=30, start=index)
        index = server.lines.index(died.string, index) + 1
        started = server.wait_for_log(r"Starting a process for ", timeout=30, start=index)
        index = server.lines.index(started.string, index) + 1
        waits.append(_logged_at(started.string) - _logged_at(died.string))
    return waits


def test_an_app_that_dies_right_after_starting_is_not_restarted_in_a_loop(tmp_path: Path) -> None:
    """A process that exits 0.3 s after it became ready is started again only after the
    back-off (--spawn-backoff, 1 s by default), every time: not in a tight loop."""
    with serving(
        APPS / "wsgi_dies_early", "--error-report-dir", str(tmp_path), wait_ready=0
    ) as server:
        waits = _back_offs(server, 2)
        # Log stamps are wall-clock milliseconds, the back-off runs on the loop's clock.
        assert all(wait >= 0.95 for wait in waits), waits


def test_requests_during_a_crash_loop_back_off_get_the_error_page_at_once(
    tmp_path: Path,
) -> None:
    """While the app is backed off after dying right after starting, a request gets the
    error page (500) at once, and no process is started for it."""
    with serving(
        APPS / "wsgi_dies_early",
        "--error-report-dir", str(tmp_path),
        "--spawn-backoff", "60",
        wait_ready=0,
    ) as server:  # fmt: skip
        server.wait_for_log("it crashes right after starting")
        started = time.monotonic()
        status, body = server.get("/", timeout=10)
        assert time.monotonic() - started < 5
        assert status == 500
        assert b"after it started" in body
        assert server.children() == []
        assert server.log_text().count("Starting a process for") == 1


def test_the_back_off_doubles_while_the_app_keeps_dying_right_after_starting(
    tmp_path: Path,
) -> None:
    """Each death right after starting is a failure in a row: the back-off doubles
    (0.5 s, 1 s, 2 s with --spawn-backoff 0.5), as after failed spawns
    (docs/startup-errors.md)."""
    with serving(
        APPS / "wsgi_dies_early",
        "--error-report-dir", str(tmp_path),
        "--spawn-backoff", "0.5",
        wait_ready=0,
    ) as server:  # fmt: skip
        waits = _back_offs(server, 3)
        for wait, expected in zip(waits, (0.5, 1.0, 2.0), strict=True):
            assert expected * 0.95 <= wait < expected * 2, waits


def test_a_report_directory_with_surprises_does_not_hang_requests(tmp_path: Path) -> None:
    """A directory named like a report (or someone else's file) cannot stop error pages."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "ferryman-error-000000000000.html").mkdir()
    with serving(
        APPS / "wsgi_broken", "--error-report-dir", str(reports), "--error-report-limit", "1",
        "--spawn-backoff", "0.5", wait_ready=0,
    ) as server:  # fmt: skip
        server.wait_for_log("Could not start a process")
        status, body = server.get("/", timeout=10)
        assert status == 500
        assert b"the database is on fire" in body
