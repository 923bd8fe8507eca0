"""AdminApi: the admin API — HTTP/1.1 and JSON on the instance's Unix socket (and on
``--admin-address``), for ``ferryman status`` and the other operator commands.

It is served by Ferryman's own front: a second ``FrontServer`` whose ``App`` answers
every request locally (``App.local``), so parsing, limits and timeouts are the same
as for the apps' traffic. Every request needs HTTP Basic credentials: the read-only
account may read, the admin account may also act (restart, detach, shut down).
Wrong or missing credentials get 401 and nothing else; the password comparison is
constant-time.

Everything shown is read when asked, from the pool, the request counters and
``/proc``: the API adds nothing to the request path.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from . import __version__, build
from .census import AppView, group_state
from .http.app import LocalResponse, PoolDriver
from .http.exchange import CONNECTING, DRAINING, FORWARDING, QUEUED, RECEIVING
from .http.front import FrontServer
from .http.request import RequestHead
from .pool import Pool, RetireReason

log = logging.getLogger("ferryman")

JSON = b"application/json"
_STATES = {
    RECEIVING: "receiving",
    QUEUED: "queued",
    CONNECTING: "connecting",
    FORWARDING: "forwarding",
    DRAINING: "sending",
}
_UNAUTHORIZED = LocalResponse(
    401,
    b'{"error": "credentials needed (HTTP Basic: user readonly or admin)"}\n',
    JSON,
    b'WWW-Authenticate: Basic realm="Ferryman admin", charset="UTF-8"\r\n',
)


class AdminApi:
    """The admin API's routes; an ``App.local`` for the admin front."""

    def __init__(
        self,
        *,
        pool: Pool,
        apps: list[AppView],
        driver: PoolDriver,
        front: FrontServer,
        instance_name: str,
        passwords: dict[str, str],
        shutdown: Callable[[], None],
    ) -> None:
        self.pool = pool
        self.apps = apps
        self.driver = driver
        self.front = front
        self.instance_name = instance_name
        self.shutdown = shutdown
        self.started_at = time.time()
        #: user → password, as bytes for the comparison.
        self._passwords = {user: password.encode() for user, password in passwords.items()}
        # path → (method, needs the admin account, handler)
        self.routes: dict[str, tuple[bytes, bool, Callable[[dict[str, list[str]], float], Any]]] = {
            "/ping": (b"GET", False, lambda q, now: {"ok": True}),
            "/version": (b"GET", False, self._version),
            "/pool.json": (b"GET", False, self._pool),
            "/requests.json": (b"GET", False, self._requests),
            "/metrics": (b"GET", False, self._metrics),
            "/restart": (b"POST", True, self._restart),
            "/detach": (b"POST", True, self._detach),
            "/shutdown": (b"POST", True, self._shutdown),
        }

    # -- the request ---------------------------------------------------------------------

    def __call__(self, head: RequestHead, now: float) -> LocalResponse:
        user = self._user(head)
        if user is None:
            return _UNAUTHORIZED
        path, _, query = head.target.decode("latin-1").partition("?")
        route = self.routes.get(path)
        if route is None:
            return _json(404, {"error": f"no such endpoint: {path}", "endpoints": [*self.routes]})
        method, needs_admin, handler = route
        if head.method != method and not (method == b"GET" and head.method == b"HEAD"):
            return _json(405, {"error": f"{path} takes {method.decode()}"})
        if needs_admin and user != "admin":
            return _json(403, {"error": f"{path} needs the admin account, not {user}"})
        try:
            result = handler(parse_qs(query), now)
        except AdminError as exc:
            return _json(exc.status, {"error": exc.message})
        if isinstance(result, LocalResponse):
            return result
        return _json(200, result)

    def _user(self, head: RequestHead) -> str | None:
        """The account the credentials are right for, or None."""
        value = head.header(b"authorization")
        if not value or value[:6].lower() != b"basic ":
            return None
        try:
            decoded = base64.b64decode(value[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        name, sep, password = decoded.partition(b":")
        if not sep:
            return None
        found = None
        # Every account is compared, each in constant time: how long this takes says
        # nothing of which part was wrong.
        for user, expected in self._passwords.items():
            same_user = hmac.compare_digest(name, user.encode())
            same_password = hmac.compare_digest(password, expected)
            if same_user and same_password:
                found = user
        return found

    # -- reading -------------------------------------------------------------------------

    def _version(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        return {
            "version": __version__,
            "build": build(),
            "python": sys.version.split()[0],
            "pid": os.getpid(),
            "instance": self.instance_name,
        }

    def _pool(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        processes = sum(len(v.group.processes) for v in self.apps)
        return {
            **self._version(query, now),
            "time": time.time(),
            "started_at": self.started_at,
            "max_pool_size": self.pool.max_size,
            "capacity_used": self.pool.capacity_used(),
            "processes": processes,
            "requests_in_queue": sum(v.group.waiting() for v in self.apps),
            "apps": [group_state(view, now) for view in self.apps],
        }

    def _requests(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        requests = []
        for conn in list(self.front.connections):
            for exchange in list(conn.pipeline):
                head = exchange.head
                session = exchange.session
                requests.append(
                    {
                        "method": head.method.decode("latin-1"),
                        "path": head.target.decode("latin-1"),
                        "age": round(now - exchange.started_at, 3) if exchange.started_at else 0,
                        "state": _STATES.get(exchange.state, "done"),
                        "pid": session.process.pid if session is not None else None,
                        "client": head.client_addr.decode("latin-1"),
                    }
                )
        requests.sort(key=lambda r: -float(r["age"] or 0))
        return {"requests": requests}

    def _metrics(self, query: dict[str, list[str]], now: float) -> LocalResponse:
        # Imported on the first scrape: a server nobody scrapes never loads prometheus_client.
        from .metrics import render_metrics  # noqa: PLC0415

        body, content_type = render_metrics(self.apps, now)
        return LocalResponse(200, body, content_type.encode())

    # -- acting --------------------------------------------------------------------------

    def _view(self, query: dict[str, list[str]]) -> AppView:
        names = query.get("app")
        known = ", ".join(f"{v.group.name} (at {v.mount})" for v in self.apps)
        if not names:
            if len(self.apps) == 1:
                return self.apps[0]
            raise AdminError(
                400, f"several apps: say which (app=NAME, --app NAME on the command line): {known}"
            )
        for view in self.apps:  # by its name, or by where it is mounted (/api)
            if names[0] in (view.group.name, view.mount):
                return view
        raise AdminError(404, f"no app named {names[0]!r}; the apps: {known}")

    def _restart(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        mode = (query.get("mode") or ["default"])[0]
        if mode not in ("default", "blocking", "rolling"):
            raise AdminError(400, f"mode must be rolling or blocking, not {mode!r}")
        view = self._view(query)
        group = view.group
        old = [p.pid for p in group.processes]
        log.info("Restarting %s: asked through the admin API", group.name)
        rolling = None if mode == "default" else mode == "rolling"
        self.driver.apply(group.restart(now, rolling))
        done = "rolling" if group.outdated else "blocking"
        return {"restarting": group.name, "mode": done, "retiring": old}

    def _detach(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        try:
            pid = int((query.get("pid") or [""])[0])
        except ValueError:
            raise AdminError(400, "pid must be a process id (?pid=1234)") from None
        for view in self.apps:
            for process in view.group.processes:
                if process.pid == pid:
                    log.info("Detaching process %d of %s: asked through the admin API", pid,
                             view.group.name)  # fmt: skip
                    self.driver.apply(view.group.detach(process, now, RetireReason.DETACHED))
                    return {"detached": pid, "app": view.group.name, "sessions": process.sessions}
        raise AdminError(404, f"no process {pid} is serving (see /pool.json)")

    def _shutdown(self, query: dict[str, list[str]], now: float) -> dict[str, Any]:
        log.info("Shutting down: asked through the admin API")
        # After this response is on its way: the stop closes the admin front too.
        asyncio_loop = self.front.loop
        asyncio_loop.call_soon(self.shutdown)
        return {"shutting_down": True}


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, value: Any) -> LocalResponse:
    return LocalResponse(status, json.dumps(value, indent=1).encode() + b"\n", JSON)
