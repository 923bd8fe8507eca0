"""The ``ferryman`` command line: argument parsing built from the settings registry."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

import uvloop

from . import describe
from . import status as operator
from .config import (
    Config,
    SiteApp,
    effective_settings,
    flag_of,
    json_value,
    reference_markdown,
    resolve,
    settings,
    shown_default,
    site_apps,
    toml_value,
)
from .core import STOP_MARGIN, Core, admin_password
from .daemon import Daemon, PidFile, ferryman_pid, read_pid_file
from .daemon import stop as stop_server
from .errors import ConfigError
from .http import tls
from .http.listener import listen_target, open_for
from .instance import running_instances
from .log import LogSink, setup_logging
from .spawning.detect import AppSpec, detect, split_app_reference, with_interpreter
from .spawning.error_report import ErrorReports
from .watchdog import HANDLED, CoreLink, Plan, become_watchdog

#: Exit code of a core that raised instead of returning (EX_SOFTWARE).
CORE_CRASHED = 70

#: ``ferryman stop`` without the server's own graceful timeout: the default one, 30 s,
#: with the margin.
UNKNOWN_STOP_WAIT = 35.0
#: How long after its core the watchdog may take to exit.
WATCHDOG_EXIT = 1.0


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors in one line, exit code 2, like every other configuration error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ferryman: {message} (see '{self.prog} --help')\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ferryman",
        description="Ferryman: a polyglot application server with a least-busy process pool.",
    )
    parser.add_argument("-V", "--version", action="version", version=describe())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    commands.required = True
    start = commands.add_parser("start", help="serve the app in APP_DIR")
    start.add_argument(
        "app_dir",
        nargs="?",
        default=".",
        metavar="APP_DIR",
        help="the app (default: .); or MODULE:ATTRIBUTE (main:app) for the callable of a "
        "Python app in the current directory, as --startup-file MODULE:ATTRIBUTE",
    )
    add_setting_flags(start)
    listing = commands.add_parser(
        "settings",
        help="print the effective settings for APP_DIR, or the configuration reference",
        description="With APP_DIR: the settings 'ferryman start APP_DIR' would run with (the "
        "same flags are understood), each with where its value comes from. Without: the "
        "configuration reference.",
    )
    listing.add_argument(
        "app_dir", nargs="?", default=None, metavar="APP_DIR", help="the app to show"
    )
    listing.add_argument("--json", action="store_true", help="effective settings as JSON")
    listing.add_argument(
        "--markdown", action="store_true", help="print the reference as Markdown (the default)"
    )
    add_setting_flags(listing)
    add_operator_commands(commands)
    return parser


def add_operator_commands(commands: Any) -> None:
    """status, restart-app, detach-process, memory-stats: clients of the admin API."""

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=description
        )
        parser.add_argument(
            "--instance",
            metavar="NAME|PID",
            help="the server to ask, when several run (by its instance name or its pid)",
        )
        parser.add_argument(
            "--port", type=int, metavar="PORT", help="the server to ask: the one on this port"
        )
        return parser

    shown = command(
        "status",
        "show a running server's processes, queue and requests",
        "The running server's app processes (PID, Sessions, Processed, Uptime, CPU, Memory, "
        "Last used), its queue and its state, as passenger-status shows them.",
    )
    shown.add_argument(
        "--show",
        choices=("pool", "requests", "json"),
        default="pool",
        help="what to show: the pool (default), the requests in flight, or everything as JSON",
    )
    shown.add_argument(
        "--watch", action="store_true", help="show it again every second, until Ctrl-C"
    )
    restart = command(
        "restart-app",
        "restart a running server's app processes",
        "Replace every app process of the app. Rolling (the default with "
        "--rolling-restarts): one batch at a time, each old process once its replacement is "
        "ready. Blocking: all at once, new requests wait for the new processes. Either way "
        "old processes finish their requests first.",
    )
    mode = restart.add_mutually_exclusive_group()
    mode.add_argument("--blocking", dest="mode", action="store_const", const="blocking")
    mode.add_argument("--rolling", dest="mode", action="store_const", const="rolling")
    restart.add_argument("--app", metavar="NAME", help="which app, when the server runs several")
    detach = command(
        "detach-process",
        "take one app process out of service",
        "The process gets no new requests, stops once its requests in flight are done, and "
        "is replaced if the app needs it.",
    )
    detach.add_argument("pid", type=int, metavar="PID")
    stopping = commands.add_parser(
        "stop",
        help="stop a running server",
        description="Send SIGTERM to a running server (found by --pid-file, --port, APP_DIR "
        "or as the only one running) and wait until it has stopped: requests in flight "
        "finish first. Exit codes: 0 stopped; 1 not running, or still running after "
        "--timeout (unless --force); 2 usage.",
    )
    stopping.add_argument("app_dir", nargs="?", metavar="APP_DIR", help="the server's app")
    stopping.add_argument("--pid-file", metavar="PATH", help="the server's --pid-file")
    stopping.add_argument("--port", type=int, metavar="PORT", help="the port it listens on")
    stopping.add_argument("--instance", metavar="NAME|PID", help="the instance, by name or pid")
    stopping.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait (default: the server's --graceful-timeout and its stop "
        f"margin, {STOP_MARGIN:g} s; {UNKNOWN_STOP_WAIT:g} s if the server is not found "
        "through its instance directory)",
    )
    stopping.add_argument(
        "--force",
        action="store_true",
        help="SIGKILL to the server and every process it started if it is still running "
        "after --timeout",
    )
    command(
        "memory-stats",
        "show the memory of a running server's processes",
        "Private and shared memory, RSS and PSS of the core and of every app process (from "
        "/proc/PID/smaps_rollup), with totals per app, as passenger-memory-stats shows them.",
    )


def add_setting_flags(command: argparse.ArgumentParser) -> None:
    """One flag per setting of the registry, grouped by section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, spec, default in settings():
        shown = shown_default(name, spec, default)
        help_text = spec.help if shown == "(none)" else f"{spec.help} (default: {shown})"
        group = groups.get(spec.section)
        if group is None:
            group = groups[spec.section] = command.add_argument_group(spec.section)
        flags = [flag_of(name)] + ([spec.short] if spec.short else [])
        if spec.kind.boolean:
            group.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif spec.kind.repeatable:
            group.add_argument(
                *flags,
                dest=name,
                action="append",
                default=None,
                metavar=spec.kind.metavar,
                help=help_text + " (repeatable)",
            )
        else:
            group.add_argument(
                *flags, dest=name, default=None, metavar=spec.kind.metavar, help=help_text
            )


