"""The operator surface, as an operator uses it against a real server: ``ferryman status``
(and its JSON, its watch), the admin API and its two accounts, restart and detach,
memory-stats, Prometheus metrics, the instance registry and the health check path."""

from __future__ import annotations

import base64
import http.client
import json
import os
import pty
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import (
    APPS,
    STUB,
    Request,
    Server,
    alive,
    ferryman,
    refused_start,
    serving,
    wait_until,
)

NODE_APP = APPS / "node_http"


#: Runs the rest of its arguments with SIGINT ignored, as a shell runs a background job.
IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def instance_dir(server: Server) -> Path:
    (path,) = server.instance_dirs()
    return path


class Admin:
    """Raw requests to a server's admin socket, with any credentials."""

    def __init__(self, server: Server) -> None:
        self.dir = instance_dir(server)

    def password(self, user: str) -> str:
        return (self.dir / f"{user}.password").read_text().strip()

    def request(
        self, method: str, path: str, auth: tuple[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("localhost", timeout=10)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self.dir / "admin.sock"))
        conn.sock = sock
        headers = {}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def as_user(self, user: str, method: str, path: str) -> tuple[int, bytes]:
        status, _, body = self.request(method, path, (user, self.password(user)))
        return status, body

    def pool(self) -> dict[str, object]:
        status, body = self.as_user("readonly", "GET", "/pool.json")
        assert status == 200, body
        data = json.loads(body)
        assert isinstance(data, dict)
        return data


def process_rows(data: dict[str, object]) -> list[dict[str, object]]:
    apps = data["apps"]
    assert isinstance(apps, list)
    rows = apps[0]["processes"]
    assert isinstance(rows, list)
    return rows


@pytest.fixture
def two() -> Iterator[Server]:
    with serving(STUB, "--min-instances", "2", "--max-pool-size", "2") as server:
        server.wait_for_ready()
        yield server


# -- ferryman status --------------------------------------------------------------------------


def test_status_shows_the_passenger_status_layout_with_the_right_pids(two: Server) -> None:
    """Two processes under load: the documented sections and words, both PIDs, work done,
    and where the balancer sends the next request."""
    admin = Admin(two)
    slow = [Request(two, "/slow?t=1.5") for _ in range(2)]

    def sessions() -> list[int]:
        return [int(p["sessions"]) for p in process_rows(admin.pool())]  # type: ignore[call-overload]

    assert wait_until(lambda: sessions() == [1, 1], timeout=10), sessions()
    out = ferryman(two, "status").stdout
    lines = out.splitlines()
    assert lines[0].startswith("Version : ") and "build)" in lines[0]
    assert re.match(r"Instance: \S+ \(pid \d+\)$", lines[1])
    assert lines[2].startswith("Date    : ")
    for expected in (
        "----------- General information -----------",
        "Max pool size : 2",
        "App groups    : 1",
        "Processes     : 2",
        "----------- Application groups -----------",
        f"  App root: {STUB}",
        "  Balancer: every process is totally busy; the next request waits in the queue",
    ):
        assert expected in lines, out
    pids = {int(m) for m in re.findall(r"\* PID: (\d+) +Sessions: 1 +Processed: \d+", out)}
    assert pids == two.app_pids
    assert re.search(r"^    CPU: \d+% +Memory  : \d+M +Last used: \d+s ago$", out, re.M), out
    for request in slow:
        request.join(10)
    for _ in range(6):
        two.get("/")
    idle = ferryman(two, "status").stdout
    first = process_rows(admin.pool())[0]["pid"]  # listed in spawn order: ties go to it
    assert f"  Balancer: the next request goes to PID {first} (least busy: 0/1 sessions)" in idle
    processed = [int(n) for n in re.findall(r"Processed: (\d+)", idle)]
    assert len(processed) == 2 and all(n > 0 for n in processed), processed


