"""Watchdog: the process ``ferryman start`` becomes. It owns the listening sockets, runs
the core as its child, and starts a new core when one dies.

Why a process of its own: a core that dies (a bug, the OOM killer, ``kill -9``) loses
the requests it was serving, but not the server. The listening sockets stay open in
the watchdog, so connections made while no core runs wait in the listen backlog, and
the next core (started with the sockets inherited) accepts them.

Small on purpose: ``ferryman start`` checks the configuration, opens the sockets (and
detaches, with --daemonize), then *execs* this module — same pid, a fresh interpreter
that imports only the standard library (about 11 MB, not the core's 30). Each core is
``ferryman start`` again with the same arguments, told through ``FERRYMAN_WATCHDOG``
which inherited fds are its sockets and pipes. Nothing from the rest of Ferryman is
imported here: keep it that way.

Between the watchdog and a core, two pipes:

* the *command* pipe, watchdog → core: ``s`` asks the core to stop gracefully (the
  watchdog got SIGTERM or SIGINT), ``h`` to hurry (a second one); EOF means the
  watchdog is gone, and the core stops gracefully, so no app process outlives it.
* the *status* pipe, core → watchdog: ``ready <urls as JSON>`` once the core serves,
  ``error <message>`` if it cannot start, ``stopping`` once it stops for good (the
  watchdog then closes its copies of the listening sockets, so that new connections
  are refused rather than left waiting).

A core that exits 0 stopped in order (SIGTERM, ``ferryman stop``, the admin API): the
watchdog exits 0 too. A core that dies before any core ever served ends the watchdog
with its exit code (a configuration error is not retried). Any other death starts a
new core, at once the first time, then after a back-off that doubles up to
``BACKOFF_CAP`` (reset once a core has run ``STABLE_AFTER`` seconds).

App processes of a dead core exit by themselves (their owner pipe closes). In case
one does not (an any-language app that never reads stdin), the watchdog is a child
subreaper: orphans become its children, get SIGTERM at once and SIGKILL after
``ORPHAN_GRACE``, and are reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Restart back-off after the first immediate restart: 1 s, 2 s, 4 s... up to this.
BACKOFF_CAP = 30.0
#: A core that ran this long was healthy: the next death restarts at once again.
STABLE_AFTER = 30.0
#: How long an orphaned app process gets between SIGTERM and SIGKILL.
ORPHAN_GRACE = 2.0
#: The most a status line from the core may hold (a list of listening addresses).
MAX_STATUS_LINE = 64 * 1024
#: How a core learns of its watchdog (JSON; removed from the environment at once).
ENVIRONMENT = "FERRYMAN_WATCHDOG"
#: Stop signals; the first asks for a graceful stop, the next ones for a hurried one.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Signals passed on to the core (the watchdog reopens its own log on both as well).
PASSED_ON = (signal.SIGHUP, signal.SIGUSR1)
#: Blocked by ``ferryman start`` from before the first core is forked until the core and
#: the watchdog have their handlers (a blocked signal waits; the mask survives exec): a
#: SIGTERM right after the server says it listens is a graceful stop, never a kill.
HANDLED = (*STOP_SIGNALS, *PASSED_ON)
_PR_SET_CHILD_SUBREAPER = 36
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

STOP = b"s"
HURRY = b"h"


# -- the core's side -------------------------------------------------------------------------


@dataclass
class CoreLink:
    """The core's side of the watchdog: the sockets to serve and the two pipe ends."""

    sockets: list[socket.socket]
    #: Read end of the command pipe (``s``, ``h``, EOF).
    commands: int
    #: Write end of the status pipe.
    status: int
    watchdog_pid: int

    @classmethod
    def from_environment(cls) -> CoreLink | None:
        """In a core started by a watchdog: its link (None otherwise). The variable is
        removed, so that app processes do not inherit it."""
        raw = os.environ.pop(ENVIRONMENT, None)
        if raw is None:
            return None
        plan = json.loads(raw)
        sockets = [socket.socket(fileno=fd) for fd in plan["sockets"]]
        return cls(sockets, plan["commands"], plan["status"], plan["watchdog_pid"])

    def ready(self, urls: list[str]) -> None:
        self._say(b"ready " + json.dumps(urls).encode() + b"\n")

    def stopping(self) -> None:
        self._say(b"stopping\n")

    def error(self, message: str) -> None:
        """Why this core cannot start (a configuration error), for ``--daemonize``."""
        self._say(b"error " + message.encode("utf-8", "replace")[:4096] + b"\n")

    def _say(self, line: bytes) -> None:
        with contextlib.suppress(OSError):  # the watchdog is gone: nobody to tell
            os.write(self.status, line)


# -- becoming the watchdog -----------------------------------------------------------------


