"""InstanceDir: the running server's directory under $TMPDIR (mode 0700), and the registry
of a user's running servers that status tools read.

An instance directory ``$TMPDIR/ferryman.NAME`` holds:

* ``properties.json``: pid, version, listen addresses, app root, start time, admin
  socket; written once the server listens (tools list only instances that have it);
* ``admin.sock``: the admin API (``admin.py``), mode 0600;
* ``readonly.password`` and ``admin.password`` (0600): the admin API's two accounts;
* ``apps/``: the app processes' Unix sockets.

The core creates it at start and removes it on a clean exit. A server that was
killed leaves its directory behind: tools ignore it (its pid is gone, or belongs to
a process that started later), and the next server to start removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: sockaddr_un.sun_path is 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH = 107
PREFIX = "ferryman."
PROPERTIES = "properties.json"
ADMIN_SOCKET = "admin.sock"
#: The admin API's accounts: user name → password file in the instance directory.
READ_ONLY_USER = "readonly"
ADMIN_USER = "admin"
PASSWORD_FILES = {READ_ONLY_USER: "readonly.password", ADMIN_USER: "admin.password"}
#: A directory without properties.json this old belongs to a server that died while
#: starting (a starting server writes it within seconds).
STALE_WITHOUT_PROPERTIES = 3600.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class InstanceDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.apps = path / "apps"
        self.admin_socket = path / ADMIN_SOCKET
        #: App sockets handed out so far: one count for every app's spawner, so that
        #: two apps never pick the same socket path.
        self._sockets = 0

    @property
    def name(self) -> str:
        return self.path.name.removeprefix(PREFIX)

    @classmethod
    def create(cls) -> InstanceDir:
        remove_stale_instances()
        path = Path(tempfile.mkdtemp(prefix=PREFIX))
        instance = cls(path)
        try:
            os.chmod(path, 0o700)
            instance.apps.mkdir(mode=0o700)
            longest = instance.app_socket(999999)
            if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
                raise ConfigError(
                    f"the temp directory {tempfile.gettempdir()!r} is too deep for Unix socket"
                    f" paths ({len(longest)} > {MAX_SOCKET_PATH} bytes): set TMPDIR to a"
                    " shorter directory"
                )
        except BaseException:
            instance.remove()
            raise
        return instance

    def app_socket(self, number: int) -> str:
        return str(self.apps / f"{number}.sock")

    def next_app_socket(self) -> str:
        """A socket path no spawn of this server used before."""
        self._sockets += 1
        return self.app_socket(self._sockets)

    def write_passwords(self, admin_password: str | None = None) -> dict[str, str]:
        """A random password per account (the admin one may be given), each in a 0600 file."""
        passwords = {
            READ_ONLY_USER: secrets.token_urlsafe(24),
            ADMIN_USER: admin_password or secrets.token_urlsafe(24),
        }
        for user, password in passwords.items():
            _write_private(self.path / PASSWORD_FILES[user], password + "\n")
        return passwords

    def write_properties(self, properties: dict[str, Any]) -> None:
        target = self.path / PROPERTIES
        temp = self.path / (PROPERTIES + ".new")
        temp.write_text(json.dumps(properties, indent=2) + "\n")
        temp.replace(target)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


# -- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """A running server as the tools find it."""

    path: Path
    properties: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name.removeprefix(PREFIX)

    @property
    def pid(self) -> int:
        return int(self.properties["pid"])

    @property
    def admin_socket(self) -> Path:
        return self.path / ADMIN_SOCKET

    def password(self, user: str) -> str | None:
        """The account's password, when this user may read its file."""
        try:
            return (self.path / PASSWORD_FILES[user]).read_text().strip()
        except OSError:
            return None

    def is_named(self, selector: str) -> bool:
        """Whether ``selector`` is its name, its core's pid or its watchdog's (the pid
        ``ferryman start`` runs as)."""
        watchdog = self.properties.get("watchdog_pid")
        return selector in (self.name, str(self.pid), str(watchdog))

    def listens_on(self, port: int) -> bool:
        return any(a.endswith(f":{port}") for a in self.properties.get("addresses", []))

    def describe(self) -> str:
        props = self.properties
        where = ", ".join(props.get("addresses", [])) or "?"
        return f"{self.name}  pid {self.pid}  {props.get('app_root', '?')}  {where}"


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None  # exited, not yet reaped: as good as gone
    return time.time() - uptime + int(fields[19]) / _CLK_TCK


def _is_running(properties: dict[str, Any]) -> bool:
    """Whether the server that wrote ``properties`` still runs: its pid exists and that
    process started before the server wrote the file (not a later one given the same pid)."""
    try:
        pid = int(properties["pid"])
        written = float(properties["started_at"])
    except (KeyError, TypeError, ValueError):
        return False
    started = _started_at(pid)
    return started is not None and started <= written + 2.0  # clock tick rounding


def _candidates(directory: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Instance directories of this user in ``directory``: (path, properties or None)."""
    found: list[tuple[Path, dict[str, Any] | None]] = []
    uid = os.getuid()
    try:
        entries = list(directory.glob(PREFIX + "*"))
    except OSError:
        return found
    for path in entries:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not path.is_dir() or path.is_symlink() or info.st_uid != uid:
            continue
        properties: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads((path / PROPERTIES).read_text())
            if isinstance(loaded, dict):
                properties = loaded
        found.append((path, properties))
    return found


def running_instances(directory: Path | None = None) -> list[Instance]:
    """This user's running servers, oldest first (stale directories are left out)."""
    where = Path(directory or tempfile.gettempdir())
    instances = [
        Instance(path, props)
        for path, props in _candidates(where)
        if props is not None and _is_running(props)
    ]
    return sorted(instances, key=lambda i: float(i.properties.get("started_at", 0)))


def remove_stale_instances(directory: Path | None = None) -> list[Path]:
    """Remove the directories of this user's servers that are gone; returns them."""
    where = Path(directory or tempfile.gettempdir())
    removed = []
    now = time.time()
    for path, props in _candidates(where):
        if props is None:
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime < STALE_WITHOUT_PROPERTIES:
                    continue  # perhaps a server that is starting right now
        elif _is_running(props):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class NoInstance(Exception):
    """No running server matches (the message says what there is instead)."""


def pick_instance(
    selector: str | None, directory: Path | None = None, *, port: int | None = None
) -> Instance:
    """The instance named by ``selector`` (its name, the core's pid or the pid ``ferryman
    start`` runs as: its watchdog's), or listening on ``port``, or the only one."""
    instances = running_instances(directory)
    where = directory or tempfile.gettempdir()
    if selector is not None or port is not None:
        for instance in instances:
            if (selector is None or instance.is_named(selector)) and (
                port is None or instance.listens_on(port)
            ):
                return instance
        listing = "".join(f"\n  {i.describe()}" for i in instances) or " (none is running)"
        wanted = repr(selector) if selector is not None else f"on port {port}"
        raise NoInstance(f"no Ferryman instance {wanted} in {where}; running:{listing}")
    if not instances:
        raise NoInstance(
            f"no Ferryman instance is running for this user (looked in {where}; a server "
            "started with another TMPDIR is found with the same TMPDIR)"
        )
    if len(instances) > 1:
        listing = "".join(f"\n  {i.describe()}" for i in instances)
        raise NoInstance(
            f"{len(instances)} Ferryman instances are running; pick one with --instance NAME, "
            f"--instance PID or --port PORT:{listing}"
        )
    return instances[0]