def test_status_json_round_trips_every_field(two: Server) -> None:
    two.get("/")
    out = ferryman(two, "status", "--show=json").stdout
    data = json.loads(out)
    assert json.loads(json.dumps(data)) == data
    assert {"version", "build", "instance", "pid", "max_pool_size", "processes", "apps"} <= set(
        data
    )
    (app,) = data["apps"]
    assert {"app_root", "environment", "queue", "spawning", "restarting", "last_error"} <= set(app)
    for process in app["processes"]:
        assert set(process) == {
            "pid", "state", "sessions", "concurrency", "limit", "busyness", "processed",
            "uptime", "cpu_percent", "rss_bytes", "last_used_ago", "spawn_reason",
            "retire_reason",
        }  # fmt: skip
        assert process["state"] == "ready"
        assert process["spawn_reason"] == "min_instances"
        assert process["rss_bytes"] > 1_000_000
    assert {p["pid"] for p in app["processes"]} == two.app_pids
    # The same document as the admin API's, field for field (time stamps aside).
    direct = Admin(two).pool()
    for key in ("version", "instance", "pid", "max_pool_size", "processes"):
        assert direct[key] == data[key]


def test_status_requests_lists_what_is_in_flight(two: Server) -> None:
    slow = Request(two, "/slow?t=2")
    assert wait_until(lambda: "/slow" in ferryman(two, "status", "--show=requests").stdout, 10)
    out = ferryman(two, "status", "--show=requests").stdout
    match = re.search(
        r"GET /slow\?t=2  age [\d.]+s  forwarding  PID: (\d+)  client 127\.0\.0\.1", out
    )
    assert match, out
    assert int(match.group(1)) in two.app_pids
    slow.join(10)


