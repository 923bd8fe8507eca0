"""The operator commands: ``ferryman status``, ``restart-app``, ``detach-process`` and
``memory-stats``, as clients of a running server's admin API (``admin.py``).

Each finds the server through the instance registry (``instance.py``), reads the
password file it needs from the instance directory (the files are the server
user's, mode 0600), and talks HTTP/1.1 over the instance's Unix socket. The text
views keep the shape and the words of Passenger's ``passenger-status`` and
``passenger-memory-stats``, so that their users feel at home.
"""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from .instance import ADMIN_USER, READ_ONLY_USER, Instance, NoInstance, pick_instance

#: Every wait on the admin API is bounded.
TIMEOUT = 10.0
WATCH_INTERVAL = 1.0
MB = 1024 * 1024


class CommandError(Exception):
    """Ends a command with its message on stderr and exit code 1."""


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    """Requests to one instance's admin API, as the read-only or the admin account."""

    def __init__(self, instance: Instance, user: str) -> None:
        self.instance = instance
        password = instance.password(user)
        if password is None:
            raise CommandError(
                f"cannot read the {user} password of instance {instance.name} "
                f"({instance.path}); run this as the user the server runs as"
            )
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Connection": "close"}

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = UnixHTTPConnection(self.instance.admin_socket)
        try:
            conn.request(method, path, headers=self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError as exc:
            raise CommandError(
                f"cannot reach the admin API of instance {self.instance.name} "
                f"({self.instance.admin_socket}): {exc}"
            ) from None
        finally:
            conn.close()

    def json(self, method: str, path: str) -> dict[str, Any]:
        status, body = self.request(method, path)
        try:
            data = json.loads(body)
        except ValueError:
            raise CommandError(f"the admin API answered {status} and no JSON") from None
        if status != 200:
            raise CommandError(str(data.get("error", data)) if isinstance(data, dict) else body)
        if not isinstance(data, dict):
            raise CommandError("the admin API answered JSON that is not an object")
        return data


# -- text views --------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """7s, 3m 12s, 2h 5m, 3d 4h: as passenger-status shows uptimes."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def memory(size: int | None) -> str:
    return "?" if size is None else f"{round(size / MB)}M"


def _process_lines(process: dict[str, Any]) -> list[str]:
    cpu = process.get("cpu_percent")
    lines = [
        f"  * PID: {process['pid']:<7} Sessions: {process['sessions']:<7} "
        f"Processed: {process['processed']:<7} Uptime: {duration(process['uptime'])}",
        f"    CPU: {'?' if cpu is None else f'{cpu:.0f}%':<7} "
        f"Memory  : {memory(process.get('rss_bytes')):<7} "
        f"Last used: {duration(process['last_used_ago'])} ago",
    ]
    if process.get("state") == "retiring":
        why = process.get("retire_reason") or "retired"
        lines.append(f"    Shutting down ({why}): finishing its {process['sessions']} request(s)")
    return lines


def _state_lines(app: dict[str, Any]) -> list[str]:
    lines = []
    if app.get("shutting_down"):
        lines.append("  Shutting down")
    if app.get("rolling_restart_left"):
        lines.append(
            f"  Rolling restart: {app['rolling_restart_left']} old process(es) still to replace"
        )
    elif app.get("restarting"):
        lines.append(f"  Restarting: {len(app.get('retiring', []))} old process(es) finishing")
    failed = app.get("restart_failed")
    if failed:
        lines.append(
            f"  Restart failed: {failed.get('summary')} (error ID {failed.get('error_id')}); "
            "the old processes keep serving"
        )
    if app.get("spawning"):
        lines.append(f"  Spawning a new process ({app.get('spawn_reason') or 'asked for'})")
    error = app.get("last_error")
    if error and not failed:
        kind = "Restart failed" if app.get("restarts") else "Could not start a process"
        retry = app.get("backoff_left") or 0
        again = f"; next try in {duration(retry)}" if retry else ""
        lines.append(
            f"  {kind}: {error.get('summary')} (error ID {error.get('error_id')}, "
            f"{error.get('category')}){again}"
        )
    return lines


def _balancer_line(processes: list[dict[str, Any]]) -> str:
    """Where the next request goes, and why: the ready process with the lowest busyness
    (sessions for its capacity) that has room; ties go to the oldest."""
    open_ = [p for p in processes if not (p["limit"] and p["sessions"] >= p["limit"])]
    if not processes:
        return ""
    if not open_:
        return "  Balancer: every process is totally busy; the next request waits in the queue"
    best = min(open_, key=lambda p: p["busyness"])  # the list is in spawn order
    load = f"{best['sessions']}/{best['limit']}" if best["limit"] else f"{best['sessions']}"
    return f"  Balancer: the next request goes to PID {best['pid']} (least busy: {load} sessions)"


def render_pool(state: dict[str, Any]) -> str:
    date = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(state.get("time", time.time())))
    out = [
        f"Version : {state['version']} ({state.get('build', '?')} build)",
        f"Instance: {state['instance']} (pid {state['pid']})",
        f"Date    : {date}",
        "----------- General information -----------",
        f"Max pool size : {state['max_pool_size']}",
        f"App groups    : {len(state['apps'])}",
        f"Processes     : {state['processes']}",
        f"Requests in top-level queue : {state['requests_in_queue']}",
        "",
        "----------- Application groups -----------",
    ]
    for app in state["apps"]:
        out += [
            f"{app['app_root']} ({app['environment']}):",
            f"  App root: {app['app_root']}",
            f"  Mounted at: {app.get('mount', '/')}  (group {app['name']})",
            f"  Requests in queue: {app['queue']['length']}",
        ]
        out += _state_lines(app)
        balancer = _balancer_line(app["processes"])
        if balancer:
            out.append(balancer)
        for process in [*app["processes"], *app.get("retiring", [])]:
            out += _process_lines(process)
        out.append("")
    return "\n".join(out)


