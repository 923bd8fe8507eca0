"""An app that cannot start: the failure is logged with the app's output, the child is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .harness import APPS, alive, process_children, serving, wait_until


def test_app_raising_at_import_is_reported() -> None:
    """The request gets an error naming the failure; the log has the app's own output."""
    with serving(APPS / "wsgi_broken", wait_ready=0) as server:
        server.wait_for_log(r"Could not start a process")
        status, body = server.get("/")
        assert status == 500
        assert b"the database is on fire" in body
        log = server.log_text()
        assert "output: broken app: about to fail" in log
        assert "RuntimeError: the database is on fire" in log
        assert "[step: load_app, category: import_error]" in log
        assert server.children() == []


def test_app_that_never_becomes_ready_is_killed_at_the_start_timeout() -> None:
    """With --start-timeout 1, a hanging app is killed and reaped, and the log says why."""
    with serving(APPS / "wsgi_hang", "--start-timeout", "1", wait_ready=0) as server:
        match = server.wait_for_log(r"App (\d+) output: hanging app")
        pid = int(match.group(1))
        server.wait_for_log(r"did not become ready within 1 s .*while loading the application")
        assert wait_until(lambda: not alive(pid), timeout=5)
        assert pid not in process_children(server.pid)


def test_a_directory_given_as_the_interpreter_is_explained(tmp_path: Path) -> None:
    """--python pointing at a virtualenv's directory: the start stops at once (exit 2),
    saying where the interpreter would be."""
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(APPS / "wsgi_broken"), "--port", "0",
         "--python", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{tmp_path} is a directory" in result.stderr
    assert f"{tmp_path}/bin/" in result.stderr