@pytest.mark.parametrize("ignored", [False, True], ids=["", "started-with-sigint-ignored"])
def test_status_watch_refreshes_and_exits_cleanly_on_sigint(two: Server, ignored: bool) -> None:
    """Without a terminal: one view after another, every second; Ctrl-C ends it with 0,
    also when it was started with SIGINT ignored (a shell's background job)."""
    wrapper = ["-c", IGNORING_SIGINT] if ignored else []
    proc = subprocess.Popen(
        [sys.executable, *wrapper, "-m", "ferryman", "status", "--watch"],
        env=two.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 15
        while seen.count(b"General information") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                seen += os.read(proc.stdout.fileno(), 65536)
        assert seen.count(b"General information") >= 2, seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_status_watch_redraws_in_place_on_a_terminal(two: Server) -> None:
    """On a terminal (a pseudo-terminal here) rich draws the view in place; Ctrl-C ends it."""
    pytest.importorskip("rich")
    leader, follower = pty.openpty()
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferryman", "status", "--watch"],
            env={**two.env, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"},
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        seen = b""
        deadline = time.monotonic() + 15
        while seen.count(b"General information") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:
                    break
        assert seen.count(b"General information") >= 2, seen
        assert b"\x1b[" in seen  # drawn with the terminal's control sequences, in place
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if follower >= 0:
            os.close(follower)
        os.close(leader)


def test_node_sessions_are_even_across_four_processes_under_64_slow_requests() -> None:
    """The listing that made Passenger fix its Node.js balancing, done right: 64 requests of
    1 s on 4 processes are 16 per process while they run."""
    with serving(
        NODE_APP, "--min-instances", "4", "--max-pool-size", "4", "--max-request-queue-size", "0"
    ) as server:
        for _ in range(3):
            server.wait_for_ready()
        slow = [Request(server, "/sleep?ms=2500") for _ in range(64)]
        admin = Admin(server)

        def in_flight() -> list[int]:
            return [int(p["sessions"]) for p in process_rows(admin.pool())]  # type: ignore[call-overload]

        assert wait_until(lambda: sum(in_flight()) == 64, timeout=10), in_flight()
        data = json.loads(ferryman(server, "status", "--show=json").stdout)
        sessions = [p["sessions"] for p in data["apps"][0]["processes"]]
        assert len(sessions) == 4 and sum(sessions) == 64
        assert max(sessions) - min(sessions) <= 1, sessions
        for request in slow:
            request.join(15)
        assert all(r.status == 200 for r in slow)


# -- the admin API's accounts ---------------------------------------------------------------------


def test_admin_api_credentials_and_the_two_accounts(two: Server) -> None:
    admin = Admin(two)
    path = admin.dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("readonly.password", "admin.password", "admin.sock"):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600, name
    status, headers, _ = admin.request("GET", "/pool.json")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    assert admin.request("GET", "/pool.json", ("readonly", "wrong"))[0] == 401
    assert admin.request("GET", "/pool.json", ("admin", admin.password("readonly")))[0] == 401
    assert admin.request("GET", "/pool.json", ("nobody", ""))[0] == 401
    for path_ in ("/ping", "/version", "/pool.json", "/requests.json", "/metrics"):
        assert admin.as_user("readonly", "GET", path_)[0] == 200, path_
        assert admin.as_user("admin", "GET", path_)[0] == 200, path_
    (pid, *_) = sorted(two.app_pids)
    for path_ in ("/restart", f"/detach?pid={pid}", "/shutdown"):
        assert admin.as_user("readonly", "POST", path_)[0] == 403, path_
    assert admin.as_user("readonly", "GET", "/nowhere")[0] == 404
    assert admin.as_user("readonly", "DELETE", "/pool.json")[0] == 405
    # Nothing changed: both processes still serve.
    assert {int(p["pid"]) for p in process_rows(admin.pool())} == two.app_pids  # type: ignore[call-overload]
    assert admin.as_user("admin", "POST", "/shutdown")[0] == 200
    assert two.proc.wait(30) == 0


def test_the_admin_password_file_sets_the_admin_password(tmp_path: Path) -> None:
    secret = tmp_path / "admin-password"
    secret.write_text("correct horse battery staple\n")
    with serving(STUB, "--admin-password-file", str(secret)) as server:
        admin = Admin(server)
        assert admin.password("admin") == "correct horse battery staple"
        auth = ("admin", "correct horse battery staple")
        assert admin.request("GET", "/version", auth)[0] == 200


@pytest.mark.parametrize(
    "content",
    [b"", b"short\n", b"\n\ncorrect horse\n", b"\xff\xfe not utf-8 \n", b"x" * 5000],
    ids=["empty", "short", "blank-first-line", "not-utf-8", "oversized"],
)
def test_an_admin_password_file_that_is_no_password_is_one_line_and_exit_2(
    tmp_path: Path, content: bytes
) -> None:
    secret = tmp_path / "admin-password"
    secret.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(STUB), "--port", "0",
         "--admin-password-file", str(secret)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "for admin_password_file" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--admin-address", "127.0.0.1"], "admin_address"),
        (["--admin-address", "999.1.1.1:3001"], "admin_address"),
        (["--health-check-path", "healthz"], "health_check_path"),
        (["--admin-password-file", "/nonexistent/password"], "admin_password_file"),
    ],
)
def test_bad_admin_settings_are_one_line_and_exit_2(args: list[str], setting: str) -> None:
    assert setting in refused_start(*args)


def test_the_admin_api_on_tcp_asks_for_the_same_credentials() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with serving(STUB, "--admin-address", f"127.0.0.1:{port}") as server:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ping")
        response = conn.getresponse()
        assert response.status == 401
        response.read()
        token = base64.b64encode(f"readonly:{Admin(server).password('readonly')}".encode())
        conn.request("GET", "/ping", headers={"Authorization": "Basic " + token.decode()})
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"ok": True})
        conn.close()
        properties = json.loads((instance_dir(server) / "properties.json").read_text())
        assert properties["admin_addresses"] == [
            f"unix:{instance_dir(server) / 'admin.sock'}",
            f"http://127.0.0.1:{port}",
        ]


# -- acting: restart, detach -------------------------------------------------------------------


