"""The census: what the pool and its processes look like right now, for the admin API
(``ferryman status``) and the metrics: read when asked, from the pool, the request
counters and ``/proc``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .http.app import App
from .pool import Enablement, Group, Process

_PAGE = os.sysconf("SC_PAGE_SIZE")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class AppView:
    """One app as the admin API shows it: its group, its front-side state, its settings."""

    group: Group
    app: App
    root: Path
    environment: str
    app_type: str
    #: Where it is mounted: [HOSTS]PREFIX ("/" for the app at / of any host).
    mount: str = "/"


def proc_usage(pid: int) -> tuple[float, int, float] | None:
    """(CPU seconds used, resident bytes, seconds since the process started), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        statm = Path(f"/proc/{pid}/statm").read_bytes()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    age = uptime - int(fields[19]) / _CLK_TCK
    return cpu, int(statm.split()[1]) * _PAGE, age


def process_state(process: Process, now: float) -> dict[str, Any]:
    usage = proc_usage(process.pid)
    cpu_percent = None
    rss = None
    if usage is not None:
        cpu, rss, age = usage
        cpu_percent = round(100.0 * cpu / age, 1) if age > 0 else 0.0
    enabled = process.enablement is Enablement.ENABLED
    return {
        "pid": process.pid,
        "state": "ready" if enabled else "retiring",
        "sessions": process.sessions,
        "concurrency": process.concurrency,
        "limit": process.limit,
        "busyness": round(process.busyness(), 4),
        "processed": process.processed,
        "uptime": round(now - process.spawned_at, 3),
        "cpu_percent": cpu_percent,
        "rss_bytes": rss,
        "last_used_ago": round(now - process.last_used, 3),
        "spawn_reason": process.spawn_reason,
        "retire_reason": process.retire_reason or None,
    }


def _error(error: Exception | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "error_id": getattr(error, "error_id", None),
        "category": getattr(error, "category", None),
        "summary": getattr(error, "summary", None) or str(error),
        "report": getattr(error, "report_path", None),
    }


def group_state(view: AppView, now: float) -> dict[str, Any]:
    group = view.group
    oldest = group.oldest_wait_since()
    last_error = _error(group.last_error)
    stats = view.app.stats
    return {
        "name": group.name,
        "app_root": str(view.root),
        "mount": view.mount,
        "environment": view.environment,
        "app_type": view.app_type,
        "queue": {
            "length": group.waiting(),
            "oldest_wait": round(now - oldest, 3) if oldest is not None else 0.0,
        },
        "spawning": group.spawning,
        "spawn_reason": group.spawn_reason if group.spawning else None,
        "restarting": bool(group.outdated) or (bool(group.retiring) and group.restarts > 0),
        "rolling_restart_left": len(group.outdated),
        "restart_failed": _error(group.restart_error),
        "shutting_down": group.shutting_down,
        "backoff_left": round(max(0.0, group.backoff_until - now), 3),
        "failures": group.failures,
        "last_error": last_error,
        "spawns": group.spawns,
        "spawn_failures": group.spawn_failures,
        "restarts": group.restarts,
        "retired": dict(group.retired),
        "requests": {
            "1xx": stats.by_class[1],
            "2xx": stats.by_class[2],
            "3xx": stats.by_class[3],
            "4xx": stats.by_class[4],
            "5xx": stats.by_class[5],
        },
        "processes": [process_state(p, now) for p in group.processes],
        "retiring": [process_state(p, now) for p in group.retiring],
    }
