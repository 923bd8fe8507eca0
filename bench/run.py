#!/usr/bin/env python3
"""Ferryman's benchmark: Ferryman and its peers side by side, in one run, one at a time.

    python bench/run.py                 # every scenario (about 15 minutes)
    python bench/run.py --quick         # hello, WSGI, Ferryman vs uWSGI (under 2 minutes)
    python bench/run.py --scenario mixed --scenario hello-wsgi
    python bench/run.py --write-docs    # also rewrite docs/benchmarks.md

Each server is started on 127.0.0.1, warmed up, driven with wrk (``--latency``,
at most 10 s per invocation, each measurement repeated and the median kept),
measured (requests/s, latency, errors, CPU time of all its processes, RSS), and
stopped by its PID before the next one starts. Results go to
bench/results/<time>.json and a Markdown table with Ferryman/peer ratios.

Ferryman runs twice: ``ferryman`` is the compiled build (mypyc; built from this
checkout into bench/.venv-compiled, again whenever the sources change) and
``ferryman-pure`` the same sources as plain Python. Ratios are the compiled
build's.

Peers: Phusion Passenger (Debian's ``passenger``, builtin engine), gunicorn
(sync and gthread), uWSGI (``pyuwsgi`` from PyPI), granian (WSGI interface,
the fastest Python server a user would pick instead), and the app with no app
server in front (uWSGI's workers speaking HTTP themselves; Node.js's own
``http`` under ``cluster``). Missing Python peers are installed into
bench/.venv; Passenger and wrk come from Debian (``apt-get install passenger
wrk``); a missing peer is reported and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferryman import __version__ as ferryman_version

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WSGI_APP = BENCH / "apps" / "wsgi"
NODE_APP = BENCH / "apps" / "node"
REPORT_LUA = BENCH / "report.lua"
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_WRK_SECONDS = 10


# -- processes ----------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, CPU seconds, RSS bytes) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    ppid = int(fields[1])
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = int(fields[21]) * PAGE
    return ppid, cpu, rss


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = stat[0]
    tree = [root]
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        tree.extend(sorted(children))
        frontier = children
    return tree


@dataclass
class Server:
    """How to run one server: its argv for an app, and which of its processes are 'app'."""

    name: str
    kind: str  # "wsgi" or "node"
    role: str  # "ferryman", "peer" or "floor"
    argv: Callable[[Setup], list[str]]
    #: True for processes that run the app (the rest is the server's own machinery),
    #: given (pid, command line, the server's first pid).
    is_app: Callable[[int, str, int], bool]
    env: Callable[[Setup], dict[str, str]] = field(default=lambda s: {})
    #: Processes that leave the tree (daemons) but belong to the server, by command line.
    adopt: Callable[[str], bool] | None = None
    threads: bool = True  # can run several requests per process
    spawns_on_demand: bool = False
    cwd: Path | None = None


@dataclass
class Setup:
    port: int
    procs: int
    threads: int
    app: Path
    python: str
    min_procs: int | None = None

    @property
    def minimum(self) -> int:
        return self.procs if self.min_procs is None else self.min_procs


class Running:
    """A started server: its process group, CPU and memory readings, and its stop."""

    def __init__(self, server: Server, setup: Setup, log: Path) -> None:
        self.server = server
        self.setup = setup
        env = dict(os.environ)
        env.update(server.env(setup))
        self.existing = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        self.log = log.open("wb")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(
            server.argv(setup),
            cwd=server.cwd or setup.app,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.setup.port}{path}"

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds from start until the first 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url(), timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started_at
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.server.name} did not answer within {timeout} s")

    def wait_listening(self, timeout: float = 90) -> float:
        """Seconds from start until the port accepts connections (no request sent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.setup.port), timeout=1):
                    return time.monotonic() - self.started_at
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.server.name} did not listen within {timeout} s")

    def pids(self) -> list[int]:
        found = process_tree(self.pid)
        adopt = self.server.adopt
        if adopt is not None:
            for entry in os.listdir("/proc"):
                pid = int(entry) if entry.isdigit() else 0
                if pid and pid not in self.existing and pid not in found and adopt(cmdline(pid)):
                    found += [p for p in process_tree(pid) if p not in found]
        return [pid for pid in found if proc_stat(pid) is not None]

    def app_pids(self) -> list[int]:
        return [pid for pid in self.pids() if self.server.is_app(pid, cmdline(pid), self.pid)]

    def cpu(self) -> dict[int, float]:
        readings = {}
        for pid in self.pids():
            stat = proc_stat(pid)
            if stat is not None:
                readings[pid] = stat[1]
        return readings

    def rss(self) -> tuple[int, list[int]]:
        """(RSS of the server's own processes, RSS of each app process), in bytes."""
        own = 0
        apps = []
        for pid in self.pids():
            stat = proc_stat(pid)
            if stat is None:
                continue
            if self.server.is_app(pid, cmdline(pid), self.pid):
                apps.append(stat[2])
            else:
                own += stat[2]
        return own, apps

    def settle(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` app processes exist."""
        deadline = time.monotonic() + timeout
        while len(self.app_pids()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.server.name}: {len(self.app_pids())} of {count} app processes"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to its process group (it is the group leader), SIGKILL if it lingers."""
        pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()
        for pid in pids:  # daemons that left the group (Passenger's agents)
            if proc_stat(pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()


# -- load ------------------------------------------------------------------------------------


@dataclass
class Measure:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_req: float
    front_cpu_us_per_req: float


def wrk(url: str, connections: int, seconds: float, body_bytes: int = 0) -> dict[str, Any]:
    seconds = min(seconds, MAX_WRK_SECONDS)
    env = dict(os.environ, WRK_BODY_BYTES=str(body_bytes))
    result = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--latency",
         "--timeout", "10s", "-s", str(REPORT_LUA), url],
        capture_output=True, text=True, env=env, timeout=seconds + 30, check=True,
    )  # fmt: skip
    match = re.search(r"^WRK_JSON (.*)$", result.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk gave no summary:\n{result.stdout}\n{result.stderr}")
    data: dict[str, Any] = json.loads(match.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    data["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return data


def measure(
    running: Running, path: str, connections: int, seconds: float, body_bytes: int = 0
) -> Measure:
    before = running.cpu()
    data = wrk(running.url(path), connections, seconds, body_bytes)
    after = running.cpu()
    app = set(running.app_pids())
    total = front = 0.0
    for pid, cpu in after.items():
        delta = cpu - before.get(pid, 0.0)
        total += delta
        if pid not in app:
            front += delta
    requests = max(data["requests"], 1)
    errors = (
        data["connect_errors"] + data["read_errors"] + data["write_errors"]
        + data["timeouts"] + data["non2xx"]
    )  # fmt: skip
    return Measure(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        requests=data["requests"],
        cpu_us_per_req=total * 1e6 / requests,
        front_cpu_us_per_req=front * 1e6 / requests,
    )


def median_measure(runs: list[Measure]) -> dict[str, float]:
    return {
        key: statistics.median(getattr(r, key) for r in runs) for key in Measure.__annotations__
    }


# -- the servers -------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    venv = BENCH / ".venv" / "bin" / name
    if venv.exists():
        return str(venv)
    return shutil.which(name)


PYTHON_PEERS = {"gunicorn": "gunicorn", "uwsgi": "pyuwsgi", "granian": "granian"}
COMPILED_VENV = BENCH / ".venv-compiled"


def base_python() -> str:
    return str(getattr(sys, "_base_executable", sys.executable))


def ensure_python_peers() -> None:
    """gunicorn, uWSGI and granian into bench/.venv (same base Python) where missing."""
    missing = [package for tool, package in PYTHON_PEERS.items() if not find_tool(tool)]
    if not missing:
        return
    venv = BENCH / ".venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *missing], check=True)


def source_stamp() -> str:
    """What the compiled build was made from: the sources, the build hook, the metadata."""
    digest = hashlib.sha256()
    files = sorted((REPO / "src" / "ferryman").rglob("*.py"))
    for path in [*files, REPO / "hatch_build.py", REPO / "pyproject.toml"]:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_compiled_ferryman() -> str | None:
    """This checkout, compiled (FERRYMAN_BUILD=compiled), in bench/.venv-compiled: its
    Python, or None (with the reason printed) when it cannot be built here."""
    python = COMPILED_VENV / "bin" / "python"
    stamp_file = COMPILED_VENV / "ferryman-source.sha256"
    stamp = source_stamp()
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return str(python)
    say("building the compiled Ferryman into bench/.venv-compiled (about a minute)")
    if not python.exists():
        subprocess.run([base_python(), "-m", "venv", str(COMPILED_VENV)], check=True)
    built = subprocess.run(
        [str(COMPILED_VENV / "bin" / "pip"), "install", "--quiet", "--force-reinstall",
         "--no-deps", str(REPO)],
        env={**os.environ, "FERRYMAN_BUILD": "compiled"},
        check=False,
    )  # fmt: skip
    if built.returncode != 0:
        say("the compiled build failed: ferryman rows are missing (ferryman-pure runs)")
        return None
    deps = [str(COMPILED_VENV / "bin" / "pip"), "install", "--quiet", "uvloop", "httptools"]
    subprocess.run(deps, check=True)
    stamp_file.write_text(stamp)
    return str(python)


def ferryman_argv(kind: str, python: str | None) -> Callable[[Setup], list[str]]:
    """Ferryman run by ``python`` (the compiled build's venv; None: this Python)."""

    def argv(s: Setup) -> list[str]:
        args = [
            python or "ferryman-compiled", "-m", "ferryman", "start", str(s.app),
            "--port", str(s.port), "--environment", "production", "--no-access-log",
            "--min-instances", str(s.minimum), "--max-pool-size", str(s.procs),
            "--max-request-queue-size", "0", "--log-level", "warning",
        ]  # fmt: skip
        if kind == "wsgi":
            args += ["--thread-count", str(s.threads), "--python", s.python]
        return args

    return argv


def passenger_argv(kind: str) -> Callable[[Setup], list[str]]:
    def argv(s: Setup) -> list[str]:
        args = [
            "passenger", "start", "--engine=builtin", "--address", "127.0.0.1",
            "--port", str(s.port), "--environment", "production",
            "--min-instances", str(s.minimum), "--max-pool-size", str(s.procs),
            "--max-request-queue-size", "0",
            "--disable-security-update-check", "--disable-anonymous-telemetry",
            "--log-file", "/dev/null", "--pid-file", f"/tmp/passenger-bench-{s.port}.pid",
        ]  # fmt: skip
        if kind == "wsgi":
            args += [
                "--app-type",
                "wsgi",
                "--startup-file",
                "passenger_wsgi.py",
                "--python",
                s.python,
            ]
        else:
            args += ["--app-type", "node", "--startup-file", "app.js"]
        return args

    return argv


def gunicorn_argv(gunicorn: str, worker: list[str]) -> Callable[[Setup], list[str]]:
    def argv(s: Setup) -> list[str]:
        threads = ["--threads", str(s.threads)] if worker else []
        return [
            gunicorn, *worker, *threads, "-w", str(s.procs), "-b", f"127.0.0.1:{s.port}",
            "--chdir", str(s.app), "passenger_wsgi:application",
        ]  # fmt: skip

    return argv


def granian_argv(granian: str) -> Callable[[Setup], list[str]]:
    def argv(s: Setup) -> list[str]:
        return [
            granian, "--interface", "wsgi", "--http", "1", "--no-ws",
            "--host", "127.0.0.1", "--port", str(s.port),
            "--workers", str(s.procs), "--blocking-threads", str(s.threads),
            "--log-level", "warning", "--no-access-log",
            "--working-dir", str(s.app), "passenger_wsgi:application",
        ]  # fmt: skip

    return argv


def passenger_daemon(cmd: str) -> bool:
    """Passenger Standalone daemonizes its watchdog (and with it core and apps)."""
    return cmd.startswith(("Passenger watchdog", "Passenger core")) or "temp-dir-toucher" in cmd


def servers(compiled: str | None, baseline: Path | None = None) -> dict[str, Server]:
    """Every server by name; ``compiled`` is the Python of the compiled Ferryman build,
    ``baseline`` a checkout of another revision, run as pure Python (``--baseline``)."""
    gunicorn = find_tool("gunicorn") or "gunicorn"
    uwsgi = find_tool("uwsgi") or "uwsgi"
    granian = find_tool("granian") or "granian"
    # The pure build: this checkout's sources first on the path, whatever is installed.
    pure = {"PYTHONPATH": str(REPO / "src")}

    def uwsgi_argv(http_flag: list[str]) -> Callable[[Setup], list[str]]:
        def argv(s: Setup) -> list[str]:
            args = [
                uwsgi, *http_flag, "--master", "--processes", str(s.procs),
                "--wsgi-file", str(s.app / "passenger_wsgi.py"), "--disable-logging",
                "--auto-procname", "--die-on-term", "--need-app", "--lazy-apps",
            ]  # fmt: skip
            if s.threads > 1:
                args += ["--threads", str(s.threads)]
            return args

        return argv

    return {
        "ferryman": Server(
            "ferryman",
            "wsgi",
            "ferryman",
            ferryman_argv("wsgi", compiled),
            lambda pid, cmd, root: "wsgi_loader.py" in cmd,
            spawns_on_demand=True,
        ),
        "ferryman-pure": Server(
            "ferryman-pure",
            "wsgi",
            "ferryman",
            ferryman_argv("wsgi", sys.executable),
            lambda pid, cmd, root: "wsgi_loader.py" in cmd,
            env=lambda s: pure,
            spawns_on_demand=True,
        ),
        "ferryman-baseline": Server(
            "ferryman-baseline",
            "wsgi",
            "ferryman",
            ferryman_argv("wsgi", sys.executable),
            lambda pid, cmd, root: "wsgi_loader.py" in cmd,
            env=lambda s: {"PYTHONPATH": str((baseline or REPO) / "src")},
            spawns_on_demand=True,
        ),
        "passenger": Server(
            "passenger",
            "wsgi",
            "peer",
            passenger_argv("wsgi"),
            lambda pid, cmd, root: "wsgi-loader" in cmd,
            adopt=passenger_daemon,
            threads=False,
            spawns_on_demand=True,
        ),
        "gunicorn-sync": Server(
            "gunicorn-sync",
            "wsgi",
            "peer",
            gunicorn_argv(gunicorn, []),
            lambda pid, cmd, root: pid != root,
            threads=False,
        ),
        "gunicorn-gthread": Server(
            "gunicorn-gthread",
            "wsgi",
            "peer",
            gunicorn_argv(gunicorn, ["-k", "gthread"]),
            lambda pid, cmd, root: pid != root,
        ),
        "uwsgi": Server(
            "uwsgi",
            "wsgi",
            "peer",
            lambda s: uwsgi_argv(["--http", f"127.0.0.1:{s.port}", "--http-keepalive"])(s),
            # pyuwsgi keeps one process title: every child (workers and, for --http,
            # the HTTP router) counts as an app process.
            lambda pid, cmd, root: pid != root,
        ),
        "granian": Server(
            "granian",
            "wsgi",
            "peer",
            granian_argv(granian),
            # granian's workers parse HTTP (in Rust) and run the app: they count as app
            # processes; its front is the supervising process alone.
            lambda pid, cmd, root: pid != root,
        ),
        "wsgi-direct": Server(
            "wsgi-direct",
            "wsgi",
            "floor",
            lambda s: uwsgi_argv(["--http11-socket", f"127.0.0.1:{s.port}"])(s),
            # pyuwsgi keeps one process title: every child (workers and, for --http,
            # the HTTP router) counts as an app process.
            lambda pid, cmd, root: pid != root,
        ),
        "ferryman-node": Server(
            "ferryman",
            "node",
            "ferryman",
            ferryman_argv("node", compiled),
            lambda pid, cmd, root: "node_loader.js" in cmd or cmd.startswith("Ferryman Node"),
            spawns_on_demand=True,
        ),
        "passenger-node": Server(
            "passenger",
            "node",
            "peer",
            passenger_argv("node"),
            lambda pid, cmd, root: "NodeApp" in cmd or "node-loader" in cmd,
            adopt=passenger_daemon,
            spawns_on_demand=True,
        ),
        "node-direct": Server(
            "node-direct",
            "node",
            "floor",
            lambda s: ["node", str(NODE_APP / "cluster.js")],
            lambda pid, cmd, root: pid != root,
            env=lambda s: {"PORT": str(s.port), "WORKERS": str(s.procs)},
        ),
    }


# -- scenarios -------------------------------------------------------------------------------------


@dataclass
class Options:
    seconds: float
    repeats: int
    warmup: float
    python: str
    logs: Path
    #: The compiled Ferryman's Python (None: it could not be built).
    compiled: str | None = None
    #: Another revision's checkout, run beside this one (pure Python) as ferryman-baseline.
    baseline: Path | None = None


class Bench:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.servers = servers(options.compiled, options.baseline)
        self.results: dict[str, Any] = {}
        self.missing: dict[str, str] = {}
        # Below the ephemeral range, so that no client socket (e.g. wrk's) holds the port.
        self.port = 21000

    def available(self, name: str) -> bool:
        server = self.servers[name]
        tool = server.argv(Setup(1, 1, 1, WSGI_APP, self.options.python))[0]
        if shutil.which(tool) is None and not Path(tool).exists():
            self.missing[name] = f"{tool} not found"
            return False
        return True

    @contextlib.contextmanager
    def run(
        self, name: str, setup_args: dict[str, Any], warm: bool = True
    ) -> Iterator[tuple[Running, float]]:
        server = self.servers[name]
        self.port += 1
        app = WSGI_APP if server.kind == "wsgi" else NODE_APP
        setup = Setup(port=self.port, app=app, python=self.options.python, **setup_args)
        log = self.options.logs / f"{name}-{self.port}.log"
        running = Running(server, setup, log)
        try:
            if not warm:
                # No request before the measurement: one would already make the pool grow.
                ready = running.wait_listening()
                running.settle(setup.minimum)
                time.sleep(1.0)  # let the first process finish starting
                yield running, ready
                return
            ready = running.wait_ready()
            if self.options.warmup:
                wrk(running.url(), max(2, setup.procs * setup.threads), self.options.warmup)
            running.settle(setup.minimum)
            yield running, ready
        finally:
            running.stop()

    def repeat(self, running: Running, path: str, c: int, body: int = 0) -> dict[str, float]:
        runs = [
            measure(running, path, c, self.options.seconds, body)
            for _ in range(self.options.repeats)
        ]
        return median_measure(runs)

    def throughput(
        self,
        scenario: str,
        names: list[str],
        path: str,
        concurrencies: list[int],
        *,
        setup: dict[str, Any],
        body: int = 0,
    ) -> None:
        table: dict[str, Any] = {}
        for name in names:
            if not self.available(name):
                continue
            say(f"{scenario}: {name}")
            with self.run(name, setup) as (running, _):
                table[name] = {str(c): self.repeat(running, path, c, body) for c in concurrencies}
        self.results[scenario] = {"setup": setup, "path": path, "by_server": table}

    def mixed(self, names: list[str]) -> None:
        """4 single-threaded processes; a few slow requests among many fast ones."""
        setup = {"procs": 4, "threads": 1}
        table: dict[str, Any] = {}
        for name in names:
            if not self.available(name):
                continue
            say(f"mixed: {name}")
            with self.run(name, setup) as (running, _):
                runs = []
                for _ in range(self.options.repeats):
                    slow: dict[str, Any] = {}
                    slow_thread = threading.Thread(
                        target=lambda out=slow, r=running: out.update(
                            wrk(r.url("/slow"), 2, self.options.seconds)
                        )
                    )
                    slow_thread.start()
                    fast = measure(running, "/", 8, self.options.seconds)
                    slow_thread.join()
                    runs.append((fast, slow.get("requests", 0) / self.options.seconds))
                table[name] = median_measure([f for f, _ in runs])
                table[name]["slow_rps"] = statistics.median(s for _, s in runs)
        self.results["mixed"] = {"setup": setup, "path": "/ (8 conns) + /slow (2 conns)",
                                 "by_server": table}  # fmt: skip

    def spawn_and_memory(self, names: list[str]) -> None:
        table: dict[str, Any] = {}
        for name in names:
            if not self.available(name):
                continue
            say(f"spawn/memory: {name}")
            server = self.servers[name]
            row: dict[str, Any] = {}
            with self.run(name, {"procs": 2, "threads": 1}) as (running, ready):
                row["start_to_first_200_s"] = ready
                own, apps = running.rss()
                row["idle_server_rss_mb"] = own / 2**20
                row["idle_app_rss_mb"] = [a / 2**20 for a in apps]
                wrk(running.url(), 16, self.options.seconds)
                own, apps = running.rss()
                row["loaded_server_rss_mb"] = own / 2**20
                row["loaded_app_rss_mb"] = [a / 2**20 for a in apps]
            if server.spawns_on_demand:
                setup = {"procs": 2, "threads": 1, "min_procs": 1}
                with self.run(name, setup, warm=False) as (running, _):
                    row["add_process_under_load_s"] = time_to_second_process(running)
            table[name] = row
        self.results["spawn-memory"] = {"by_server": table, "bare_app_rss_mb": bare_app_rss()}


def time_to_second_process(running: Running, clients: int = 4, limit: float = 10.0) -> float | None:
    """Under load from the start, seconds until a second process has served a request."""
    seen: set[bytes] = set()
    lock = threading.Lock()
    start = time.monotonic()
    found: list[float] = []

    def client() -> None:
        while not found and time.monotonic() - start < limit:
            with urllib.request.urlopen(running.url("/pid-sleep"), timeout=30) as response:
                pid = response.read()
            with lock:
                seen.add(pid)
                if len(seen) >= 2 and not found:
                    found.append(time.monotonic() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return found[0] if found else None


def bare_app_rss() -> float:
    """RSS of the bare interpreter with the app imported: the baseline for loader overhead."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import passenger_wsgi; "
        "print('ready', flush=True); time.sleep(30)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(WSGI_APP)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        proc.stdout.readline()
        stat = proc_stat(proc.pid)
        proc.kill()
    return (stat[2] if stat else 0) / 2**20


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- report ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "not found"
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "unknown"

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gb": f"{os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.0f}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ferryman": ferryman_version,
        "node": version(["node", "--version"]),
        "wrk": version(["wrk", "--version"]),
        "passenger": version(["passenger", "--version"]),
        "gunicorn": version([find_tool("gunicorn") or "gunicorn", "--version"]),
        "uwsgi": version([find_tool("uwsgi") or "uwsgi", "--version"]),
        "granian": version([find_tool("granian") or "granian", "--version"]),
    }


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def markdown(results: dict[str, Any], info: dict[str, str], command: str) -> str:
    lines = [
        "## Results",
        "",
        f"Run on {time.strftime('%Y-%m-%d')} with `{command}`.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        "Medians of repeated wrk runs. *CPU µs/req* is the CPU time of every process of the "
        "server (front and app processes) during the run divided by the requests served; "
        "*front* counts only the server's own processes (for Ferryman: the core). Ratios are "
        "Ferryman ÷ peer: above 1 for req/s means Ferryman is faster, below 1 for CPU means "
        "it spends less.",
        "",
    ]
    for scenario, data in results.items():
        if scenario == "spawn-memory":
            continue
        setup = data.get("setup", {})
        lines += [f"### {scenario}", "", f"Path `{data['path']}`; setup {json.dumps(setup)}.", ""]
        by_server = data["by_server"]
        ours_name = "ferryman-node" if "ferryman-node" in by_server else "ferryman"
        if scenario == "mixed":
            lines += [
                "| server | fast req/s | fast p50 ms | fast p99 ms | slow req/s | errors "
                "| Ferryman/peer fast p99 |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            ours = by_server.get(ours_name)
            for name, row in by_server.items():
                rel = ratio(ours["p99_ms"], row["p99_ms"]) if ours else "n/a"
                lines.append(
                    f"| {name} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                    f"| {row['slow_rps']:.1f} | {row['errors']:.0f} | {rel} |"
                )
            lines.append("")
            continue
        for c in next(iter(by_server.values())):
            lines += [
                f"c = {c}:",
                "",
                "| server | req/s | p50 ms | p99 ms | errors | CPU µs/req | front µs/req "
                "| Ferryman/peer req/s | Ferryman/peer CPU |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            ours = by_server.get(ours_name, {}).get(c)
            for name, rows in by_server.items():
                row = rows[c]
                rel_rps = ratio(ours["rps"], row["rps"]) if ours else "n/a"
                rel_cpu = ratio(ours["cpu_us_per_req"], row["cpu_us_per_req"]) if ours else "n/a"
                lines.append(
                    f"| {name} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                    f"| {row['errors']:.0f} | {row['cpu_us_per_req']:.0f} "
                    f"| {row['front_cpu_us_per_req']:.0f} | {rel_rps} | {rel_cpu} |"
                )
            lines.append("")
    spawn = results.get("spawn-memory")
    if spawn:
        lines += [
            "### spawn and memory",
            "",
            f"Bare interpreter with the app imported: {spawn['bare_app_rss_mb']:.1f} MB RSS.",
            "",
            "| server | start → first 200 s | add a process under load s | server RSS idle MB "
            "| server RSS loaded MB | app process RSS MB (idle → loaded) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, row in spawn["by_server"].items():
            added = row.get("add_process_under_load_s")
            apps = ", ".join(
                f"{a:.1f} → {b:.1f}"
                for a, b in zip(row["idle_app_rss_mb"], row["loaded_app_rss_mb"], strict=False)
            )
            lines.append(
                f"| {name} | {row['start_to_first_200_s']:.2f} "
                f"| {'n/a' if added is None else f'{added:.2f}'} "
                f"| {row['idle_server_rss_mb']:.1f} | {row['loaded_server_rss_mb']:.1f} "
                f"| {apps or 'n/a'} |"
            )
        lines.append("")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------

WSGI_PEERS = [
    "ferryman", "ferryman-pure", "passenger", "gunicorn-sync", "gunicorn-gthread", "uwsgi",
    "granian", "wsgi-direct",
]  # fmt: skip
NODE_PEERS = ["ferryman-node", "passenger-node", "node-direct"]
SCENARIOS = ["hello-wsgi", "hello-node", "io", "mixed", "upload", "spawn-memory"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="hello-wsgi, Ferryman vs uWSGI")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--server", action="append", help="only these servers (by name)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run (max 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run another revision (a checkout, e.g. from 'git worktree add /tmp/base "
        "REV'), as pure Python, named ferryman-baseline: before/after in one run",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    ensure_python_peers()
    compiled = ensure_compiled_ferryman()
    scenarios = args.scenario or (["hello-wsgi"] if args.quick else SCENARIOS)
    seconds = 3.0 if args.quick else min(args.seconds, MAX_WRK_SECONDS)
    RESULTS.mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="ferryman-bench-"))
    bench = Bench(Options(seconds, max(3, args.repeats), 1.0 if args.quick else 2.0,
                          sys.executable, logs, compiled, args.baseline))  # fmt: skip

    def pick(names: list[str]) -> list[str]:
        if args.baseline is not None and "ferryman-pure" in names:
            at = names.index("ferryman-pure") + 1
            names = [*names[:at], "ferryman-baseline", *names[at:]]
        if args.quick:
            keep = ("ferryman", "ferryman-pure", "ferryman-baseline", "uwsgi")
            names = [n for n in names if n in keep]
        if args.server:
            names = [n for n in names if n in args.server or n.split("-")[0] in args.server]
        return names

    started = time.monotonic()
    one_thread = {"procs": 2, "threads": 1}
    if "hello-wsgi" in scenarios:
        conc = [16, 64] if args.quick else [1, 16, 64]
        bench.throughput("hello-wsgi", pick(WSGI_PEERS), "/", conc, setup=one_thread)
    if "hello-node" in scenarios:
        bench.throughput("hello-node", pick(NODE_PEERS), "/", [1, 16, 64], setup=one_thread)
    if "io" in scenarios:
        setup = {"procs": 2, "threads": 16}
        bench.throughput("io", pick(WSGI_PEERS), "/sleep?ms=20", [64], setup=setup)
    if "mixed" in scenarios:
        bench.mixed(pick([n for n in WSGI_PEERS if n != "wsgi-direct"]))
    if "upload" in scenarios:
        setup = {"procs": 2, "threads": 4}
        bench.throughput("upload", pick(WSGI_PEERS), "/upload", [16], setup=setup, body=2**20)
    if "spawn-memory" in scenarios:
        bench.spawn_and_memory(
            pick(["ferryman", "ferryman-pure", "passenger", "gunicorn-sync", "uwsgi", "granian"])
        )

    info = machine()
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps({"machine": info, "command": command, "missing": bench.missing,
                               "results": bench.results}, indent=2))  # fmt: skip
    table = markdown(bench.results, info, command.strip())
    print()
    print(table)
    if bench.missing:
        print("Skipped: " + "; ".join(f"{k} ({v})" for k, v in bench.missing.items()))
    print(f"\nResults: {out}  (server logs: {logs}; {time.monotonic() - started:.0f} s)")
    if args.write_docs:
        docs = REPO / "docs" / "benchmarks.md"
        text = docs.read_text() if docs.exists() else ""
        head = text.split("## Results")[0] if "## Results" in text else text
        docs.write_text(head + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