def test_restart_app_under_load_replaces_every_process_and_drops_nothing(two: Server) -> None:
    old = set(two.app_pids)
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 20  # bounded in time and in count
        for _ in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                results.append(two.get("/pid", timeout=20)[0])
            except OSError:
                results.append(-1)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        assert wait_until(lambda: len(results) > 20, timeout=10)
        out = ferryman(two, "restart-app").stdout
        assert "Restarting" in out
        two.wait_for_ready()
        two.wait_for_ready()
        count = len(results)
        assert wait_until(lambda: len(results) > count + 20, timeout=10)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    new = {int(p["pid"]) for p in process_rows(Admin(two).pool())}  # type: ignore[call-overload]
    assert new and not (new & old), (old, new)
    assert set(results) == {200}, [r for r in results if r != 200][:5]
    assert wait_until(lambda: not any(alive(pid) for pid in old), timeout=10)


def test_restart_app_rolling_or_blocking_on_request(two: Server) -> None:
    """--blocking and --rolling override the server's --rolling-restarts for one restart."""
    old = set(two.app_pids)
    out = ferryman(two, "restart-app", "--blocking").stdout
    assert "(blocking)" in out and "new requests wait for the new processes" in out
    two.wait_for_ready()
    two.wait_for_ready()
    assert wait_until(lambda: not any(alive(pid) for pid in old), timeout=10)
    middle = {int(p["pid"]) for p in process_rows(Admin(two).pool())}  # type: ignore[call-overload]
    out = ferryman(two, "restart-app", "--rolling").stdout
    assert "(rolling)" in out and "each once its replacement is ready" in out
    two.wait_for_ready()
    two.wait_for_ready()
    assert wait_until(lambda: not any(alive(pid) for pid in middle), timeout=10)


def test_detach_process_stops_it_after_its_request_and_replaces_it() -> None:
    with serving(STUB, "--min-instances", "1", "--max-pool-size", "2") as server:
        (pid,) = server.app_pids
        slow = Request(server, "/slow?t=1.5")
        assert wait_until(
            lambda: "/slow" in ferryman(server, "status", "--show=requests").stdout, 10
        )
        out = ferryman(server, "detach-process", str(pid)).stdout
        assert f"Detached process {pid}" in out and "1 request(s)" in out
        new = server.wait_for_ready()
        assert new != pid
        slow.join(10)
        assert (slow.status, slow.body) == (200, str(pid).encode())  # it finished its request
        assert wait_until(lambda: not alive(pid), timeout=10)
        status, body = server.get("/pid")
        assert (status, body) == (200, str(new).encode())
        missing = ferryman(server, "detach-process", str(pid), check=False)
        assert missing.returncode == 1 and f"no process {pid}" in missing.stderr


