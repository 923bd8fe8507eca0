"""The seed regression: failing spawns, one after another, leak nothing.

Passenger once leaked a file descriptor per error report (its guard was taken
before the report file existed). Here every failed spawn's pipes, pidfd, child
process, socket path and report file must be released.
"""

from __future__ import annotations

import http.client
import re
import time
from pathlib import Path

from .harness import APPS, serving, wait_until

SPAWNS = 1000


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


def test_an_app_that_dies_right_after_starting_is_not_restarted_in_a_loop(tmp_path: Path) -> None:
    """A process that exits 0.3 s after it became ready is restarted after a back-off."""
    with serving(
        APPS / "wsgi_dies_early", "--error-report-dir", str(tmp_path), wait_ready=0
    ) as server:
        server.wait_for_log("it crashes right after starting")
        status, body = server.get("/")  # in the back-off: the error page, at once
        assert status in (200, 500)
        if status == 500:
            assert b"after it started" in body
        time.sleep(4)
        spawns = server.log_text().count("dies-early app: exiting now")
        # 1 s, 2 s, 4 s... between starts: about 3 in 4 s; a tight loop would be dozens.
        assert 1 <= spawns <= 5, spawns


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
