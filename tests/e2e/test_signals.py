"""Signals an operator sends: HUP restarts the app's processes, USR1 reopens the log."""

from __future__ import annotations

import signal
from pathlib import Path

from .harness import STUB, alive, serving, wait_until


def test_sighup_restarts_the_app_processes_and_keeps_serving() -> None:
    """After SIGHUP the app is served by new processes; the old ones are gone."""
    with serving(STUB, "--min-instances", "2", "--max-pool-size", "4", wait_ready=2) as server:
        old = set(server.children())
        mark = server.mark()
        server.send_signal(signal.SIGHUP)
        server.wait_for_log("Received SIGHUP: restarting the processes", start=mark)
        assert wait_until(lambda: not any(alive(pid) for pid in old), timeout=20)
        for _ in range(5):
            status, body = server.get("/pid", timeout=20)
            assert status == 200
            assert int(body) not in old
        assert server.proc.poll() is None  # still running


def test_sigusr1_reopens_the_log_file(tmp_path: Path) -> None:
    """logrotate moves the log away and sends SIGUSR1: new lines go to a new file."""
    log_file = tmp_path / "ferryman.log"
    rotated = tmp_path / "ferryman.log.1"
    with serving(STUB, "--log-file", str(log_file), wait_ready=0) as server:
        assert wait_until(lambda: "ready" in log_file.read_text(), timeout=15)
        log_file.rename(rotated)
        server.send_signal(signal.SIGUSR1)
        assert wait_until(log_file.exists, timeout=10)
        assert server.get("/print?msg=after-rotation")[0] == 200
        assert wait_until(lambda: "after-rotation" in log_file.read_text(), timeout=10)
        assert "after-rotation" not in rotated.read_text()
        assert server.proc.poll() is None
