"""Running real Ferryman servers for tests: start, wait for readiness, inspect, stop by PID.

Each server gets its own short temp directory as $TMPDIR (so its instance
directory and spooled bodies can be counted), binds 127.0.0.1 on a port the
kernel picks (``--port 0``), and is stopped by its PID at the end of the test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

APPS = Path(__file__).resolve().parent.parent / "apps"
STUB = APPS / "wsgi_stub"

_WITH_FD_LIMIT = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
_IGNORING = (
    "import os, signal, sys; [signal.signal(s, signal.SIG_IGN) for s in (%s)]; "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
_LISTENING = re.compile(r"Listening on (?:http://127\.0\.0\.1:(\d+)|unix:(\S+))")
_READY = re.compile(r"App (\d+) ready")


def process_children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def is_core(pid: int) -> bool:
    """Whether ``pid`` runs ``python -m ferryman start`` (a core; the watchdog runs
    ``ferryman.watchdog``, app processes their loader or command)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return argv[1:4] == [b"-m", b"ferryman", b"start"]


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def wait_until(predicate: object, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


class Server:
    """A running ``ferryman start`` process and its log."""

    def __init__(
        self,
        app_dir: Path | str = STUB,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        wait_ready: int = 1,
        fd_limit: int | None = None,
        cwd: Path | None = None,
        ignoring: Sequence[signal.Signals] = (),
    ) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="fm-", dir="/tmp"))
        self.env = dict(os.environ)
        self.env["TMPDIR"] = str(self.tmpdir)
        self.env.pop("PYTHONWARNINGS", None)
        # Every test server checks the pool's invariants after each change it makes.
        self.env["FERRYMAN_SELFCHECK"] = "1"
        if env:
            self.env.update(env)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        where = [] if "--socket" in args else ["--port", "0"]
        argv = [sys.executable, "-m", "ferryman", "start", str(app_dir), *where, *args]
        if fd_limit is not None:
            # Same PID: the limit is set, then the interpreter execs itself with ferryman.
            argv[1:1] = ["-c", _WITH_FD_LIMIT % (fd_limit, fd_limit)]
        if ignoring:
            # Started as a shell starts a background job: these signals ignored (kept
            # across exec, so the server and what it starts inherit them).
            argv[1:1] = ["-c", _IGNORING % "".join(f"{int(sig)}," for sig in ignoring)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, cwd=cwd
        )
        #: ``ferryman start`` is the watchdog; the core (``pid``) is its child.
        self.watchdog_pid = self.proc.pid
        self.pid = self.proc.pid  # the core's, once it listens
        self.app_pids: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0
        self.unix_socket = ""
        try:
            self._find_address(timeout=15)
            self.pid = self.find_core()
            for _ in range(wait_ready):
                self.wait_for_ready()
        except BaseException:
            self.close()
            raise

    def _find_address(self, timeout: float) -> None:
        """Where the server listens: from its "Listening on" log line, or, when its log
        level hides that line, from its instance directory's properties.json."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                for line in self.lines:
                    match = _LISTENING.search(line)
                    if match:
                        if match.group(1):
                            self.port = int(match.group(1))
                        else:
                            self.unix_socket = match.group(2)
                        return
            for properties in self.tmpdir.glob("ferryman.*/properties.json"):
                with contextlib.suppress(OSError, ValueError):
                    address = json.loads(properties.read_text())["addresses"][0]
                    if address.startswith("unix:"):
                        self.unix_socket = address[5:]
                    else:
                        self.port = int(address.rpartition(":")[2])
                    return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("the server never listened; log:\n" + self.log_text())
            time.sleep(0.02)

    def find_core(self, timeout: float = 15, not_pid: int = 0) -> int:
        """The core's pid: the watchdog's one live ``ferryman start`` child (other than
        ``not_pid``, the core that died, when a new one is awaited). The dead core's app
        processes are the watchdog's children too for a moment (it is their subreaper)
        until it kills them: they are not cores."""
        found: list[int] = []

        def one_core() -> bool:
            children = [
                p
                for p in process_children(self.watchdog_pid)
                if alive(p) and p != not_pid and is_core(p)
            ]
            found[:] = children
            return len(children) == 1

        if not wait_until(one_core, timeout):
            raise AssertionError(f"no single core under the watchdog: {found}\n{self.log_text()}")
        return found[0]

    # -- log --------------------------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                ready = _READY.search(line)
                if ready:
                    self.app_pids.add(int(ready.group(1)))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 10, start: int = 0
    ) -> re.Match[str]:
        """The first log line from index ``start`` on that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    index += 1
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matching {regex.pattern!r}; log:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(left, 0.1))

    def wait_for_ready(self, timeout: float = 15) -> int:
        """The PID of the next process that reports ready (counting from the last one seen)."""
        seen = getattr(self, "_ready_seen", 0)
        with self._cond:
            start = 0
            count = 0
            for i, line in enumerate(self.lines):
                if _READY.search(line):
                    count += 1
                    if count == seen:
                        start = i + 1
        match = self.wait_for_log(_READY, timeout, start=start if seen else 0)
        self._ready_seen = seen + 1
        return int(match.group(1))

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def mark(self) -> int:
        """A position in the log, for wait_for_log(start=...)."""
        with self._cond:
            return len(self.lines)

    # -- talking to it ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes]:
        status, _, body = self.request("GET", path, timeout=timeout)
        return status, body

    def get_at_once(self, path: str, count: int) -> tuple[list[tuple[int, bytes]], float]:
        """``count`` GETs of ``path`` sent together, each on its own connection: their
        (status, body) in the order they ended, and the seconds they took in all."""
        results: list[tuple[int, bytes]] = []
        threads = [
            threading.Thread(target=lambda: results.append(self.get(path))) for _ in range(count)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return results, time.monotonic() - started

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send raw bytes, read until the server closes the connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    # -- inspecting it --------------------------------------------------------------------------

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        """The core's resident memory in KiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def children(self) -> list[int]:
        return sorted(p for p in process_children(self.pid) if alive(p))

    def temp_entries(self) -> list[str]:
        """Everything under $TMPDIR except the instance directory's fixed parts."""
        found = []
        for root, dirs, files in os.walk(self.tmpdir):
            for name in dirs + files:
                found.append(os.path.relpath(os.path.join(root, name), self.tmpdir))
        return sorted(found)

    def resources(self) -> tuple[int, list[int], list[str]]:
        """Open fds, live child processes and files under $TMPDIR, right now."""
        return self.fd_count(), self.children(), self.temp_entries()

    def settled_resources(self, timeout: float = 5) -> tuple[int, list[int], list[str]]:
        """resources() once two readings 100 ms apart agree (closes may lag a response)."""
        deadline = time.monotonic() + timeout
        last = self.resources()
        while True:
            time.sleep(0.1)
            now = self.resources()
            if now == last or time.monotonic() > deadline:
                return now
            last = now

    def instance_dirs(self) -> list[Path]:
        return sorted(self.tmpdir.glob("ferryman.*"))

    # -- stopping it ------------------------------------------------------------------------------

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the server as a user would: its main process, the watchdog."""
        if self.proc.poll() is None:
            os.kill(self.watchdog_pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                "ferryman did not stop in time; log:\n" + self.log_text()
            ) from None

    def close(self) -> None:
        """Stop the server and anything it started, by PID; remove the temp directory."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.app_pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def serving(
    app_dir: Path | str = STUB,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: int = 1,
    fd_limit: int | None = None,
    cwd: Path | None = None,
    ignoring: Sequence[signal.Signals] = (),
) -> Iterator[Server]:
    server = Server(
        app_dir, args, env=env, wait_ready=wait_ready, fd_limit=fd_limit, cwd=cwd, ignoring=ignoring
    )
    try:
        yield server
    except BaseException:
        # The server's log beside the failure (pytest shows a failed test's output): what
        # the core saw is often the only clue to a failure seen once, in CI.
        print(f"--- the server's log (pid {server.pid}) ---\n{server.log_text()}")
        raise
    finally:
        server.close()