def app_reference_as_startup_file(args: argparse.Namespace) -> None:
    """``ferryman start main:app``, as uvicorn and gunicorn users type it: when APP_DIR is
    no directory but ``module:attribute`` names a file in the current directory, the app
    is the current directory with that startup file (as ``--startup-file main:app``)."""
    value = args.app_dir
    if not value or args.startup_file is not None or Path(value).is_dir():
        return
    cwd = Path.cwd()
    startup_file, attribute = split_app_reference(cwd, value)
    if attribute and (cwd / startup_file).is_file():
        args.app_dir = "."
        args.startup_file = value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("start", "settings"):
        app_reference_as_startup_file(args)
    if args.command == "settings":
        if args.app_dir is None and not args.json:
            sys.stdout.write(reference_markdown())
            return 0
        return show_settings(args)
    if args.command == "start":
        return start(args, list(sys.argv[1:] if argv is None else argv))
    if args.command == "stop":
        return stop(args)
    try:
        if args.command == "status":
            return operator.status(args.instance, args.show, args.watch, port=args.port)
        if args.command == "restart-app":
            return operator.restart_app(
                args.instance, args.mode or "default", args.app, port=args.port
            )
        if args.command == "detach-process":
            return operator.detach_process(args.instance, args.pid, port=args.port)
        return operator.memory_stats(args.instance, port=args.port)
    except operator.CommandError as exc:
        sys.stderr.write(f"ferryman: {exc}\n")
        return 1


