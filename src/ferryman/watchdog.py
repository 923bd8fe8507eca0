"""Watchdog: the process ``ferryman start`` becomes. It owns the listening sockets, runs
the core as its child, and starts a new core when one dies.

Why a process of its own: a core that dies (a bug, the OOM killer, ``kill -9``) loses
the requests it was serving, but not the server. The listening sockets stay open in
the watchdog, so connections made while no core runs wait in the listen backlog, and
the next core (forked from the watchdog, the sockets inherited) accepts them. The
watchdog runs no event loop and serves nothing: there is little in it to crash.

Between the two, two pipes:

* the *command* pipe, watchdog → core: ``s`` asks the core to stop gracefully (the
  watchdog got SIGTERM or SIGINT), ``h`` to hurry (a second one); EOF means the
  watchdog is gone, and the core stops gracefully, so no app process outlives it.
* the *status* pipe, core → watchdog: ``ready <urls as JSON>`` once the core serves,
  ``stopping`` once it stops for good (the watchdog then closes its copies of the
  listening sockets, so that new connections are refused rather than left waiting).

A core that exits 0 stopped in order (SIGTERM, ``ferryman stop``, the admin API): the
watchdog exits 0 too. A core that dies before it ever served ends the watchdog with
its exit code (a configuration error is not retried). Any other death starts a new
core, at once the first time, then after a back-off that doubles up to
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
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .log import LogSink

log = logging.getLogger("ferryman")

#: Restart back-off after the first immediate restart: 1 s, 2 s, 4 s... up to this.
BACKOFF_CAP = 30.0
#: A core that ran this long was healthy: the next death restarts at once again.
STABLE_AFTER = 30.0
#: How long an orphaned app process gets between SIGTERM and SIGKILL.
ORPHAN_GRACE = 2.0
#: The most a status line from the core may hold (a list of listening addresses).
MAX_STATUS_LINE = 64 * 1024
#: Exit code of a core that raised instead of returning (EX_SOFTWARE).
CORE_CRASHED = 70
#: Stop signals; the first asks for a graceful stop, the next ones for a hurried one.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Signals passed on to the core (the watchdog reopens its own log on both as well).
PASSED_ON = (signal.SIGHUP, signal.SIGUSR1)
_PR_SET_CHILD_SUBREAPER = 36

STOP = b"s"
HURRY = b"h"


@dataclass
class CoreLink:
    """The core's side of the watchdog: the sockets to serve and the two pipe ends."""

    sockets: list[socket.socket]
    #: Read end of the command pipe (``s``, ``h``, EOF).
    commands: int
    #: Write end of the status pipe.
    status: int
    watchdog_pid: int

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


