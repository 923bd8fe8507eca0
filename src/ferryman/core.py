"""Core: one server run — instance directory, pool, supervisor, front — and its shutdown.

``Core.run()`` is the whole life of ``ferryman start``: create the instance
directory, listen, spawn ``min_instances`` processes, serve until SIGTERM or
SIGINT, then shut down gracefully: stop accepting, let in-flight requests finish
(up to ``graceful_timeout``; a second signal cuts it short), stop every app
process, remove the instance directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path

from . import __version__, build
from .admin import AdminApi
from .census import AppView
from .config import CONFIG_FILE, Config, SiteApp, split_host_port
from .errors import ConfigError, SpawnError
from .http.app import App, HealthCheck
from .http.front import FrontServer
from .http.listener import listen_target
from .http.site import Site
from .http.static import StaticFiles
from .http.upstream import Upstreams
from .instance import InstanceDir
from .log import AccessLog, LogSink
from .pool import Group, GroupOptions, Pool, Reason, Rejected
from .spawning.detect import AppSpec
from .spawning.error_page import page_for
from .spawning.error_report import ErrorReports
from .spawning.spawner import Spawner
from .supervisor import MAX_TICK_INTERVAL, Supervisor
from .watchdog import HANDLED, CoreLink

log = logging.getLogger("ferryman")

#: The whole stop ends within graceful_timeout + STOP_MARGIN (documented in the README and
#: docs/operations.md, for systemd's TimeoutStopSec and docker stop's 10 s). After the
#: graceful timeout, app processes get at least MIN_EOF_GRACE to exit by themselves once
#: their stdin closes (loaders that can take tens of ms), then STOP_TERM_AFTER_TIMEOUT
#: after SIGTERM (a stopping loader ends at once); the rest of the margin is for SIGKILL,
#: reaping, and the core's and the watchdog's own exits. (With the two graces taking the
#: whole margin, an app ignoring both ended the stop 30-130 ms past it.)
STOP_MARGIN = 1.5
MIN_EOF_GRACE = 0.3
STOP_TERM_AFTER_TIMEOUT = 0.7
#: Shortest pause between two periodic looks at the pool, however short pool_idle_time is.
MIN_TICK_INTERVAL = 0.25
#: The longest admin password --admin-password-file may give (HTTP Basic in one header).
MAX_PASSWORD_BYTES = 1024
#: Signals that stop the server gracefully (a second one stops it at once).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def group_options(config: Config) -> GroupOptions:
    return GroupOptions(
        min_instances=config.min_instances,
        max_instances=config.max_instances,
        max_queue_size=config.max_request_queue_size,
        soft_limit=config.force_max_concurrent_requests_per_process,
        spawn_backoff=config.spawn_backoff,
        idle_time=config.pool_idle_time,
        rolling_restarts=config.rolling_restarts,
        rolling_batch=config.rolling_restart_batch,
        resist_deployment_errors=config.resist_deployment_errors,
        max_requests=config.max_requests,
        max_requests_jitter=config.max_requests_jitter,
        max_queue_time=config.max_request_queue_time,
    )


class Rejections:
    """The responses for requests that get no session: 503s and the spawn error page."""

    TEXT = b"text/plain; charset=utf-8"
    HTML = b"text/html; charset=utf-8"

    def __init__(self, config: Config) -> None:
        self.friendly = config.shows_friendly_error_pages
        self.status = config.spawn_error_status_code

    def __call__(self, rejected: Rejected) -> tuple[int, bytes, bytes]:
        if rejected.reason is Reason.QUEUE_FULL:
            return 503, b"Service Unavailable: the request queue is full.\n", self.TEXT
        if rejected.reason is Reason.QUEUE_TIMEOUT:
            return (
                504,
                b"Gateway Timeout: the request waited too long for an app process.\n",
                self.TEXT,
            )
        if rejected.reason is Reason.SHUTTING_DOWN:
            return 503, b"Service Unavailable: the server is shutting down.\n", self.TEXT
        if isinstance(rejected.error, SpawnError):
            return self.status, page_for(rejected.error, self.friendly), self.HTML
        return 503, b"Service Unavailable: the app has no process to serve this.\n", self.TEXT


class Core:
    def __init__(
        self,
        config: Config,
        apps: list[tuple[SiteApp, AppSpec]],
        sink: LogSink,
        link: CoreLink | None = None,
        admin_password: str | None = None,
    ) -> None:
        self.config = config
        #: Every app it serves (the app directory's own last, see config.site_apps).
        self.apps = apps
        #: The app directory's own app; None when an --app / [[app]] takes / for every
        #: host (the directory then holds only the site's Ferrymanfile.toml).
        self.spec = next((spec for site_app, spec in apps if site_app.config is config), None)
        self.sink = sink
        #: The watchdog: the sockets to serve on, and the pipes to and from it (None: the
        #: core binds its own sockets and answers to no one).
        self.link = link
        #: The admin account's password (None: a random one); see admin_password().
        self.admin_password = admin_password
        self._stop: asyncio.Event | None = None
        self._signals = 0
        self._front: FrontServer | None = None
        self._supervisor: Supervisor | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        instance = InstanceDir.create()
        try:
            return await self._serve(loop, instance)
        finally:
            instance.remove()

    async def _serve(self, loop: asyncio.AbstractEventLoop, instance: InstanceDir) -> int:
        config = self.config
        pool = Pool(config.max_pool_size)
        reports = ErrorReports(config.error_report_dir, config.error_report_limit)
        upstreams = Upstreams()
        spawners: dict[str, Spawner] = {}
        supervisor = Supervisor(pool, spawners, reports, upstreams, selfcheck=config.selfcheck)
        apps: list[App] = []
        views: list[AppView] = []
        for site_app, spec in self.apps:
            app_config = site_app.config
            group = pool.add_group(_group_name(spec, site_app, pool), group_options(app_config))
            spawners[group.name] = Spawner(app_config, spec, instance)
            app = App(
                group,
                supervisor,
                upstreams=upstreams,
                access_log=AccessLog(self.sink, config.access_log),
                rejection_response=Rejections(app_config),
                restart_file=spec.root / "tmp" / "restart.txt",
                stat_throttle_rate=config.stat_throttle_rate,
                sticky_cookie=(
                    app_config.sticky_sessions_cookie_name if app_config.sticky_sessions else None
                ),
                sticky_attributes=app_config.sticky_sessions_cookie_attributes,
                prefix=site_app.prefix,
                hosts=site_app.hosts,
                static=StaticFiles.for_app(spec.root, app_config.static_dir, site_app.prefix),
                stream_bodies=not app_config.buffer_request_bodies,
                stream_paths=app_config.unbuffered_request_path,
            )
            apps.append(app)
            views.append(
                AppView(
                    group,
                    app,
                    spec.root,
                    app_config.environment,
                    spec.kind.name,
                    site_app.describe(),
                )
            )
        groups = [app.group for app in apps]
        health = HealthCheck(config.health_check_path, groups) if config.health_check_path else None
        site = Site(apps, local=health)
        front = FrontServer(config, site)
        link = self.link
        try:
            urls = front.listen(link.sockets if link is not None else None)
        except BaseException as exc:
            await supervisor.shutdown()
            if isinstance(exc, OSError):
                log.error("Cannot listen on %s: %s", listen_target(config), exc.strerror or exc)
                return 1
            raise
        passwords = instance.write_passwords(self.admin_password)
        admin_api = AdminApi(
            pool=pool,
            apps=views,
            driver=supervisor,
            front=front,
            instance_name=instance.name,
            passwords=passwords,
            shutdown=self._admin_shutdown,
        )
        admin_app = App(
            apps[0].group,  # never asked: the admin API answers every request itself
            supervisor,
            upstreams=upstreams,
            access_log=AccessLog(self.sink, False),
            rejection_response=Rejections(config),
        )
        admin_site = Site([admin_app], local=admin_api)
        admin_fronts = []
        admin_urls: list[str] = []
        try:
            for admin_config in self._admin_configs(instance):
                admin_front = FrontServer(admin_config, admin_site)
                admin_fronts.append(admin_front)
                admin_urls += admin_front.listen()
        except OSError as exc:
            for server in (*admin_fronts, front):
                await _close_front(server)
            await supervisor.shutdown()
            log.error("Cannot listen for the admin API: %s", exc.strerror or exc)
            return 1
        self._front = front
        self._supervisor = supervisor
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        # Blocked until now when a watchdog started us (see watchdog.HANDLED): a signal
        # that came meanwhile is delivered here, to the handlers.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        if link is not None:
            loop.add_reader(link.commands, self._on_command, link.commands)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup, groups, supervisor)
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_log, signal.SIGUSR1)
        try:
            instance.write_properties(
                {
                    "pid": os.getpid(),
                    "version": __version__,
                    "build": build(),
                    "addresses": urls,
                    "app_root": str(config.app_dir),
                    "started_at": time.time(),
                    "name": instance.name,
                    "admin_socket": str(instance.admin_socket),
                    "admin_addresses": admin_urls,
                    "watchdog_pid": link.watchdog_pid if link is not None else None,
                    # For ferryman stop: how long a stop may take, and the file to remove
                    # after a forced one (the watchdog removes it on every other exit).
                    "graceful_timeout": config.graceful_timeout,
                    "pid_file": str(Path(config.pid_file).absolute()) if config.pid_file else None,
                }
            )
            self._banner(urls)
            if link is not None:
                link.ready(urls)
            supervisor.apply(pool.tick(supervisor.now()))
            supervisor.tick_every(_tick_interval(config))
            if config.memory_limit:
                supervisor.watch_memory(config.memory_limit * 1024 * 1024)
            if config.max_request_time:
                front.watch_request_time(config.max_request_time)
            assert self._stop is not None
            await self._stop.wait()
            if link is not None:
                link.stopping()  # the watchdog closes its sockets: new connections are refused
            pool.drain()
            log.info(
                "Shutting down: finishing requests in flight (up to %gs)", config.graceful_timeout
            )
            deadline = loop.time() + config.graceful_timeout
            front.stop_accepting()
            supervisor.going_away()  # WebSockets close now, not at the graceful timeout
            if not await front.drained(config.graceful_timeout):
                log.warning("Graceful timeout reached; closing the remaining connections")
                front.abort_all()
            # App processes get what is left of the graceful timeout to exit on their own
            # (at least a moment), then SIGTERM and a short grace, then SIGKILL: the whole
            # stop ends within graceful_timeout + STOP_MARGIN.
            left = max(MIN_EOF_GRACE, deadline - loop.time())
            await supervisor.shutdown(eof_grace=left, term_grace=STOP_TERM_AFTER_TIMEOUT)
            for admin_front in admin_fronts:
                await _close_front(admin_front)
            front.remove_socket_file()
            front.close_alerts()
            log.info("Ferryman stopped")
            return 0
        finally:
            for sig in (*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            if link is not None:
                loop.remove_reader(link.commands)
            self.sink.flush()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("Received %s", sig.name)
            self._request_stop()
        else:
            log.warning("Received %s again: closing all connections and stopping now", sig.name)
            self._hurry()

    def _on_command(self, fd: int) -> None:
        """A word from the watchdog: ``s`` stop, ``h`` hurry; EOF: it is gone, stop too.

        The watchdog's stop does not count as a signal: under systemd's control-group
        kill the core gets SIGTERM itself as well, and the two together are one stop."""
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            if self._stop is not None and not self._stop.is_set():
                log.warning("The watchdog is gone: stopping")
            self._request_stop()
        elif b"h" in data:
            log.warning("The watchdog was told again to stop: closing all connections now")
            self._request_stop()
            self._hurry()
        elif b"s" in data:
            self._request_stop()

    def _request_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    def _hurry(self) -> None:
        """A second stop: app processes get SIGTERM at once, connections are closed."""
        if self._supervisor is not None:
            self._supervisor.hurry = True
        if self._front is not None:
            self._front.abort_all()

    def _admin_shutdown(self) -> None:
        """POST /shutdown on the admin API: as SIGTERM."""
        assert self._stop is not None
        self._stop.set()

    def _admin_configs(self, instance: InstanceDir) -> list[Config]:
        """Where the admin API listens: the instance's Unix socket (0600), and TCP if asked."""
        base = dataclasses.replace(
            self.config,
            socket_owner=None,
            trusted_proxies=(),
            proxy_protocol=False,
            access_log=False,
            health_check_path=None,
            max_body_size=64 * 1024,
            ssl=False,  # --ssl is the app's port; the admin API stays as it is
            ssl_port=None,
        )
        configs = [dataclasses.replace(base, socket=str(instance.admin_socket), socket_mode=0o600)]
        if self.config.admin_address:
            host, port = split_host_port(self.config.admin_address)
            configs.append(dataclasses.replace(base, socket=None, address=host, port=port))
        return configs

    def _reopen_log(self, sig: signal.Signals) -> None:
        """SIGUSR1 (and SIGHUP): reopen --log-file, e.g. after logrotate moved it."""
        if self.config.log_file:
            self.sink.reopen()
            log.info("Received %s: reopened the log file %s", sig.name, self.config.log_file)
        else:
            log.info("Received %s: logging to stderr, nothing to reopen", sig.name)

    def _on_hup(self, groups: list[Group], supervisor: Supervisor) -> None:
        """SIGHUP: reopen the log, reload the TLS certificate and restart every app's
        processes (as tmp/restart.txt)."""
        self._reopen_log(signal.SIGHUP)
        if self._front is not None:
            self._front.reload_certificates()  # --ssl: e.g. renewed by certbot
        for group in groups:
            log.info("Received SIGHUP: restarting the processes of %s", group.name)
            supervisor.apply(group.restart(supervisor.now()))

    def _describe(self, spec: AppSpec, config: Config) -> None:
        """The app directory's app: its type, interpreter, environment and pool sizes."""
        kind = spec.kind
        interpreter = spec.interpreter
        if kind.interpreter_setting is None:
            log.info("  app type: %s, started with: %s", kind.title, spec.entry)
        elif interpreter is not None:
            log.info(
                "  app type: %s (%s), run by %s (%s)",
                kind.title,
                spec.entry,
                interpreter.path,
                interpreter.version,
            )
        else:
            shown = getattr(config, kind.interpreter_setting)
            log.info("  app type: %s (%s), run by %s", kind.title, spec.entry, shown)
        if kind.threaded:
            per_process = f"threads per process: {config.thread_count}"
        elif config.force_max_concurrent_requests_per_process:
            limit = config.force_max_concurrent_requests_per_process
            per_process = f"requests per process: at most {limit}"
        else:
            per_process = "requests per process: unlimited"
        log.info(
            "  environment: %s; processes: min %d, max pool %d; %s",
            config.environment,
            config.min_instances,
            config.max_pool_size,
            per_process,
        )

    def _banner(self, urls: list[str]) -> None:
        config = self.config
        spec = self.spec
        if spec is not None:
            log.info("Ferryman %s (%s build) serving %s", __version__, build(), spec.root)
            self._describe(spec, config)
        else:
            shown = config.app_dir
            log.info("Ferryman %s (%s build) serving the apps of %s", __version__, build(), shown)
        if (config.app_dir / CONFIG_FILE).is_file():
            log.info("  settings read from %s", config.app_dir / CONFIG_FILE)
        for site_app, app_spec in self.apps:
            if app_spec is not spec:
                log.info(
                    "  serving %s from %s (%s, %s)",
                    site_app.describe(),
                    app_spec.root,
                    app_spec.kind.title,
                    app_spec.entry,
                )
        for url in urls:
            log.info("Listening on %s", url)
        if config.log_file:
            # The log goes to a file; the terminal that started us still learns where we are.
            for url in urls:
                sys.stderr.write(f"Ferryman {__version__}: Listening on {url}\n")
            sys.stderr.write(f"Ferryman {__version__}: Logging to {config.log_file}\n")
            sys.stderr.flush()