def show_settings(args: argparse.Namespace) -> int:
    """The effective settings for an app, with where each value comes from (like nginx -T)."""
    given = {name: getattr(args, name) for name, _, _ in settings()}
    try:
        config, warnings = resolve(Path(args.app_dir or "."), given, os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"ferryman: {exc}\n")
        return exc.exit_code
    for warning in warnings:
        sys.stderr.write(f"ferryman: {warning}\n")
    rows = effective_settings(config)
    if args.json:
        values = {
            name: {"value": json_value(value), "origin": origin} for name, value, origin in rows
        }
        document = {"app_dir": str(config.app_dir), "settings": values}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    lines = [f"# Effective settings for {config.app_dir} (as 'ferryman start' would run)", ""]
    specs = {name: spec for name, spec, _ in settings()}
    shown = []
    for name, value, origin in rows:
        if value is None:  # not set: said in a comment, so the output stays valid TOML
            unset = specs[name].default_text or "not set"
            shown.append((f"# {name}: {unset}", origin))
        else:
            shown.append((f"{name} = {toml_value(value)}", origin))
    # The origins line up, except after the few long values (a list of apps...).
    width = min(max(len(text) for text, _ in shown), SETTINGS_COLUMN)
    lines += [f"{text.ljust(width)}  # {origin}" for text, origin in shown]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


#: Where `ferryman settings` starts the column of origins, at the most.
SETTINGS_COLUMN = 56


