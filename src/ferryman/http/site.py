"""Site: the apps one server serves, and which of them a request goes to.

Routing (``--app [HOST]/PREFIX=DIR``, ``[[app]]`` tables): by the request's host first —
apps that name it win over apps that name no host — then by the longest URL prefix that
the path is, or lies below, at a segment boundary (``/api`` takes ``/api`` and
``/api/x``, not ``/apix``; see ``target.under`` for encoded paths). A request no app takes
gets a 404 from the core. A server with one app at ``/`` (the common case) skips all
of it.

The prefix an app is mounted at goes with the request as ``RequestHead.script_name``:
the environ splits it off as ``SCRIPT_NAME`` (WSGI, Rack; ``root_path`` for ASGI), and
apps that speak HTTP get the full path and ``X-Forwarded-Prefix``.
"""

from __future__ import annotations

from .app import App, LocalRoutes
from .request import RequestHead
from .target import path_of, under


class Site:
    """Which ``App`` serves a request. Built once; routing allocates nothing on the
    one-app path and reads two small tables otherwise."""

    def __init__(self, apps: list[App], local: LocalRoutes | None = None) -> None:
        if not apps:
            raise ValueError("a site needs an app")
        self.apps = apps
        #: Requests the core answers itself (health check, admin API), asked first.
        self.local = local
        any_host = [app for app in apps if not app.hosts]
        #: The app at / for any host: what requests go to before they are routed (and
        #: what the front's own errors are logged for).
        self.default = next((app for app in any_host if app.prefix == b"/"), apps[0])
        #: The one app, when there is only one and it takes everything.
        one = apps[0]
        self.only = one if len(apps) == 1 and not one.hosts and one.prefix == b"/" else None
        self._any_host = _longest_first(any_host)
        self._hosts: dict[bytes, list[App]] = {}
        #: (".example.com", apps) for "*.example.com"
        self._wildcards: list[tuple[bytes, list[App]]] = []
        for app in apps:
            for host in app.hosts:
                if host.startswith(b"*."):
                    suffix = host[1:]
                    for known, listed in self._wildcards:
                        if known == suffix:
                            listed.append(app)
                            break
                    else:
                        self._wildcards.append((suffix, [app]))
                else:
                    self._hosts.setdefault(host, []).append(app)
        for host, listed in self._hosts.items():
            self._hosts[host] = _longest_first(listed)
        self._wildcards = [(s, _longest_first(listed)) for s, listed in self._wildcards]
        # The longest wildcard suffix first: *.a.example.com before *.example.com.
        self._wildcards.sort(key=lambda entry: len(entry[0]), reverse=True)

    def route(self, head: RequestHead) -> App | None:
        """The app for ``head`` (its ``script_name`` set to the app's prefix), or None
        when no app takes it (the core answers 404)."""
        only = self.only
        if only is not None:
            return only
        path = path_of(head.target)
        app = None
        host = head.forwarded_host or head.host
        if host and (self._hosts or self._wildcards):
            name = _host_name(host)
            listed = self._hosts.get(name)
            if listed is not None:
                app = _by_prefix(listed, path)
            if app is None:
                for suffix, apps in self._wildcards:  # the longest suffix first
                    if name.endswith(suffix) and len(name) > len(suffix):
                        app = _by_prefix(apps, path)
                        if app is not None:
                            break
        if app is None:
            app = _by_prefix(self._any_host, path)
        if app is not None and app.prefix != b"/":
            head.script_name = app.prefix
        return app


def _longest_first(apps: list[App]) -> list[App]:
    return sorted(apps, key=lambda app: len(app.prefix), reverse=True)


def _by_prefix(apps: list[App], path: bytes) -> App | None:
    """The app (longest prefix first) whose prefix ``path`` is or lies below."""
    for app in apps:
        prefix = app.prefix
        if prefix == b"/" or under(path, prefix):
            return app
    return None


def _host_name(host: bytes) -> bytes:
    """The host without its port, in lower case, without a trailing dot."""
    if host.startswith(b"["):
        end = host.find(b"]")
        name = host[: end + 1] if end > 0 else host
    else:
        name = host.partition(b":")[0]
    return name.lower().rstrip(b".")