@dataclass
class Plan:
    """What ``ferryman start`` hands the watchdog it execs into."""

    #: The listening sockets' fds.
    sockets: list[int]
    #: How to start a core: ``ferryman start`` with the same arguments.
    core_argv: list[str]
    #: Where the log goes: an fd (stderr, or --log-file opened), and the file to reopen.
    log_fd: int
    log_path: str | None = None
    log_level: str = "info"
    #: A Unix socket file to remove at exit (--socket).
    socket_path: str | None = None
    #: --pid-file, written once the first core serves and removed at exit.
    pid_file: str | None = None
    #: --daemonize: the pipe to the starting process, told once how the start went.
    daemon_fd: int | None = None
    #: The first core, already forked by ``ferryman start`` (so that a start costs one
    #: interpreter, not two): its pid, the read end of its status pipe, and the command
    #: pipe's two ends (the read end is every core's).
    first_core: int | None = None
    first_status: int | None = None
    commands: list[int] | None = None

    def fds(self) -> list[int]:
        """Every fd the watchdog takes over."""
        extra = [self.daemon_fd, self.first_status, *(self.commands or [])]
        return [*self.sockets, self.log_fd, *(fd for fd in extra if fd is not None)]


def become_watchdog(plan: Plan) -> None:
    """Exec this module with ``plan`` (never returns; raises OSError if exec fails). The
    fds the plan names stay open across the exec; nothing else does."""
    for fd in plan.fds():
        os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "ferryman.watchdog", json.dumps(plan.__dict__)]
    os.execv(sys.executable, argv)


# -- the watchdog -------------------------------------------------------------------------------


class _Log:
    """The watchdog's own lines, in the core's format, to the same log."""

    def __init__(self, plan: Plan) -> None:
        self.fd = plan.log_fd
        self.path = plan.log_path
        self.level = _LEVELS.get(plan.log_level, 20)

    def __call__(self, level: str, message: str) -> None:
        if _LEVELS[level] < self.level:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        line = f"{stamp}.{int(now % 1 * 1000):03d} {level.upper():<7} [{os.getpid()}] {message}\n"
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "replace"))

    def reopen(self) -> None:
        """After logrotate moved the file (SIGHUP, SIGUSR1); the old one stays on failure."""
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        old, self.fd = self.fd, fd
        os.close(old)