class _CoreProcess:
    """One run of the core: its pid, pidfd and status pipe, owned by the watchdog."""

    def __init__(self, pid: int, status: int) -> None:
        self.pid = pid
        self.status: int | None = status
        self.pidfd: int | None = os.pidfd_open(pid)
        self.started_at = time.monotonic()
        self.ready = False
        self.exit_status: int | None = None  # a wait status, once reaped
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

    def __init__(
        self,
        config: Config,
        sink: LogSink,
        sockets: list[socket.socket],
        run_core: Callable[[CoreLink], int],
        *,
        on_listening: Callable[[list[str]], None] | None = None,
        in_core: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        #: Owned from here on: closed (and a Unix socket file removed) when run() ends.
        self.sockets: list[socket.socket] | None = sockets
        self.run_core = run_core
        #: Called once the first core serves, with its addresses (pid file, daemon).
        self.on_listening = on_listening
        #: Called first thing in every new core: closes what only the watchdog may hold
        #: (the daemon's pipe to the starting process).
        self.in_core = in_core
        self.stopping = False
        #: The error a core reported before it exited (a configuration error).
        self.core_error = ""
        self._stop_signals = 0
        self._signals: list[int] = []
        self._commands: int | None = None  # write end of the command pipe
        self._orphans: dict[int, float] = {}  # pid → when it gets SIGKILL
        self._core: _CoreProcess | None = None
        #: The watchdog's own pipe ends, which a new core closes.
        self._own_fds: list[int] = []

    def run(self) -> int:
        _set_child_subreaper()
        fds = self._own_fds
        old_handlers = {}
        try:
            wake_r, wake_w = _pipe(fds)
            commands_r, commands_w = _pipe(fds, nonblocking=False)
            fds.remove(commands_r)  # the cores' end: closed below, after the last core
            self._commands = commands_w
            old_wakeup = signal.set_wakeup_fd(wake_w)
            try:
                for sig in (*STOP_SIGNALS, *PASSED_ON, signal.SIGCHLD):
                    old_handlers[sig] = signal.signal(sig, self._on_signal)
                try:
                    return self._supervise(wake_r, commands_r)
                finally:
                    os.close(commands_r)
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
            fds.clear()
            running = 0
            if self._core is not None:
                running = self._core.pid if self._core.exit_status is None else 0
                self._core.close()
                self._core = None
            self._end_orphans(spare=running)
            self._close_sockets()
            self._remove_socket_file()

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
                    log.info("Watchdog received %s: stopping the server", sig.name)
                self._command(STOP if self._stop_signals == 1 else HURRY)
            elif sig in PASSED_ON:
                self.sink.reopen()
                if core is not None and core.exit_status is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(core.pid, sig)

    def _command(self, command: bytes) -> None:
        if self._commands is not None:
            with contextlib.suppress(OSError):
                os.write(self._commands, command)

    # -- the cores ----------------------------------------------------------------------------

    def _supervise(self, wake: int, commands: int) -> int:
        failures = 0
        served = False
        while True:
            core = self._core = self._fork(commands)
            code = self._wait(core, wake)
            lived = time.monotonic() - core.started_at
            served = served or core.ready
            self._core = None
            core.close()
            if self.stopping or code == 0:
                return code if code >= 0 else 1
            if not served:
                return code if code > 0 else 1  # it never served: retrying will not help
            if lived >= STABLE_AFTER:
                failures = 0
            delay = 0.0 if failures == 0 else min(BACKOFF_CAP, 2.0 ** (failures - 1))
            failures += 1
            why = f"exit code {code}" if code >= 0 else f"signal {-code}"
            log.error(
                "The core (pid %d) died (%s) after %.1f s; %s",
                core.pid,
                why,
                lived,
                "starting a new one"
                if not delay
                else f"starting a new one in {delay:g} s (it keeps dying)",
            )
            self._adopt_orphans()
            if not self._pause(delay, wake):
                return 0  # told to stop during the back-off

    def _fork(self, commands: int) -> _CoreProcess:
        """Start a core: a fork of this process, which runs ``run_core`` and exits."""
        assert self.sockets is not None
        fds: list[int] = []
        status_r, status_w = _pipe(fds, nonblocking=False)
        os.set_blocking(status_r, False)
        self.sink.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the core
            code = CORE_CRASHED
            try:
                os.close(status_r)
                for sig in (*STOP_SIGNALS, *PASSED_ON, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                for fd in self._own_fds:  # so that EOF on commands means the watchdog went
                    os.close(fd)
                if self.in_core is not None:
                    self.in_core()
                link = CoreLink(list(self.sockets), commands, status_w, os.getppid())
                code = self.run_core(link)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    self.sink.flush()
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(status_w)
        try:
            return _CoreProcess(pid, status_r)
        except BaseException:
            os.close(status_r)
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
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake, 512):
                        pass
            if self._signals:
                self._handle_signals()
            if core.status is not None and core.status in readable:
                for line in core.read_status():
                    self._status(core, line)
            self._reap(core)
            self._kill_orphans(time.monotonic())
            if core.exit_status is not None:
                return os.waitstatus_to_exitcode(core.exit_status)

    def _status(self, core: _CoreProcess, line: bytes) -> None:
        word, _, rest = line.partition(b" ")
        if word == b"ready" and not core.ready:
            core.ready = True
            try:
                urls = [str(url) for url in json.loads(rest)]
            except ValueError:
                urls = []
            if self.on_listening is not None:
                on_listening, self.on_listening = self.on_listening, None  # the first core only
                on_listening(urls)
        elif word == b"error":
            self.core_error = rest.decode("utf-8", "replace")
        elif word == b"stopping":
            self.stopping = True
            self._close_sockets()  # new connections are refused from now on

    def _reap(self, core: _CoreProcess) -> None:
        """Reap every child that exited: the core (its status kept), orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == core.pid:
                core.exit_status = status
            self._orphans.pop(pid, None)

    def _pause(self, delay: float, wake: int) -> bool:
        """Wait ``delay`` seconds before the next core; False if told to stop meanwhile."""
        deadline = time.monotonic() + delay
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            readable, _, _ = select.select([wake], [], [], left)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake, 512):
                        pass
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

    # -- the sockets ----------------------------------------------------------------------

    def _close_sockets(self) -> None:
        for sock in self.sockets or ():
            sock.close()

    def _remove_socket_file(self) -> None:
        path = self.config.socket
        if path and self.sockets is not None:
            self.sockets = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.sockets = None


def _pipe(fds: list[int], nonblocking: bool = True) -> tuple[int, int]:
    """A close-on-exec pipe whose ends are added to ``fds`` (their owner until handed on)."""
    read, write = os.pipe2(os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
    fds += [read, write]
    return read, write


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