def render_requests(data: dict[str, Any]) -> str:
    out = ["----------- Requests in flight -----------"]
    requests = data["requests"]
    if not requests:
        out.append("(none)")
    for r in requests:
        pid = r["pid"] if r["pid"] is not None else "-"
        out.append(
            f"{r['method']} {r['path']}  age {r['age']:.1f}s  {r['state']}  PID: {pid}  "
            f"client {r['client']}"
        )
    return "\n".join(out) + "\n"


# -- commands ------------------------------------------------------------------------------


def _instance(selector: str | None, port: int | None = None) -> Instance:
    try:
        return pick_instance(selector, port=port)
    except NoInstance as exc:
        raise CommandError(str(exc)) from None


def _view(client: AdminClient, show: str) -> str:
    if show == "json":
        return json.dumps(client.json("GET", "/pool.json"), indent=2) + "\n"
    if show == "requests":
        return render_requests(client.json("GET", "/requests.json"))
    return render_pool(client.json("GET", "/pool.json"))


def status(
    selector: str | None,
    show: str,
    watch: bool,
    out: IO[str] = sys.stdout,
    port: int | None = None,
) -> int:
    client = AdminClient(_instance(selector, port), READ_ONLY_USER)
    if not watch:
        out.write(_view(client, show))
        return 0
    return _watch(client, show, out)


def _watch(client: AdminClient, show: str, out: IO[str]) -> int:
    """A view refreshed every second until Ctrl-C (or SIGTERM): in place on a terminal when
    ``rich`` is installed (the ``ferryman[status]`` extra), else one view after another."""
    # Ctrl-C and SIGTERM end it, even when started with them ignored (in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if out.isatty():
            try:
                from rich.console import Console  # noqa: PLC0415 - optional
                from rich.live import Live  # noqa: PLC0415
                from rich.text import Text  # noqa: PLC0415
            except ImportError:
                pass
            else:
                console = Console(file=out)
                with Live(Text(_view(client, show)), console=console, auto_refresh=False) as live:
                    while True:
                        time.sleep(WATCH_INTERVAL)
                        live.update(Text(_view(client, show)), refresh=True)
        while True:
            out.write(_view(client, show) + "\n")
            out.flush()
            time.sleep(WATCH_INTERVAL)
    except KeyboardInterrupt:
        return 0


def restart_app(selector: str | None, mode: str, app: str | None, port: int | None = None) -> int:
    client = AdminClient(_instance(selector, port), ADMIN_USER)
    query = f"/restart?mode={mode}" + (f"&app={quote(app, safe='')}" if app else "")
    result = client.json("POST", query)
    old = ", ".join(str(pid) for pid in result.get("retiring", [])) or "none"
    if result["mode"] == "rolling":
        print(
            f"Restarting {result['restarting']} (rolling): processes {old} are replaced one "
            "batch at a time, each once its replacement is ready"
        )
    else:
        print(
            f"Restarting {result['restarting']} (blocking): processes {old} finish their "
            "requests; new requests wait for the new processes"
        )
    return 0


def detach_process(selector: str | None, pid: int, port: int | None = None) -> int:
    client = AdminClient(_instance(selector, port), ADMIN_USER)
    result = client.json("POST", f"/detach?pid={pid}")
    print(
        f"Detached process {pid} of {result['app']}: it stops after its "
        f"{result['sessions']} request(s) in flight"
    )
    return 0


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """Private, shared, RSS and PSS bytes of ``pid`` (from /proc/PID/smaps_rollup)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[name.strip()] = int(parts[0])
    return {
        "private": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024,
        "shared": (kb.get("Shared_Clean", 0) + kb.get("Shared_Dirty", 0)) * 1024,
        "rss": kb.get("Rss", 0) * 1024,
        "pss": kb.get("Pss", 0) * 1024,
    }


def memory_stats(selector: str | None, out: IO[str] = sys.stdout, port: int | None = None) -> int:
    instance = _instance(selector, port)
    state = AdminClient(instance, READ_ONLY_USER).json("GET", "/pool.json")
    header = f"{'PID':<8} {'Private':>10} {'Shared':>10} {'RSS':>10} {'PSS':>10}  Name"

    def row(pid: int, name: str) -> tuple[str, dict[str, int] | None]:
        usage = smaps_rollup(pid)
        if usage is None:
            return f"{pid:<8} {'?':>10} {'?':>10} {'?':>10} {'?':>10}  {name}", None
        cells = " ".join(f"{usage[k] / MB:>8.1f} M" for k in ("private", "shared", "rss", "pss"))
        return f"{pid:<8} {cells}  {name}", usage

    lines = ["----------- Ferryman -----------", header]
    watchdog = instance.properties.get("watchdog_pid")
    if isinstance(watchdog, int):
        lines.append(row(watchdog, "Ferryman watchdog")[0])
    line, _ = row(instance.pid, f"Ferryman core ({instance.name})")
    lines.append(line)
    for app in state["apps"]:
        lines += ["", f"----------- App processes: {app['app_root']} -----------", header]
        total_private = total_pss = 0
        for process in [*app["processes"], *app.get("retiring", [])]:
            line, usage = row(process["pid"], f"{app['app_type']} app process")
            lines.append(line)
            if usage is not None:
                total_private += usage["private"]
                total_pss += usage["pss"]
        count = len(app["processes"]) + len(app.get("retiring", []))
        lines.append(
            f"### Processes: {count}; total private memory: {total_private / MB:.1f} MB, "
            f"total PSS: {total_pss / MB:.1f} MB"
        )
    out.write("\n".join(lines) + "\n")
    return 0
