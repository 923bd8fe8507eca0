"""Crashes: a dying app process costs only its own request; a dying core leaves no app behind."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from .harness import APPS, GATE_APP, STUB, Gates, Request, alive, serving, wait_until


def test_killed_app_process_fails_only_its_request_and_is_replaced(tmp_path: Path) -> None:
    """kill -9 of a process mid-request: that request gets 502, the next 50 get 200."""
    gates = Gates(tmp_path)
    with serving(GATE_APP, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        mark = server.mark()
        victim_request = Request(server, f"/wait?gate={gates.path('never')}")
        victim = int(server.wait_for_log(r"waiting never (\d+)", start=mark).group(1))
        os.kill(victim, signal.SIGKILL)
        victim_request.join(30)
        assert victim_request.status == 502
        for _ in range(50):
            status, body = server.get("/pid")
            assert status == 200
            assert int(body) != victim
        server.wait_for_log(rf"App {victim} exited unexpectedly")
        # A replacement is spawned to keep min_instances.
        assert wait_until(lambda: len(server.children()) == 2, timeout=15)
        assert victim not in server.children()


def test_killed_core_leaves_no_app_process(tmp_path: Path) -> None:
    """kill -9 of the core: every app process, even one mid-request, exits within 5 s."""
    gates = Gates(tmp_path)
    with serving(GATE_APP, "--min-instances", "3", "--max-pool-size", "3", wait_ready=3) as server:
        mark = server.mark()
        busy = Request(server, f"/wait?gate={gates.path('never')}")
        server.wait_for_log(r"waiting never", start=mark)
        apps = server.children()
        assert len(apps) == 3
        os.kill(server.pid, signal.SIGKILL)  # the core (the watchdog starts another)
        assert wait_until(lambda: not any(alive(pid) for pid in apps), timeout=5), [
            pid for pid in apps if alive(pid)
        ]
        busy.join(10)


def test_killed_core_leaves_no_node_process(tmp_path: Path) -> None:
    """kill -9 of the core: Node.js app processes, even one mid-request, exit within 5 s."""
    gates = Gates(tmp_path)
    with serving(
        APPS / "node_http", "--min-instances", "2", "--max-pool-size", "2", wait_ready=2
    ) as server:
        mark = server.mark()
        busy = Request(server, f"/wait?gate={gates.path('never')}")
        server.wait_for_log(r"waiting never", start=mark)
        apps = server.children()
        assert len(apps) == 2
        assert apps == sorted(server.app_pids)
        os.kill(server.pid, signal.SIGKILL)  # the core (the watchdog starts another)
        assert wait_until(lambda: not any(alive(pid) for pid in apps), timeout=5), [
            pid for pid in apps if alive(pid)
        ]
        busy.join(10)
        assert busy.status == -1  # the core died with the request: no response


def test_a_request_that_kills_a_new_process_is_a_crash_not_a_failed_start() -> None:
    """One process; the first request, right after it started, makes it exit: that request
    gets 502, the process is replaced, and the next requests are served — no error page,
    no back-off, no "could not start" in the log."""
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "1") as server:
        status, body = server.get("/exit?code=3")
        assert status == 502, body
        for _ in range(10):
            status, body = server.get("/pid")
            assert status == 200, body
        log = server.log_text()
        assert "Could not start" not in log
        assert "Error starting web application" not in log


def _unix_socket_paths(pid: int) -> list[str]:
    """The paths of the Unix sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    paths = []
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[6] in inodes:
                paths.append(fields[7])
    return paths


def test_retired_process_killed_by_someone_else_is_reported_as_a_crash(tmp_path: Path) -> None:
    """Regression (seen in CI): a process found unreachable is retired; when it then dies
    by a signal Ferryman did not send (kill -9, the OOM killer), the log says it exited
    unexpectedly, not that it "stopped"."""
    with serving(GATE_APP, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        victim = server.children()[0]
        (socket_path,) = [p for p in _unix_socket_paths(victim) if p.endswith(".sock")]
        os.kill(victim, signal.SIGSTOP)  # alive, but will not exit when told to
        try:
            os.unlink(socket_path)
            mark = server.mark()
            for _ in range(20):
                status, body = server.get("/pid")
                assert status == 200
                assert int(body) != victim
                if any(f"App {victim} is unreachable" in line for line in server.lines[mark:]):
                    break
            server.wait_for_log(rf"App {victim} is unreachable", start=mark)
        finally:
            os.kill(victim, signal.SIGKILL)
        server.wait_for_log(rf"App {victim} exited unexpectedly \(signal 9\)", start=mark)
        assert wait_until(lambda: len(server.children()) == 2, timeout=15)