def admin_password(config: Config) -> str | None:
    """The admin account's password from --admin-password-file (None: a random one)."""
    path = config.admin_password_file
    if path is None:
        return None
    try:
        with Path(path).open("rb") as file:
            head = file.read(MAX_PASSWORD_BYTES + 1)  # the first line, never a whole file
        lines = head.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"invalid value {path!r} for admin_password_file (from "
            f"{config.origin('admin_password_file')}): cannot read it: {why}"
        ) from None
    password = lines[0].strip() if lines else ""
    if not 8 <= len(password.encode()) <= MAX_PASSWORD_BYTES:
        raise ConfigError(
            f"invalid value {path!r} for admin_password_file (from "
            f"{config.origin('admin_password_file')}): its first line must be a "
            f"password of 8 to {MAX_PASSWORD_BYTES} bytes"
        )
    return password


async def _close_front(front: FrontServer) -> None:
    """Stop ``front`` now: its listeners, its connections, its socket file, its alerts."""
    front.stop_accepting()
    front.abort_all()
    await front.drained(1.0)
    front.remove_socket_file()
    front.close_alerts()


def _tick_interval(config: Config) -> float:
    """How often the pool looks for idle processes: often enough for pool_idle_time."""
    if not config.pool_idle_time:
        return MAX_TICK_INTERVAL
    return min(MAX_TICK_INTERVAL, max(MIN_TICK_INTERVAL, config.pool_idle_time / 4))


def _group_name(spec: AppSpec, site_app: SiteApp, pool: Pool) -> str:
    """The app's name in the pool, the status and the logs: its directory's name, made
    unique with where it is mounted when two apps share it (``api@/v2``: no spaces, so
    that ``restart-app --app NAME`` takes it as it is shown)."""
    name = spec.name
    if name in pool.groups:
        name = f"{name}@{site_app.describe()}"
    return name
