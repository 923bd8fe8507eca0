"""Production lifecycle, end to end: rolling restarts under load, and a deploy whose new
version cannot start while the old one keeps serving."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .harness import (
    APPS,
    Request,
    Server,
    alive,
    ferryman,
    process_children,
    serving,
    wait_until,
)

SLOW_BOOT = APPS / "wsgi_slow_boot"
BOOT_SECONDS = 2.0


def copy_app(source: Path, tmp_path: Path) -> Path:
    app = tmp_path / "app"
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "tmp").mkdir()
    return app


def touch_restart(app: Path) -> None:
    """A new mtime for tmp/restart.txt, whatever the file system's time resolution."""
    path = app / "tmp" / "restart.txt"
    path.touch()
    later = time.time() + 1
    os.utime(path, (later, later))


class Load:
    """Keep-alive clients sending GET / as fast as they can: bounded in time and count."""

    def __init__(self, server: Server, clients: int, seconds: float) -> None:
        self.server = server
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        #: status (-1: no response), latency, body, and when the request was sent.
        self.results: list[tuple[int, float, bytes, float]] = []
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            for _ in range(100_000):
                if self.stop.is_set() or time.monotonic() > self.deadline:
                    return
                started = time.monotonic()
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
                    status, body = -1, b""
                with self.lock:
                    self.results.append((status, time.monotonic() - started, body, started))
        finally:
            conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def finish(self) -> list[tuple[int, float, bytes, float]]:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        return self.results


def pids_of(results: list[tuple[int, float, bytes, float]]) -> list[int]:
    return [int(body.split()[0]) for status, _, body, _ in results if status == 200]


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_rolling_restarts_under_load_drop_nothing_and_never_stall(tmp_path: Path) -> None:
    """32 keep-alive clients for at least 10 s on a 2-process app that takes 2 s to boot;
    restart.txt touched twice: every request answered 200; the requests sent while a
    restart went on were no slower than those before it, give or take one app request
    (a blocking restart makes nearly all of them wait a whole boot); and both processes
    at the end are new."""
    app = copy_app(SLOW_BOOT, tmp_path)
    with serving(
        app, "--min-instances", "2", "--max-pool-size", "2", "--stat-throttle-rate", "0",
        "--max-request-queue-size", "0", env={"BOOT_SECONDS": str(BOOT_SECONDS)},
    ) as server:  # fmt: skip
        server.wait_for_ready(timeout=30)  # the second process
        before = set(server.children())
        assert len(before) == 2, before
        load = Load(server, clients=32, seconds=60)
        load_started = time.monotonic()
        restarts: list[tuple[float, float]] = []  # from the touch until both old ones stopped
        try:
            assert wait_until(lambda: load.count() > 200, timeout=15)
            for _ in range(2):
                mark = server.mark()
                touched = time.monotonic()
                touch_restart(app)
                # Both processes replaced, one after the other, while the load goes on.
                server.wait_for_log(r"App \d+ ready", timeout=30, start=mark)
                second = server.mark()
                server.wait_for_log(r"App \d+ ready", timeout=30, start=second)
                assert wait_until(lambda at=mark: _stopped_count(server, at) >= 2, timeout=30)
                restarts.append((touched, time.monotonic()))
            count = load.count()
            assert wait_until(
                lambda: load.count() > count + 200 and time.monotonic() > load_started + 10,
                timeout=20,
            )
            after = set(server.children())
        finally:
            results = load.finish()
    failed = [(s, round(t, 3)) for s, t, _, _ in results if s != 200]
    assert not failed, failed[:10]
    # Without a restart: the requests answered before the first touch.
    baseline = p99([t for _, t, _, sent in results if sent + t < restarts[0][0]])
    # While the new processes boot (a blocking restart makes nearly every request sent
    # then wait for the boot: a p99 of about BOOT_SECONDS) ...
    booting = [
        t for _, t, _, sent in results if any(a <= sent <= a + BOOT_SECONDS for a, _ in restarts)
    ]
    # ... and during the whole of each restart, old processes draining and stopping.
    during = [t for _, t, _, sent in results if any(a <= sent <= b for a, b in restarts)]
    # One app request here takes well under a millisecond: no request waited longer than
    # without the restart, but for the noise of a shared machine (far below a boot).
    assert p99(booting) < baseline + 0.25, (baseline, p99(booting), sorted(booting)[-5:])
    assert p99(during) < baseline + 0.25, (baseline, p99(during), sorted(during)[-5:])
    assert max(t for _, t, _, _ in results) < BOOT_SECONDS, sorted(during)[-5:]
    # Enough requests for a p99: the load went on through the restarts.
    assert len(booting) > 100 and len(during) > 200, (len(booting), len(during))
    assert len(after) == 2 and not (after & before), (before, after)
    assert set(pids_of(results[-64:])) <= after


