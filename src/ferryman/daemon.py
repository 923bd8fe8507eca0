"""Daemon mode and the pid file: ``--daemonize`` detaches the server from the terminal,
``--pid-file`` names it, and ``ferryman stop`` ends it.

``Daemon.detach()`` forks twice (a new session, no controlling terminal, stdio on
/dev/null; the log goes to ``--log-file``). The process that ran ``ferryman start``
waits on a pipe until the daemon says it listens (or fails), so that the shell sees
the outcome and the exit code, then returns at once with the server running.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from pathlib import Path

from .errors import AlreadyRunning

#: How long ``ferryman start --daemonize`` waits for the daemon to listen.
START_WAIT = 120.0
#: Linux pids fit in 7 digits (pid_max <= 2**22); more is not a pid.
MAX_PID_DIGITS = 10
#: The most the daemon says about how it started (one line).
MAX_WORD = 4096
POLL = 0.05


def ferryman_pid(pid: int) -> bool:
    """Whether ``pid`` is a running Ferryman server (not just any process with that pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _running(pid) and b"ferryman" in cmdline


def read_pid_file(path: Path) -> int | None:
    """The pid in a pid file, or None if there is none (no file, not a pid)."""
    try:
        with path.open("rb") as file:
            text = file.read(64).strip()  # a pid is a few digits: never read a whole file
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) <= MAX_PID_DIGITS else None


class PidFile:
    """``--pid-file``: written atomically once the server runs, removed when it exits."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self.written = False

    def check(self) -> None:
        """Refuse to start if the file names a Ferryman that is still running."""
        pid = read_pid_file(self.path)
        if pid is not None and pid != os.getpid() and ferryman_pid(pid):
            raise AlreadyRunning(
                f"invalid value {str(self.path)!r} for pid_file: Ferryman {pid} is running "
                f"with it (stop it with 'ferryman stop --pid-file {self.path}', or give "
                "another pid file)"
            )

    def write(self) -> None:
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            temp.write_text(f"{os.getpid()}\n")
            temp.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        self.written = True

    def remove(self) -> None:
        """Remove the file if it is still ours."""
        if self.written and read_pid_file(self.path) == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.written = False


class Daemon:
    """The two sides of ``--daemonize``: the starting process and the daemon."""

    def __init__(self) -> None:
        self._report: int | None = None  # the daemon's end of the pipe

    def detach(self) -> int | None:
        """Fork into the background. In the starting process: returns its exit code, once
        the daemon said how it went. In the daemon: returns None (carry on serving)."""
        read_end, write_end = os.pipe()
        child = os.fork()
        if child:
            os.close(write_end)
            try:
                return self._wait_for_word(read_end, child)
            finally:
                os.close(read_end)
        os.close(read_end)
        os.setsid()  # no controlling terminal, its own process group
        if os.fork():
            os._exit(0)  # the daemon is re-parented to init and can never get a terminal
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        self._report = write_end
        return None

    def _wait_for_word(self, read_end: int, child: int) -> int:
        os.waitpid(child, 0)  # the intermediate process exits at once
        deadline = time.monotonic() + START_WAIT
        data = b""
        # Bounded in time (a daemon stuck before it listens) and in bytes (one line).
        while len(data) < MAX_WORD:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                data = b"no word from the server within %d s" % START_WAIT
                break
            chunk = os.read(read_end, MAX_WORD)  # b"" once the daemon closed its end
            if not chunk:
                break
            data += chunk
            if b"\n" in data:
                break  # the word is one line
        text = data[:MAX_WORD].decode("utf-8", "replace").strip()
        if text.startswith("ok "):
            sys.stdout.write(f"Ferryman is running in the background: {text[3:]}\n")
            return 0
        sys.stderr.write(f"ferryman: {text or 'the server did not start'} (see the log file)\n")
        return 1

    @property
    def report_fd(self) -> int | None:
        """In the daemon: the pipe to the starting process (handed to the watchdog)."""
        return self._report

    def say(self, text: str) -> None:
        """In the daemon: tell the starting process (once) and let it go."""
        if self._report is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._report, text.encode() + b"\n")
        os.close(self._report)
        self._report = None


def stop(pid: int, timeout: float, force: bool) -> int:
    """SIGTERM to server ``pid`` and wait for it to exit: 0 when it did; 1 when it is still
    running after ``timeout`` (with ``force``: 1 only if SIGKILL did not end it either)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _gone_within(pid, timeout):
        return 0
    if not force:
        return 1
    # SIGKILL to the watchdog alone would leave its core (which then stops in its own
    # time, or never if it hangs) and the app processes: the whole tree goes. The tree is
    # read first (once the watchdog is gone, its descendants are re-parented); the
    # watchdog goes first, so that it starts no new core; each app process leads a
    # process group of its own, which goes with it (what the app started).
    tree = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(OSError):
            if os.getpgid(child) == child:
                os.killpg(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    while ferryman_pid(pid) or any(_running(child) for child in tree):
        if time.monotonic() > deadline:
            return 1
        time.sleep(POLL)
    return 0


#: How long ``ferryman stop --force`` waits for SIGKILL to take effect.
KILL_WAIT = 10.0
#: Most processes ``descendants`` reads (bounded: a fork bomb is not walked forever).
MAX_TREE = 4096


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), parents before their children."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < MAX_TREE:
        children = process_children(todo.pop(0))
        found += children
        todo += children
    return found[:MAX_TREE]


def process_children(pid: int) -> list[int]:
    """The children of ``pid`` (from /proc; none if it is gone)."""
    children: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_bytes().split()]
    return children


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return not state[state.rfind(b")") + 2 :].startswith(b"Z")


def _gone_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while ferryman_pid(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True