def start(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``ferryman start``: check everything that can be checked, (detach,) listen, then
    become the watchdog, which runs the core: ``ferryman start`` again, with the same
    ``argv``, told by the environment that it is the core."""
    link = CoreLink.from_environment()
    given = {name: getattr(args, name) for name, _, _ in settings()}
    pid_file = None
    try:
        config, warnings = resolve(Path(args.app_dir), given, os.environ)
        if config.daemonize and not config.log_file:
            raise ConfigError(
                f"invalid value true for daemonize (from {config.origin('daemonize')}): it "
                "needs log_file (a daemon has no terminal to log to)"
            )
        apps = [
            (site_app, with_interpreter(detect(site_app.config), site_app.config, Path.cwd()))
            for site_app in site_apps(config)
        ]
        ErrorReports(config.error_report_dir, config.error_report_limit).check()
        password = admin_password(config)
        tls.check(config)
        if config.pid_file and link is None:
            pid_file = PidFile(Path(config.pid_file))
            pid_file.check()
        sink = setup_logging(config)
    except ConfigError as exc:
        sys.stderr.write(f"ferryman: {exc}\n")
        if link is not None:
            link.error(str(exc))  # changed since the watchdog checked it (Ferrymanfile.toml)
        return exc.exit_code
    if link is not None:
        return run_core(config, apps, sink, warnings, link=link, password=password)
    daemon = None
    if config.daemonize:
        daemon = Daemon()
        code = daemon.detach()
        if code is not None:
            sink.close()  # the starting process: the daemon has its own
            return code
    log = logging.getLogger("ferryman")
    try:
        try:
            sockets = open_for(config)
        except ConfigError as exc:
            # Found only when listening (a host that does not resolve, an address that is
            # not this machine's): said like every other configuration error.
            sys.stderr.write(f"ferryman: {exc}\n")
            if config.log_file:
                log.error("%s", exc)
            if daemon is not None:
                daemon.say(str(exc))
            return exc.exit_code
        except OSError as exc:
            why = f"Cannot listen on {listen_target(config)}: {exc.strerror or exc}"
            log.error("%s", why)
            if daemon is not None:
                daemon.say(why)
            return 1
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)  # see watchdog.HANDLED
        first, status, commands = fork_first_core(
            sockets,
            lambda link: run_core(config, apps, sink, warnings, link=link, password=password),
            close_in_core=[daemon.report_fd] if daemon is not None and daemon.report_fd else [],
        )
        plan = Plan(
            sockets=[sock.fileno() for sock in sockets],
            core_argv=[sys.executable, "-m", "ferryman", *argv],
            log_fd=sink.fd,
            log_path=config.log_file,
            log_level=config.log_level,
            socket_path=config.socket,
            pid_file=str(pid_file.path) if pid_file is not None else None,
            daemon_fd=daemon.report_fd if daemon is not None else None,
            first_core=first,
            first_status=status,
            commands=commands,
        )
        sink.flush()
        try:
            become_watchdog(plan)  # does not return
        except OSError as exc:
            # The core stops by itself once the command pipe closes (as we exit).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            log.error("Cannot start the watchdog (%s): %s", sys.executable, exc)
            if daemon is not None:
                daemon.say(f"cannot start the watchdog: {exc}")
            return 1
        return 1  # not reached
    finally:
        sink.close()


def fork_first_core(
    sockets: list[socket.socket],
    run: Callable[[CoreLink], int],
    close_in_core: list[int],
) -> tuple[int, int, list[int]]:
    """Fork the first core from this process, which has imported and checked everything
    already (a start then costs one interpreter, not two); the watchdog starts later
    ones. Returns its pid, the read end of its status pipe and the command pipe."""
    commands_r, commands_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(status_r, False)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the core
        code = CORE_CRASHED
        try:
            for fd in (commands_w, status_r, *close_in_core):
                os.close(fd)
            code = run(CoreLink(sockets, commands_r, status_w, os.getppid()))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(status_w)
    return pid, status_r, [commands_r, commands_w]


def run_core(
    config: Config,
    apps: list[tuple[SiteApp, AppSpec]],
    sink: LogSink,
    warnings: list[str],
    *,
    link: CoreLink,
    password: str | None,
) -> int:
    """In a core its watchdog started: serve until stopped; the exit code."""
    log = logging.getLogger("ferryman")
    try:
        for warning in warnings:
            log.warning("%s", warning)
        try:
            return run(Core(config, apps, sink, link, password).run())
        except ConfigError as exc:
            # Found only by the core (e.g. a TMPDIR too deep for socket paths): said like
            # every other configuration error, and to the watchdog (for --daemonize).
            sys.stderr.write(f"ferryman: {exc}\n")
            if config.log_file:
                log.error("%s", exc)
            link.error(str(exc))
            return exc.exit_code
    finally:
        sink.close()


def stop(args: argparse.Namespace) -> int:
    """``ferryman stop``: which server, then SIGTERM and wait."""
    pid = None
    try:
        candidates = running_instances()
    except OSError:
        candidates = []
    if args.pid_file:
        pid = read_pid_file(Path(args.pid_file))
        if pid is None or not ferryman_pid(pid):
            sys.stderr.write(f"ferryman: no running Ferryman in the pid file {args.pid_file}\n")
            return 1
        candidates = [i for i in candidates if i.is_named(str(pid))]
    else:
        if args.instance:
            candidates = [i for i in candidates if i.is_named(args.instance)]
        if args.port:
            candidates = [i for i in candidates if i.listens_on(args.port)]
        if args.app_dir:
            root = str(Path(args.app_dir).resolve())
            candidates = [i for i in candidates if i.properties.get("app_root") == root]
        if len(candidates) != 1:
            listing = "".join(f"\n  {i.describe()}" for i in candidates)
            why = "no running Ferryman matches" if not candidates else "several match"
            sys.stderr.write(
                f"ferryman: {why}; say which with --pid-file, --port or --instance{listing}\n"
            )
            return 1
        # Its watchdog, when it has one: waiting for it waits until everything is gone.
        watchdog = candidates[0].properties.get("watchdog_pid")
        pid = (
            watchdog if isinstance(watchdog, int) and ferryman_pid(watchdog) else candidates[0].pid
        )
    properties = candidates[0].properties if len(candidates) == 1 else {}
    timeout = args.timeout
    if timeout is None:
        # The server stops within its graceful timeout and the margin: wait that long (and
        # a moment for the watchdog to exit after its core).
        graceful = properties.get("graceful_timeout")
        timeout = (
            float(graceful) + STOP_MARGIN + WATCHDOG_EXIT
            if isinstance(graceful, (int, float))
            else UNKNOWN_STOP_WAIT
        )
    code = stop_server(pid, timeout, args.force)
    if code:
        sys.stderr.write(f"ferryman: Ferryman {pid} is still running after {timeout:g} s\n")
        return code
    if args.force:
        # A killed watchdog could not remove its pid file.
        pid_file = properties.get("pid_file") or args.pid_file
        if pid_file and read_pid_file(Path(pid_file)) == pid:
            with contextlib.suppress(OSError):
                Path(pid_file).unlink()
    print(f"Ferryman {pid} stopped")
    return 0


def run(main_coroutine: Coroutine[Any, Any, int]) -> int:
    result: int = uvloop.run(main_coroutine)
    asyncio.set_event_loop(None)
    return result


if __name__ == "__main__":
    sys.exit(main())