def _stopped_count(server: Server, start: int) -> int:
    return len(re.findall(r"App \d+ stopped", "\n".join(server.log_text().splitlines()[start:])))


@pytest.mark.parametrize(
    ("breakage", "why", "category"),
    [
        ("raise RuntimeError('the new version is broken')", "the new version is broken",
         "import_error"),
        ("import time\ntime.sleep(3600)", "", "timeout"),  # hangs at import: --start-timeout
    ],
    ids=["import_error", "timeout"],
)  # fmt: skip
def test_a_broken_deploy_leaves_the_old_version_serving_until_it_is_fixed(
    tmp_path: Path, breakage: str, why: str, category: str
) -> None:
    app = copy_app(SLOW_BOOT, tmp_path)
    startup = app / "passenger_wsgi.py"
    good = startup.read_text()
    env = {"BOOT_SECONDS": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    with serving(
        app, "--min-instances", "2", "--max-pool-size", "2", "--stat-throttle-rate", "0",
        "--start-timeout", "2", env=env,
    ) as server:  # fmt: skip
        server.wait_for_ready()
        old = {server.get("/")[1] for _ in range(4)}
        assert {body.split()[1] for body in old} == {b"1"}
        # The deploy breaks the app: it raises at import, or never finishes importing.
        startup.write_text(good + "\n" + breakage + "\n")
        mark = server.mark()
        touch_restart(app)
        assert server.get("/")[0] == 200  # restart.txt is looked at when a request comes
        line = server.wait_for_log(
            r"Restart of .* failed, the old processes keep serving: .*" + why
            + r".*category: (?P<category>\w+)\] \(error ID (?P<id>[0-9a-f]+); report: ",
            timeout=15,
            start=mark,
        )  # fmt: skip
        assert line["category"] == category
        error_id = line["id"]
        for _ in range(20):
            status, body = server.get("/")
            assert (status, body.split()[1]) == (200, b"1"), body
        # Logged once (one line; the report's file name carries the ID too).
        assert len([ln for ln in server.log_text().splitlines() if error_id in ln]) == 1
        status_view = subprocess.run(
            [sys.executable, "-m", "ferryman", "status"],
            env=server.env, capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert "Restart failed: " in status_view and f"(error ID {error_id})" in status_view
        # Fixed: the next restart brings the new version in.
        startup.write_text(good.replace('"APP_VERSION", "1"', '"APP_VERSION", "2"'))
        touch_restart(app)
        assert server.get("/")[0] == 200
        assert wait_until(
            lambda: {server.get("/")[1].split()[1] for _ in range(4)} == {b"2"}, timeout=20
        )


def test_max_requests_recycles_every_process_without_failing_a_request() -> None:
    """--max-requests 50 --max-requests-jitter 10, 500 requests from 4 clients: every process
    is replaced at least once, replacement first, one at a time (never two within the same
    request); no request fails; the recycles are counted for the app."""
    with serving(
        APPS / "wsgi_stub", "--min-instances", "2", "--max-pool-size", "2",
        "--max-requests", "50", "--max-requests-jitter", "10",
    ) as server:  # fmt: skip
        server.wait_for_ready()
        first = set(server.app_pids)
        statuses: list[int] = []

        def client() -> None:
            for _ in range(125):
                statuses.append(server.get("/pid", timeout=30)[0])

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        assert statuses == [200] * 500
        # The last replacement asked for may still be starting: its old process leaves
        # once it is ready.
        assert wait_until(
            lambda: (
                server.log_text().count("which served its")
                == len(re.findall(r"Stopping app \d+ of \S+: max_requests", server.log_text()))
            ),
            timeout=10,
        )
        log = server.log_text()
        recycles = re.findall(r"replacing process (\d+), which served its (\d+) requests", log)
        assert {int(pid) for pid, _ in recycles} >= first, recycles
        assert all(50 <= int(limit) <= 60 for _, limit in recycles), recycles
        # One at a time: each replacement was asked for only after the previous one was
        # ready (a new spawn line never comes before the ready line of the one before).
        events = re.findall(r"(replacing process \d+|App \d+ ready)", log)
        spawns = [i for i, e in enumerate(events) if e.startswith("replacing")]
        for a, b in itertools.pairwise(spawns):
            assert any(e.startswith("App") for e in events[a + 1 : b]), events
        # Never two within the same request: between two old processes taking their
        # leave, requests were answered (by the one left serving and the new one).
        leaving = re.findall(r"(Stopping app \d+ of \S+: max_requests|\"GET /pid HTTP)", log)
        stops = [i for i, e in enumerate(leaving) if e.startswith("Stopping")]
        assert len(stops) == len(recycles) >= 2, leaving
        for a, b in itertools.pairwise(stops):
            assert b - a > 1, leaving[a : b + 1]
        assert _retired(server) == {"max_requests": len(recycles)}


def _retired(server: Server) -> dict[str, int]:
    """The app's processes taken out of service, by reason (status --show=json)."""
    status = json.loads(ferryman(server, "status", "--show=json").stdout)
    retired: dict[str, int] = status["apps"][0]["retired"]
    return retired


def test_a_request_queued_longer_than_max_request_queue_time_gets_504() -> None:
    with serving(
        APPS / "wsgi_stub", "--min-instances", "1", "--max-pool-size", "1",
        "--max-request-queue-time", "1",
    ) as server:  # fmt: skip
        results: dict[str, tuple[int, bytes, float]] = {}

        def get(name: str, path: str) -> None:
            started = time.monotonic()
            status, body = server.get(path, timeout=30)
            results[name] = (status, body, time.monotonic() - started)

        busy = threading.Thread(target=get, args=("busy", "/slow?t=3"))
        busy.start()
        assert wait_until(lambda: "GET /slow" in _requests_in_flight(server), timeout=10)
        get("queued", "/")
        busy.join(30)
        status, body, waited = results["queued"]
        assert (status, body) == (
            504,
            b"Gateway Timeout: the request waited too long for an app process.\n",
        )
        assert 0.9 <= waited < 1.5, waited
        assert results["busy"][0] == 200  # the slow one was not cut short
        assert server.get("/")[0] == 200


def _requests_in_flight(server: Server) -> str:
    return subprocess.run(
        [sys.executable, "-m", "ferryman", "status", "--show=requests"],
        env=server.env, capture_output=True, text=True, timeout=30, check=False,
    ).stdout  # fmt: skip


def test_a_process_above_the_memory_limit_is_replaced_without_failing_a_request() -> None:
    with serving(
        APPS / "wsgi_stub", "--min-instances", "2", "--max-pool-size", "2",
        "--memory-limit", "100",
    ) as server:  # fmt: skip
        server.wait_for_ready()
        status, body = server.get("/alloc?mb=200")
        assert status == 200
        leaky = int(body)
        load = Load(server, clients=4, seconds=30)
        try:
            server.wait_for_log(
                rf"App {leaky} uses \d+ MB \(with its children\), above the memory limit of "
                r"100 MB: replacing it",
                timeout=10,
            )
            server.wait_for_log(rf"App {leaky} stopped", timeout=15)
        finally:
            results = load.finish()
        assert results and all(status == 200 for status, _, _, _ in results)
        assert leaky not in {int(server.get("/pid")[1]) for _ in range(6)}
        assert _retired(server) == {"memory_limit": 1}


@pytest.mark.parametrize(
    ("app", "path", "args"),
    [
        (APPS / "wsgi_stub", "/slow?t=1", ("--thread-count", "2")),
        (APPS / "node_http", "/sleep?ms=1000", ()),
        (APPS / "asgi_fastapi", "/sleep?seconds=1", ()),
        (APPS / "rack_stub", "/slow?t=1", ("--thread-count", "2")),
    ],
    ids=["wsgi", "node", "asgi", "rack"],
)
def test_sigterm_to_every_process_at_once_is_an_orderly_stop(
    app: Path, path: str, args: tuple[str, ...]
) -> None:
    """systemd's KillMode=control-group (and docker stop of a process group) signal every
    process at once — watchdog, core, app processes: the requests in flight finish with
    200, the app processes stop in order, nothing is logged as a crash or a failed start,
    and the server exits 0."""
    if app.name.startswith("rack_"):
        from .test_rack import _need

        _need("rack")
    with serving(app, "--min-instances", "2", "--max-pool-size", "2", *args) as server:
        server.wait_for_ready()
        slow = [Request(server, path) for _ in range(4)]
        assert wait_until(lambda: len(_in_flight(server)) == 4, timeout=10)
        for pid in [server.watchdog_pid, server.pid, *server.app_pids]:
            os.kill(pid, signal.SIGTERM)
        for request in slow:
            request.join(15)
        assert [r.status for r in slow] == [200] * 4, [r.body for r in slow]
        assert server.proc.wait(30) == 0
        log = server.log_text()
        for bad in ("exited unexpectedly", "Could not start", "Traceback", "Starting a process"):
            assert bad not in log.split("Received SIGTERM")[-1], log
        assert server.children() == []


@pytest.mark.parametrize("app", ["wsgi_stub", "asgi_fastapi", "node_http", "rack_stub"])
def test_a_sigterm_the_moment_a_process_is_ready_is_an_orderly_stop(app: str) -> None:
    """Regression: the Node.js loader installed its SIGTERM handler only after it said
    "ready"; a SIGTERM sent as soon as the core heard it (systemd's control-group kill
    right after a spawn) killed the process: "exited unexpectedly (signal 15)" and a bogus
    "crashes right after starting" error with its error ID. And a process that stopped in
    order so young (having served nothing) counted as a failed start: the back-off left
    the app without a process, and requests got 503 for a second."""
    if app.startswith("rack_"):
        from .test_rack import _need

        _need("rack")
    with serving(APPS / app, "--min-instances", "1") as server:
        (pid,) = server.app_pids
        os.kill(pid, signal.SIGTERM)
        server.wait_for_log(rf"App {pid} stopped by itself \(exit code 0\)", timeout=10)
        assert server.get("/pid")[0] == 200  # replaced at once: no back-off
        log = server.log_text()
        assert "exited unexpectedly" not in log and "Could not start" not in log, log


def test_under_a_control_group_kill_requests_still_queued_are_answered_at_once() -> None:
    """The same kill with requests waiting in the core's queue (two single-threaded
    processes, four requests): the two in the app processes finish with 200; the two
    queued ones, whose processes stop taking requests, are told 503 at once, not held
    until the graceful timeout (regression: one waited for nothing, the stop took the
    whole graceful timeout and the client got no response)."""
    with serving(
        APPS / "wsgi_stub", "--min-instances", "2", "--max-pool-size", "2",
        "--graceful-timeout", "20",
    ) as server:  # fmt: skip
        server.wait_for_ready()
        slow = [Request(server, "/slow?t=1") for _ in range(4)]

        def states() -> list[str]:
            lines = _requests_in_flight(server).splitlines()
            return sorted(line.split()[4] for line in lines if line.startswith("GET /slow"))

        assert wait_until(lambda: states() == ["forwarding"] * 2 + ["queued"] * 2, timeout=10)
        started = time.monotonic()
        for pid in [server.watchdog_pid, server.pid, *server.app_pids]:
            os.kill(pid, signal.SIGTERM)
        for request in slow:
            request.join(25)
        assert (
            sorted((r.status, r.body) for r in slow if r.status != 200)
            == [(503, b"Service Unavailable: the server is shutting down.\n")] * 2
        )
        assert [r.status for r in slow].count(200) == 2
        assert server.proc.wait(25) == 0
        assert time.monotonic() - started < 5
        after = server.log_text().split("Received SIGTERM")[-1]
        for bad in ("exited unexpectedly", "Could not start", "Traceback", "Starting a process"):
            assert bad not in after, server.log_text()
        assert server.children() == []


def _in_flight(server: Server) -> list[str]:
    out = _requests_in_flight(server)
    return [line for line in out.splitlines() if " forwarding " in line]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_daemonize_returns_at_once_and_ferryman_stop_ends_it(tmp_path: Path) -> None:
    """--daemonize --pid-file: the shell gets its prompt back with the server running; a
    second start with the same pid file is refused; `ferryman stop --pid-file` stops it
    (exit 0), removes the file, and leaves no process."""
    pid_file = tmp_path / "ferryman.pid"
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [
        sys.executable, "-m", "ferryman", "start", str(APPS / "wsgi_stub"), "--port", str(port),
        "--daemonize", "--pid-file", str(pid_file), "--log-file", str(tmp_path / "log"),
    ]  # fmt: skip
    pid = None
    try:
        started = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        assert started.returncode == 0, started.stderr
        assert f"running in the background: pid {pid}, http://127.0.0.1:{port}" in started.stdout
        assert pid is not None
        # Detached: a session of its own, no controlling terminal (tty_nr 0), re-parented.
        assert os.getsid(pid) not in (os.getsid(0), pid)  # the second fork: no session leader
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert stat[stat.rfind(")") + 2 :].split()[4] == "0"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/pid")
        response = conn.getresponse()
        app_pid = int(response.read())
        conn.close()
        assert response.status == 200
        (core,) = process_children(pid)
        everything = [pid, core, *process_children(core)]
        assert app_pid in everything
        again = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert again.returncode == 1 and f"Ferryman {pid} is running with it" in again.stderr
        stopped = subprocess.run(
            [sys.executable, "-m", "ferryman", "stop", "--pid-file", str(pid_file)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        assert f"Ferryman {pid} stopped" in stopped.stdout
        assert not pid_file.exists()
        assert wait_until(lambda: not any(_alive(p) for p in everything), timeout=10)
    finally:
        if pid is None and pid_file.exists():
            pid = int(pid_file.read_text())
        if pid is not None and _alive(pid):
            # By its pid, never by name: the daemon leads its own process group, which
            # holds its core too (app processes exit once the core is gone).
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return not stat[stat.rfind(b")") + 2 :].startswith(b"Z")


@pytest.mark.parametrize("how", ["port", "app_dir"])
def test_ferryman_stop_finds_the_server_by_its_port_or_its_app(how: str) -> None:
    with serving(APPS / "wsgi_stub", "--min-instances", "2", wait_ready=2) as server:
        everything = [server.watchdog_pid, server.pid, *server.children()]
        which = ["--port", str(server.port)] if how == "port" else [str(APPS / "wsgi_stub")]
        stopped = ferryman(server, "stop", *which)
        assert f"Ferryman {server.watchdog_pid} stopped" in stopped.stdout
        assert server.proc.wait(10) == 0
        assert not any(alive(pid) for pid in everything)


def test_ferryman_stop_force_ends_a_hung_server_and_everything_it_started(
    tmp_path: Path,
) -> None:
    """A core that hangs (SIGSTOP) never finishes its stop: `ferryman stop` says so (exit
    1); with --force, once the server's graceful timeout and the margin are over, SIGKILL
    ends the watchdog, the core and every app process, and the pid file goes too (the
    killed watchdog could not remove it)."""
    from ferryman.core import STOP_MARGIN

    pid_file = tmp_path / "f.pid"
    with serving(
        APPS / "wsgi_stub", "--min-instances", "2", "--graceful-timeout", "1",
        "--pid-file", str(pid_file), wait_ready=2,
    ) as server:  # fmt: skip
        assert wait_until(pid_file.exists, timeout=5)
        everything = [server.watchdog_pid, server.pid, *server.children()]
        os.kill(server.pid, signal.SIGSTOP)
        try:
            hung = ferryman(
                server, "stop", "--pid-file", str(pid_file), "--timeout", "0.5", check=False
            )
            assert hung.returncode == 1
            assert f"Ferryman {server.watchdog_pid} is still running after 0.5 s" in hung.stderr
            started = time.monotonic()
            forced = ferryman(server, "stop", "--pid-file", str(pid_file), "--force")
            took = time.monotonic() - started
            assert f"Ferryman {server.watchdog_pid} stopped" in forced.stdout
            # It waited the server's own stop time (not the default 35 s), then killed.
            assert 1 + STOP_MARGIN <= took < 1 + STOP_MARGIN + 5, took
            assert not any(alive(pid) for pid in everything)
            assert not pid_file.exists()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)


def test_daemonize_without_a_log_file_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(APPS / "wsgi_stub"), "--daemonize"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ferryman: invalid value true for daemonize (from --daemonize): it needs log_file "
        "(a daemon has no terminal to log to)"
    ]


@pytest.mark.parametrize(
    ("app", "path", "dump"),
    [
        (APPS / "wsgi_stub", "/hang?t=5", r"line \d+ in stuck_in_a_slow_query"),
        (APPS / "node_http", "/sleep?ms=5000", r"request in flight: GET /sleep\?ms=5000"),
        (APPS / "asgi_fastapi", "/sleep?seconds=5", r'main\.py", line \d+, in sleep'),
        (APPS / "rack_stub", "/slow?t=5", r"config\.ru:\d+:in `sleep'"),
    ],
    ids=["wsgi", "node", "asgi", "rack"],
)
def test_a_request_running_longer_than_max_request_time_gets_504_and_a_new_process(
    app: Path, path: str, dump: str
) -> None:
    if app.name.startswith("rack_"):
        from .test_rack import _need

        _need("rack")
    with serving(
        app, "--min-instances", "2", "--max-pool-size", "2", "--max-request-time", "1",
    ) as server:  # fmt: skip
        server.wait_for_ready()
        before = set(server.app_pids)
        started = time.monotonic()
        status, body = server.get(path, timeout=30)
        took = time.monotonic() - started
        assert (status, body) == (
            504,
            b"Gateway Timeout: the app took too long to answer (max_request_time).\n",
        )
        assert 0.9 <= took < 1.5, took
        line = server.wait_for_log(
            rf"App (\d+) worked on GET {re.escape(path)} for 1s, longer than max_request_time: "
            r"answered 504; killing it and starting another; first it logs ",
            timeout=5,
        )
        hung = int(line.group(1))
        assert hung in before
        server.wait_for_log(dump, timeout=5)  # where it hung, before it was killed
        server.wait_for_log(rf"App {hung} stopped", timeout=10)
        assert wait_until(
            lambda: len(server.app_pids - before) == 1 and len(server.children()) == 2,
            timeout=15,
        )
        assert hung not in server.children()
        # The others served on all along; a fast request is never cut short.
        assert server.get("/pid")[0] == 200
        log = server.log_text()
        assert "exited unexpectedly" not in log and "Could not start" not in log, log
        assert _retired(server) == {"max_request_time": 1}


@pytest.mark.parametrize(
    ("app", "path", "dump"),
    [
        (APPS / "wsgi_stub", "/hang?t=5", r"line \d+ in stuck_in_a_slow_query"),
        (APPS / "asgi_fastapi", "/sleep?seconds=5", r'main\.py", line \d+, in sleep'),
    ],
    ids=["wsgi", "asgi"],
)
def test_signals_ignored_by_whoever_started_the_server_do_not_reach_the_app(
    app: Path, path: str, dump: str
) -> None:
    """Started as a shell's background job (SIGINT and SIGQUIT ignored, inherited by every
    process): the loaders still dump stacks on SIGQUIT before a hung process is killed.
    Regression: seen when CI was started in the background; the dump was missing."""
    with serving(
        app, "--max-request-time", "1", ignoring=(signal.SIGINT, signal.SIGQUIT)
    ) as server:
        assert server.get(path, timeout=30)[0] == 504
        server.wait_for_log(dump, timeout=5)
