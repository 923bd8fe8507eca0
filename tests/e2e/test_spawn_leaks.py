"""The seed regression: failing spawns, one after another, leak nothing.

Passenger once leaked a file descriptor per error report (its guard was taken
before the report file existed). Here every failed spawn's pipes, pidfd, child
process, socket path and report file must be released.
"""

from __future__ import annotations

import http.client
import re
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