def test_memory_stats_lists_the_watchdog_the_core_and_every_app_process(two: Server) -> None:
    out = ferryman(two, "memory-stats").stdout
    assert "----------- Ferryman -----------" in out
    assert re.search(rf"^{two.watchdog_pid} +[\d.]+ M .*  Ferryman watchdog$", out, re.M), out
    assert re.search(rf"^{two.pid} +[\d.]+ M +[\d.]+ M .*  Ferryman core", out, re.M), out
    for pid in two.app_pids:
        assert re.search(rf"^{pid} +[\d.]+ M +[\d.]+ M +[\d.]+ M +[\d.]+ M  wsgi", out, re.M), out
    assert "### Processes: 2; total private memory:" in out


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_parse_and_count_every_request(two: Server) -> None:
    sent = 37
    for _ in range(sent):
        assert two.get("/")[0] == 200
    assert two.get("/status?code=404")[0] == 404
    status, body = Admin(two).as_user("readonly", "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    app = "wsgi_stub"
    assert samples[("ferryman_requests_total", (("app", app), ("status", "2xx")))] == sent
    assert samples[("ferryman_requests_total", (("app", app), ("status", "4xx")))] == 1
    assert samples[("ferryman_request_duration_seconds_count", (("app", app),))] == sent + 1
    assert samples[("ferryman_processes", (("app", app), ("state", "ready")))] == 2
    assert samples[("ferryman_spawns_total", (("app", app),))] == 2
    assert samples[("ferryman_queue_length", (("app", app),))] == 0
    for pid in two.app_pids:
        labels = (("app", app), ("pid", str(pid)))
        assert samples[("ferryman_process_resident_memory_bytes", labels)] > 1_000_000
        assert ("ferryman_process_sessions", labels) in samples
    for name in (
        "ferryman_queue_wait_seconds",
        "ferryman_process_retirements",
        "ferryman_spawn_failures",
        "ferryman_restarts",
        "ferryman_process_busyness",
    ):
        assert name in families, name  # fmt: skip


# -- the instance registry ---------------------------------------------------------------------


def test_two_instances_are_listed_and_picked_and_a_stale_one_is_ignored(tmp_path: Path) -> None:
    shared = {"TMPDIR": str(tmp_path)}
    stale = tmp_path / "ferryman.stale123"
    stale.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (stale / "properties.json").write_text(
        json.dumps({"pid": dead.pid, "started_at": time.time() - 60, "addresses": []})
    )
    with serving(STUB, env=shared) as first:
        assert not stale.exists()  # the next start removed it
        stale.mkdir(mode=0o700)  # and one that appears later is ignored
        (stale / "properties.json").write_text(
            json.dumps({"pid": dead.pid, "started_at": time.time() - 60, "addresses": []})
        )
        with serving(STUB, env=shared) as second:
            both = ferryman(first, "status", check=False)
            assert both.returncode == 1
            assert "2 Ferryman instances are running" in both.stderr
            names = {}
            for server in (first, second):
                properties = json.loads(_properties_of(tmp_path, server.pid))
                names[server.pid] = properties["name"]
                assert properties["name"] in both.stderr and str(server.pid) in both.stderr
            assert "stale123" not in both.stderr
            for server in (first, second):
                for selector in (names[server.pid], str(server.pid)):
                    out = ferryman(first, "status", "--instance", selector).stdout
                    assert f"Instance: {names[server.pid]} (pid {server.pid})" in out
            wrong = ferryman(first, "status", "--instance", "nope", check=False)
            assert wrong.returncode == 1 and "no Ferryman instance 'nope'" in wrong.stderr


def _properties_of(directory: Path, pid: int) -> str:
    for path in directory.glob("ferryman.*/properties.json"):
        text = path.read_text()
        if json.loads(text).get("pid") == pid:
            return text
    raise AssertionError(f"no properties.json for pid {pid}")


def test_status_with_no_server_says_where_it_looked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "status"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"no Ferryman instance is running for this user (looked in {tmp_path}" in result.stderr


# -- the health check path --------------------------------------------------------------------


def test_health_check_is_answered_by_the_core_and_follows_readiness() -> None:
    with serving(
        STUB, "--min-instances", "0", "--health-check-path", "/healthz", wait_ready=0
    ) as server:
        status, headers, body = server.request("GET", "/healthz")
        assert (status, body) == (503, b"Unavailable: no ready process\n")
        assert headers["cache-control"] == "no-store"
        assert server.get("/")[0] == 200  # a request starts a process
        status, body = server.get("/healthz?probe=k8s")
        assert (status, body) == (200, b"OK: 1 ready process(es)\n")
        assert server.request("HEAD", "/healthz")[0] == 200
        assert server.request("POST", "/healthz", body=b"x")[0] == 405
        # Not the app's: the stub app would answer its own 404 page for it.
        assert b"stub" not in body
        assert server.get("/healthz/more")[0] == 404  # only the path itself


def test_health_check_is_503_after_a_failed_start_with_no_live_process() -> None:
    with serving(
        APPS / "wsgi_broken", "--health-check-path", "/healthz", "--spawn-backoff", "30",
        wait_ready=0,
    ) as server:  # fmt: skip
        server.wait_for_log("Could not start a process", timeout=15)
        assert server.get("/healthz")[0] == 503
