"""Signals an operator sends: HUP restarts the app's processes and reopens the log, USR1
reopens the log."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP], ids=["USR1", "HUP"])
def test_the_signal_reopens_the_log_file(tmp_path: Path, sig: signal.Signals) -> None:
    """logrotate moves the log away and sends USR1 (or HUP): the lines from before stay in
    the moved file, the lines from then on go to a new file under the old name."""
    log_file = tmp_path / "ferryman.log"
    rotated = tmp_path / "ferryman.log.1"
    with serving(STUB, "--log-file", str(log_file), wait_ready=0) as server:
        assert wait_until(lambda: "ready" in log_file.read_text(), timeout=15)
        first = re.search(r"App \d+ ready", log_file.read_text())
        assert first
        assert server.get("/print?msg=before-rotation")[0] == 200
        # Its output and access line are written (by the core, apart): then logrotate comes.
        assert wait_until(lambda: _has_both(log_file, "before-rotation"), 10)
        log_file.rename(rotated)
        server.send_signal(sig)
        reopened = f"Received {sig.name}: reopened the log file {log_file}"
        assert wait_until(lambda: log_file.exists() and reopened in log_file.read_text(), 10)
        assert server.get("/print?msg=after-rotation", timeout=20)[0] == 200
        assert wait_until(lambda: _has_both(log_file, "after-rotation"), 10)
        assert server.proc.poll() is None
        old, new = rotated.read_text(), log_file.read_text()
        # Before: the banner, the app's output and the access log; all in the moved file.
        for line in ("Listening on http://127.0.0.1:", first.group(), "stub says: before-rotation",
                     '"GET /print?msg=before-rotation HTTP/1.1" 200'):  # fmt: skip
            assert line in old and line not in new, line
        # After: the same kinds of lines, all in the new file.
        for line in (reopened, "stub says: after-rotation",
                     '"GET /print?msg=after-rotation HTTP/1.1" 200'):  # fmt: skip
            assert line in new and line not in old, line
        if sig is signal.SIGHUP:  # it restarts the processes too: logged in the new file
            assert "Received SIGHUP: restarting the processes" in new


def _has_both(log_file: Path, msg: str) -> bool:
    """The app's output line for /print?msg=... and its access line are in the log file."""
    text = log_file.read_text()
    return f"stub says: {msg}" in text and f"GET /print?msg={msg} HTTP/1.1" in text