class Gates:
    """Files that /wait requests of the gate app block on until the test opens them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def open(self, name: str) -> None:
        (self.directory / name).touch()


GATE_APP = APPS / "wsgi_gate"


class Request(threading.Thread):
    """One GET in the background; keeps its status, body and completion order."""

    finished: list[Request] = []
    lock = threading.Lock()

    def __init__(self, server: Server, path: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.path = path
        self.status = 0
        self.body = b""
        self.start()

    def run(self) -> None:
        try:
            self.status, self.body = self.server.get(self.path, timeout=60)
        except OSError as exc:  # reported through status/body, not as a thread crash
            self.status, self.body = -1, repr(exc).encode()
        with Request.lock:
            Request.finished.append(self)

    @property
    def done(self) -> bool:
        return not self.is_alive()


def failed_start(*args: str, app_dir: Path | str = STUB) -> subprocess.CompletedProcess[str]:
    """``ferryman start`` that is expected to exit at once (bounded by a timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(app_dir), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def refused_start(*args: str, app_dir: Path | str = STUB) -> str:
    """``ferryman start`` with a bad setting: asserts exit code 2 and a single line on
    stderr, and returns that line."""
    result = failed_start(*args, app_dir=app_dir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def ferryman(
    server: Server, *args: str, timeout: float = 30, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A ferryman command run as the operator would, with the server's TMPDIR."""
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