class _CoreProcess:
    """One run of the core: its pid, pidfd and status pipe, owned by the watchdog (and its
    Popen, unless ``ferryman start`` forked it before it became the watchdog)."""

    def __init__(self, pid: int, status: int, popen: subprocess.Popen[bytes] | None) -> None:
        self.popen = popen
        self.pid = pid
        self.status: int | None = status
        self.pidfd: int | None = os.pidfd_open(pid)
        self.started_at = time.monotonic()
        self.ready = False
        self.exit_code: int | None = None  # once reaped (negative: the killing signal)
        self._pending = b""

    def read_status(self) -> list[bytes]:
        """Lines the core wrote; closes the pipe at EOF (or on an oversized line)."""
        assert self.status is not None
        try:
            data = os.read(self.status, MAX_STATUS_LINE)
        except BlockingIOError:
            return []
        if not data:
            self.close_status()
            return []
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        if len(self._pending) > MAX_STATUS_LINE:
            self.close_status()
        return lines

    def close_status(self) -> None:
        if self.status is not None:
            os.close(self.status)
            self.status = None

    def close(self) -> None:
        self.close_status()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Watchdog:
    """Runs cores one after another on the same listening sockets until one stops in order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.log = _Log(plan)
        #: Owned from here on: closed (and a Unix socket file removed) when run() ends.
        self.sockets: list[int] | None = list(plan.sockets)
        self.stopping = False
        #: The error a core reported before it exited (a configuration error).
        self.core_error = ""
        self.listening = False
        self._stop_signals = 0
        self._signals: list[int] = []
        self._commands: int | None = None  # write end of the command pipe
        self._orphans: dict[int, float] = {}  # pid → when it gets SIGKILL
        self._core: _CoreProcess | None = None
        self._pid_file_written = False

    def run(self) -> int:
        _set_child_subreaper()
        fds: list[int] = []  # the watchdog's own pipe ends
        old_handlers = {}
        code = 1
        try:
            wake_r, wake_w = _pipe(fds)
            if self.plan.commands is not None:
                commands_r, commands_w = self.plan.commands
                fds += [commands_r, commands_w]
            else:
                commands_r, commands_w = _pipe(fds, nonblocking=False)
            self._commands = commands_w
            old_wakeup = signal.set_wakeup_fd(wake_w)
            try:
                for sig in (*STOP_SIGNALS, *PASSED_ON, signal.SIGCHLD):
                    old_handlers[sig] = signal.signal(sig, self._on_signal)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)  # see HANDLED
                code = self._supervise(wake_r, commands_r)
                return code
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                signal.set_wakeup_fd(old_wakeup)
        finally:
            # Closing the command pipe tells a core still running (only if the watchdog
            # itself failed) to stop gracefully: it stops its app processes itself.
            self._commands = None
            for fd in fds:
                os.close(fd)
            running = 0
            if self._core is not None:
                running = self._core.pid if self._core.exit_code is None else 0
                self._core.close()
                self._core = None
            self._end_orphans(spare=running)
            self._close_sockets()
            self._finish(code)

    def _finish(self, code: int) -> None:
        """The last words: the socket file, the pid file, the starting process."""
        if self.plan.socket_path:
            with contextlib.suppress(OSError):
                os.unlink(self.plan.socket_path)
        if self.plan.pid_file and self._pid_file_written:
            path = Path(self.plan.pid_file)
            with contextlib.suppress(OSError, ValueError):
                if int(path.read_text().strip() or 0) == os.getpid():
                    path.unlink()
        if not self.listening:
            why = self.core_error or f"the server stopped before it listened (exit code {code})"
            self._tell_daemon(why)

    # -- signals --------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only noted here; handled in the loop (the wakeup fd wakes it).
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        core = self._core
        for signum in signals:
            sig = signal.Signals(signum)
            if sig in STOP_SIGNALS:
                self._stop_signals += 1
                self.stopping = True
                if self._stop_signals == 1:
                    self.log("info", f"Watchdog received {sig.name}: stopping the server")
                self._command(STOP if self._stop_signals == 1 else HURRY)
            elif sig in PASSED_ON:
                self.log.reopen()
                if core is not None and core.exit_code is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(core.pid, sig)

    def _command(self, command: bytes) -> None:
        if self._commands is not None:
            with contextlib.suppress(OSError):
                os.write(self._commands, command)

    # -- the cores ----------------------------------------------------------------------------

    def _supervise(self, wake: int, commands: int) -> int:
        failures = 0
        first, status = self.plan.first_core, self.plan.first_status
        while True:
            if first is not None and status is not None:
                core = self._core = _CoreProcess(first, status, None)
                first = status = None
            else:
                core = self._core = self._start_core(commands)
            code = self._wait(core, wake)
            lived = time.monotonic() - core.started_at
            self._core = None
            core.close()
            if self.stopping or code == 0:
                return code if code >= 0 else 1
            if not self.listening:
                return code if code > 0 else 1  # never served: retrying will not help
            if lived >= STABLE_AFTER:
                failures = 0
            delay = 0.0 if failures == 0 else min(BACKOFF_CAP, 2.0 ** (failures - 1))
            failures += 1
            why = f"exit code {code}" if code >= 0 else f"signal {-code}"
            later = f" in {delay:g} s (it keeps dying)" if delay else ""
            self.log(
                "error",
                f"The core (pid {core.pid}) died ({why}) after {lived:.1f} s; "
                f"starting a new one{later}",
            )
            self._adopt_orphans()
            if not self._pause(delay, wake):
                return 0  # told to stop during the back-off

    def _start_core(self, commands: int) -> _CoreProcess:
        """``ferryman start`` again, the sockets and pipe ends inherited."""
        assert self.sockets is not None
        fds: list[int] = []
        status_r, status_w = _pipe(fds, nonblocking=False)
        try:
            os.set_blocking(status_r, False)
            link = {
                "sockets": self.sockets,
                "commands": commands,
                "status": status_w,
                "watchdog_pid": os.getpid(),
            }
            env = dict(os.environ)
            env[ENVIRONMENT] = json.dumps(link)
            # The new core starts with HANDLED blocked, until it has its handlers.
            signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
            try:
                popen = subprocess.Popen(
                    self.plan.core_argv,
                    env=env,
                    pass_fds=(*self.sockets, commands, status_w),
                    close_fds=True,
                )
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            os.close(status_w)
            fds.remove(status_w)
            try:
                return _CoreProcess(popen.pid, status_r, popen)
            except BaseException:
                popen.kill()
                popen.wait()
                raise
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def _wait(self, core: _CoreProcess, wake: int) -> int:
        """Until the core exits: handle signals, its status lines, orphans. Its exit code
        (negative: the signal that killed it)."""
        while True:
            watched = [fd for fd in (wake, core.status, core.pidfd) if fd is not None]
            timeout = None
            if self._orphans:
                timeout = max(0.0, min(self._orphans.values()) - time.monotonic())
            readable, _, _ = select.select(watched, [], [], timeout)
            if wake in readable:
                _drain(wake)
            if self._signals:
                self._handle_signals()
            if core.status is not None and core.status in readable:
                for line in core.read_status():
                    self._status(line)
            self._reap(core)
            self._kill_orphans(time.monotonic())
            if core.exit_code is not None:
                if core.status is not None:  # its last words, if any are left
                    for line in core.read_status():
                        self._status(line)
                return core.exit_code

    def _status(self, line: bytes) -> None:
        word, _, rest = line.partition(b" ")
        if word == b"ready" and not self.listening:
            self.listening = True  # the first core serves: the start went well
            try:
                urls = [str(url) for url in json.loads(rest)]
            except ValueError:
                urls = []
            self._write_pid_file()
            self._tell_daemon(f"ok pid {os.getpid()}, {', '.join(urls)}")
        elif word == b"error":
            self.core_error = rest.decode("utf-8", "replace")
        elif word == b"stopping":
            self.stopping = True
            self._close_sockets()  # new connections are refused from now on

    def _write_pid_file(self) -> None:
        if not self.plan.pid_file:
            return
        path = Path(self.plan.pid_file)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            temp.write_text(f"{os.getpid()}\n")
            temp.replace(path)
            self._pid_file_written = True
        except OSError as exc:
            self.log("error", f"Cannot write the pid file {path}: {exc.strerror or exc}")
            with contextlib.suppress(OSError):
                temp.unlink()

    def _tell_daemon(self, text: str) -> None:
        """--daemonize: tell the starting process how it went (once) and let it go."""
        fd = self.plan.daemon_fd
        if fd is None:
            return
        self.plan.daemon_fd = None
        with contextlib.suppress(OSError):
            os.write(fd, text.encode("utf-8", "replace") + b"\n")
        os.close(fd)

    def _reap(self, core: _CoreProcess) -> None:
        """Reap every child that exited: the core (its exit code kept), orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == core.pid:
                core.exit_code = os.waitstatus_to_exitcode(status)
                if core.popen is not None:
                    core.popen.returncode = core.exit_code  # reaped here, not by Popen
            self._orphans.pop(pid, None)

    def _pause(self, delay: float, wake: int) -> bool:
        """Wait ``delay`` seconds before the next core; False if told to stop meanwhile."""
        deadline = time.monotonic() + delay
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if select.select([wake], [], [], left)[0]:
                _drain(wake)
            if self._signals:
                self._handle_signals()
            self._reap_orphans()
            self._kill_orphans(time.monotonic())
        return False

    # -- orphans ------------------------------------------------------------------------------

    def _adopt_orphans(self) -> None:
        """App processes of the dead core are our children now: SIGTERM, SIGKILL later."""
        deadline = time.monotonic() + ORPHAN_GRACE
        for pid in _children():
            if pid not in self._orphans:
                self._orphans[pid] = deadline
                _signal_group(pid, signal.SIGTERM)

    def _reap_orphans(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._orphans.clear()
                return
            if pid == 0:
                return
            self._orphans.pop(pid, None)

    def _kill_orphans(self, now: float) -> None:
        """SIGKILL the orphans whose grace is over."""
        for pid, deadline in self._orphans.items():
            if now >= deadline:
                _signal_group(pid, signal.SIGKILL)

    def _end_orphans(self, spare: int = 0) -> None:
        """The watchdog ends: nothing it adopted outlives it (SIGKILL, reap; bounded).
        ``spare``: a core still running, which stops by itself."""
        deadline = time.monotonic() + ORPHAN_GRACE
        while True:
            self._reap_orphans()
            children = [pid for pid in _children() if pid != spare]
            if not children or time.monotonic() >= deadline:
                return
            for pid in children:
                _signal_group(pid, signal.SIGKILL)
            time.sleep(0.01)

    def _close_sockets(self) -> None:
        for fd in self.sockets or ():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sockets = None


def _pipe(fds: list[int], nonblocking: bool = True) -> tuple[int, int]:
    """A close-on-exec pipe whose ends are added to ``fds`` (their owner until handed on)."""
    read, write = os.pipe2(os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
    fds += [read, write]
    return read, write


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def _set_child_subreaper() -> None:
    """Orphaned descendants become our children (Linux); without it they go to init."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children() -> list[int]:
    """Our live children, from /proc."""
    pids: list[int] = []
    try:
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in (task / "children").read_bytes().split()]
    except OSError:
        pass
    return pids


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal an app process and its process group (each app runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # fails for a process that leads no group (the core)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def main(argv: list[str]) -> int:
    raw: dict[str, Any] = json.loads(argv[0])
    plan = Plan(**raw)
    for fd in plan.fds():
        if fd > 2:  # stdio stays what it is for the cores
            os.set_inheritable(fd, False)  # ours alone: a core gets the sockets explicitly
    return Watchdog(plan).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
