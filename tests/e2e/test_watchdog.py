"""The watchdog: a core that dies is replaced on the same listening sockets; connections
made meanwhile wait and are served; nothing outlives the watchdog."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .harness import APPS, STUB, alive, process_children, serving, wait_until


def _get(port: int, timeout: float = 30) -> tuple[int, float]:
    """One request on a new connection: (status, seconds); status 0 if the connection
    was refused or reset."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return 0, time.monotonic() - started
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


def test_a_killed_core_is_replaced_and_connections_made_meanwhile_are_served() -> None:
    with serving(STUB, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        old_core = server.pid
        old_apps = server.children()
        assert len(old_apps) == 2
        results: list[tuple[int, float]] = []
        stop = threading.Event()

        def client() -> None:
            # New connections one after another, through the gap (bounded: 400, 20 s).
            deadline = time.monotonic() + 20
            while not stop.is_set() and len(results) < 400 and time.monotonic() < deadline:
                results.append(_get(server.port))

        thread = threading.Thread(target=client)
        thread.start()
        gap: list[socket.socket] = []
        try:
            assert wait_until(lambda: len(results) >= 5, timeout=10)
            killed_at = time.monotonic()
            before = len(results)
            os.kill(old_core, signal.SIGKILL)
            # Connections made while no core runs: the old one is dead, the new one not
            # started yet (checked below against its first log line).
            assert wait_until(lambda: not alive(old_core), timeout=5)
            for _ in range(8):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                gap.append(sock)
                sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            connected = time.time()
            new_core = server.find_core(not_pid=old_core)
            # A new core serves within 3 s of the kill.
            assert wait_until(lambda: any(s == 200 for s, _ in results[before + 1 :]), timeout=3), (
                results[before:]
            )
            served_after = time.monotonic() - killed_at
            assert served_after < 3, served_after
            assert [_response_status(sock) for sock in gap] == [200] * 8
            assert wait_until(lambda: len(results) >= before + 20, timeout=10)
        finally:
            stop.set()
            thread.join(30)
            for sock in gap:
                sock.close()
        # Only a connection the dead core had accepted may have failed; every one made
        # during the gap waited in the backlog and was served.
        failed = [r for r in results[before:] if r[0] != 200]
        assert len(failed) <= 1, failed
        assert all(r[0] == 200 for r in results[:before])
        server.wait_for_log(
            rf"The core \(pid {old_core}\) died \(signal 9\) after [\d.]+ s; starting a new one"
        )
        first_words = server.wait_for_log(rf"^(\S+ \S+) \w+ +\[{new_core}\] ")
        assert connected < _log_time(first_words.group(1)), "not made while no core ran"
        # The dead core's app processes are gone; the new core has its own.
        assert wait_until(lambda: not any(alive(pid) for pid in old_apps), timeout=5)
        assert wait_until(lambda: len(process_children(new_core)) == 2, timeout=15)
        new_apps = process_children(new_core)
        assert server.get("/")[0] == 200
        assert server.stop() == 0
        assert process_children(server.watchdog_pid) == []
        # Nothing of the new core outlives the server either.
        assert not any(alive(pid) for pid in [new_core, *new_apps])


def _response_status(sock: socket.socket) -> int:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def _log_time(stamp: str) -> float:
    """A log line's time ("2026-11-30 08:25:57.866", local time) as a Unix time."""
    whole, _, millis = stamp.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def test_the_watchdog_kills_orphans_that_ignore_their_owner_pipe_and_sigterm() -> None:
    """An any-language app that never reads stdin and ignores SIGTERM: when its core is
    killed, the watchdog (their subreaper) kills it."""
    with serving(APPS / "generic_ignores_sigterm", "--min-instances", "1") as server:
        old_core = server.pid
        (app,) = server.children()
        os.kill(old_core, signal.SIGKILL)
        assert wait_until(lambda: not alive(app), timeout=5)
        server.find_core(not_pid=old_core)
        server.wait_for_ready()
        assert server.get("/")[0] == 200


@pytest.mark.parametrize("restarted", [False, True], ids=["first-core", "restarted-core"])
def test_a_killed_watchdog_takes_the_core_and_every_app_process_with_it(restarted: bool) -> None:
    """kill -9 of the watchdog itself: the core sees its command pipe close and stops
    gracefully (within the graceful timeout), and its app processes with it; the same for
    a core the watchdog started after the first one died."""
    with serving(
        STUB, "--min-instances", "2", "--max-pool-size", "2", "--graceful-timeout", "2",
        wait_ready=2,
    ) as server:  # fmt: skip
        if restarted:
            os.kill(server.pid, signal.SIGKILL)
            server.pid = server.find_core(not_pid=server.pid)
            assert wait_until(lambda: len(server.children()) == 2, timeout=15)
        core = server.pid
        apps = server.children()
        assert len(apps) == 2
        server.proc.kill()
        server.proc.wait(10)
        assert wait_until(lambda: not alive(core), timeout=6)
        assert wait_until(lambda: not any(alive(pid) for pid in apps), timeout=5)
        assert "The watchdog is gone: stopping" in server.log_text()


def test_sigterm_to_the_watchdog_stops_everything_and_refuses_new_connections() -> None:
    with serving(STUB, "--min-instances", "1") as server:
        port = server.port
        core = server.pid
        apps = server.children()
        assert apps
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert not alive(core)
        assert not any(alive(pid) for pid in apps)
        refused = socket.socket()
        try:
            assert refused.connect_ex(("127.0.0.1", port)) != 0
        finally:
            refused.close()
        log = server.log_text()
        assert "Watchdog received SIGTERM: stopping the server" in log
        assert "died" not in log


def test_a_core_that_cannot_start_ends_the_watchdog_with_its_exit_code(tmp_path: Path) -> None:
    """No retry loop for a core that never served (here: TMPDIR too deep for socket
    paths, found only by the core): exit code 2, the reason on stderr."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    env = dict(os.environ, TMPDIR=str(deep))
    done = subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(STUB), "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "too deep for Unix socket paths" in done.stderr
    assert "died" not in done.stderr


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode == 0


def test_as_pid_1_of_a_container_it_restarts_its_core_and_stops_on_sigterm() -> None:
    """As in a container (the Dockerfile in docs/operations.md): ferryman is PID 1 of a
    new pid namespace; its core killed → a new one; SIGTERM (docker stop) → everything
    stops, exit code 0, nothing left."""
    if not _unshare_works():
        if os.environ.get("CI"):
            raise AssertionError("CI runs as root: unshare --pid must work here")
        pytest.skip("unshare --pid needs root (CAP_SYS_ADMIN)")
    port_probe = socket.socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    argv = [
        "unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
        sys.executable, "-m", "ferryman", "start", str(STUB), "--port", str(port),
        "--min-instances", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: _get(port, timeout=5)[0] == 200, timeout=20)
        (watchdog,) = process_children(proc.pid)
        status = Path(f"/proc/{watchdog}/status").read_text()
        assert f"NSpid:\t{watchdog}\t1\n" in status  # PID 1 in its namespace
        (core,) = process_children(watchdog)
        os.kill(core, signal.SIGKILL)
        assert wait_until(
            lambda: [p for p in process_children(watchdog) if p != core and alive(p)], timeout=5
        )
        assert _get(port)[0] == 200
        everything = [watchdog, *process_children(watchdog)]
        os.kill(watchdog, signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not any(alive(pid) for pid in everything)
        assert proc.stdout is not None
        log = proc.stdout.read().decode()
        assert "Watchdog received SIGTERM: stopping the server" in log
        assert "Ferryman stopped" in log
    finally:
        if proc.poll() is None:
            proc.kill()  # --kill-child: the namespace's PID 1 goes with it
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_core_that_keeps_dying_is_restarted_after_a_growing_back_off() -> None:
    with serving(STUB, "--min-instances", "1") as server:
        first = server.pid
        os.kill(first, signal.SIGKILL)
        second = server.find_core(not_pid=first)
        server.wait_for_log(
            r"The core \(pid \d+\) died \(signal 9\) after [\d.]+ s; starting a new one$"
        )
        server.wait_for_log(rf"\[{second}\] Listening on")
        os.kill(second, signal.SIGKILL)
        server.wait_for_log(
            rf"The core \(pid {second}\) died \(signal 9\) after [\d.]+ s; starting a new one in "
            r"1 s \(it keeps dying\)"
        )
        third = server.find_core(not_pid=second)
        server.pid = third
        server.wait_for_log(rf"\[{third}\] Listening on")
        assert server.get("/")[0] == 200
        assert server.stop() == 0
