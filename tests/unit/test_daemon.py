"""Daemon mode's edges, with real pipes, files and processes: a pid file that is garbage,
stale or someone else's; a daemon that never says how it started, or says too much."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ferryman import daemon
from ferryman.daemon import Daemon, PidFile, ferryman_pid, read_pid_file
from ferryman.errors import AlreadyRunning


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("content", ["", "garbage\n", "12 34\n", "-5\n", "9" * 5000])
def test_a_pid_file_that_is_not_a_pid_is_no_obstacle(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ferryman.pid"
    path.write_text(content)
    pid_file = PidFile(path)
    pid_file.check()  # nothing runs with it: the start goes on
    pid_file.write()
    assert read_pid_file(path) == os.getpid()
    pid_file.remove()
    assert not path.exists()


def test_a_stale_pid_file_or_one_naming_another_program_is_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ferryman.pid"
    for pid in (dead_pid(), os.getppid()):  # gone; alive but not a Ferryman (pytest's parent)
        path.write_text(f"{pid}\n")
        PidFile(path).check()


def test_a_pid_file_naming_a_running_ferryman_refuses_the_start(tmp_path: Path) -> None:
    path = tmp_path / "ferryman.pid"
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "ferryman"]  # its cmdline
    )
    try:
        assert wait_until(lambda: ferryman_pid(server.pid), timeout=10)  # exec'd by now
        path.write_text(f"{server.pid}\n")
        with pytest.raises(AlreadyRunning, match=f"Ferryman {server.pid} is running with it"):
            PidFile(path).check()
    finally:
        server.kill()
        server.wait()


def test_a_pid_file_that_is_not_ours_any_more_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ferryman.pid"
    pid_file = PidFile(path)
    pid_file.write()
    path.write_text("1\n")  # another server took the file over
    pid_file.remove()
    assert path.read_text() == "1\n"


def _exited_child() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def test_a_daemon_that_never_says_a_word_is_waited_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(daemon, "START_WAIT", 0.3)
    read_end, write_end = os.pipe()  # the write end stays open: a daemon stuck starting
    try:
        assert Daemon()._wait_for_word(read_end, _exited_child()) == 1
    finally:
        os.close(read_end)
        os.close(write_end)
    assert "no word from the server within 0 s" in capsys.readouterr().err


def test_what_the_daemon_says_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"ok " + b"x" * 60000)  # far more than a line (fits the pipe)
    os.close(write_end)
    try:
        assert Daemon()._wait_for_word(read_end, _exited_child()) == 0
    finally:
        os.close(read_end)
    out = capsys.readouterr().out
    assert out.startswith("Ferryman is running in the background: xxx")
    assert len(out) < daemon.MAX_WORD + 100
