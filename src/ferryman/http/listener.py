"""Listener: a listening socket and its accept loop.

Ferryman accepts connections itself rather than through the event loop's server,
for one reason: running out of file descriptors must be loud. The loop's own
server (libuv) meets EMFILE by accepting and closing the waiting connections
without a word, so clients see resets and the operator sees nothing. Here an
accept that fails for lack of descriptors or memory is logged (an ``Alert``, with
the limit), counted, and accepting pauses for ``ACCEPT_BACKOFF`` seconds, during
which new connections wait in the listen backlog instead of being dropped.

The listener owns its socket from ``open_*`` to ``close()``; each accepted socket
is owned by the transport it is handed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import pwd
import resource
import socket
import stat
from collections.abc import Callable

from ..alerts import Alert
from ..config import Config
from ..errors import ConfigError

log = logging.getLogger("ferryman")

#: Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024
#: Connections accepted per wake-up, so that one busy listener cannot starve the loop.
ACCEPTS_PER_WAKEUP = 32
#: Seconds accepting pauses after it failed for lack of descriptors or memory.
ACCEPT_BACKOFF = 0.5
_OUT_OF_RESOURCES = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
_TRANSIENT = frozenset([errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR])

#: Logged (throttled) when accept or an upstream connect runs out of file descriptors.
FD_ALERT_SUMMARY = "Out of file descriptors %d more time(s) since the last report"


def fd_limit_text() -> str:
    """'limit N, M open' for the current process, for the log."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        return f"limit {soft}, {len(os.listdir('/proc/self/fd'))} open"
    except OSError:  # listing needs a descriptor too
        return f"limit {soft}, all in use"


class Listener:
    """One listening socket; calls ``on_connection(sock)`` for every accepted socket."""

    def __init__(
        self,
        sock: socket.socket,
        on_connection: Callable[[socket.socket], None],
        fd_alert: Alert,
    ) -> None:
        self.sock = sock
        self.on_connection = on_connection
        self.fd_alert = fd_alert
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._resume: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    @property
    def tcp(self) -> bool:
        return self.sock.family in (socket.AF_INET, socket.AF_INET6)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self.sock.accept()
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    return
                self._pause(exc)
                return
            try:
                conn.setblocking(False)
                if self.tcp:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                conn.close()  # the peer is already gone
                continue
            self.on_connection(conn)

    def _pause(self, exc: OSError) -> None:
        """Accepting failed: stop for a moment; the connections wait in the backlog."""
        if exc.errno in _OUT_OF_RESOURCES:
            self.fd_alert.fire(
                self.loop.time(),
                "Cannot accept connections: %s (%s). New connections wait in the backlog; "
                "accepting is retried every %gs. Raise the limit (ulimit -n, or LimitNOFILE= "
                "in a systemd unit) or lower the load.",
                os.strerror(exc.errno or 0),
                fd_limit_text(),
                ACCEPT_BACKOFF,
            )
        else:
            log.error("Cannot accept connections: %s; retrying in %gs", exc, ACCEPT_BACKOFF)
        self.loop.remove_reader(self.sock.fileno())
        self._resume = self.loop.call_later(ACCEPT_BACKOFF, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._accept()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def open_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (e.g. localhost: ::1 and
    127.0.0.1); port 0 picks a free port, the same for all when possible."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        seen: set[tuple[int, object]] = set()
        for family, kind, proto, _, resolved in infos:
            if (family, resolved[0]) in seen:
                continue
            seen.add((family, resolved[0]))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            address = resolved
            if port == 0 and len(socks) > 1:
                address = (resolved[0], socks[0].getsockname()[1], *resolved[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def open_unix(path: str, mode: int = 0o660, owner: tuple[int, int] | None = None) -> socket.socket:
    """A listening Unix socket at ``path`` with ``mode`` and ``owner`` (uid, gid; -1 keeps
    one), set before it listens, so that no one else can connect in between; a stale
    socket file left there is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode) and not _in_use(path):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        try:
            os.chmod(path, mode)
            if owner is not None:
                os.chown(path, *owner)
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
    except BaseException:
        sock.close()
        raise
    return sock


def owner_ids(owner: str) -> tuple[int, int]:
    """(uid, gid) for 'USER', 'USER:GROUP' or ':GROUP' (-1: unchanged)."""
    user, _, group = owner.partition(":")
    uid = pwd.getpwnam(user).pw_uid if user else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    return uid, gid


def _in_use(path: str) -> bool:
    """Whether a server answers on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def open_for(config: Config) -> list[socket.socket]:
    """The listening sockets ``config`` asks for (``socket``, or ``address`` and ``port``;
    then those of ``ssl_port``, which ``http.tls.speaks_tls`` tells apart).

    A value that cannot work (no such host, not an address of this machine, a
    socket_owner we may not give the socket to) raises ConfigError naming the setting;
    any other failure (the port is taken) raises OSError.
    """
    # The HTTPS port (--ssl-port) first: a main port 0 then cannot land on it.
    tls = _open_ssl_port(config)
    try:
        return [*_open_main(config), *tls]
    except BaseException:
        for sock in tls:
            sock.close()
        raise


def _open_ssl_port(config: Config) -> list[socket.socket]:
    """The sockets of --ssl-port, on ``address`` (none without it); an OSError says which
    port it was about."""
    if not config.ssl or config.ssl_port is None:
        return []
    try:
        return _open_address(config, config.ssl_port)
    except ConfigError:
        raise
    except OSError as exc:
        raise OSError(
            exc.errno, f"{exc.strerror or exc} (on the ssl_port, {config.ssl_port})"
        ) from None


def _open_main(config: Config) -> list[socket.socket]:
    if config.socket:
        owner = owner_ids(config.socket_owner) if config.socket_owner else None
        try:
            return [open_unix(config.socket, config.socket_mode, owner)]
        except OSError as exc:
            if config.socket_owner and exc.errno == errno.EPERM:
                raise ConfigError(
                    f"invalid value {config.socket_owner!r} for socket_owner (from "
                    f"{config.origin('socket_owner')}): cannot give {config.socket} to it: "
                    f"{exc.strerror} (changing the user needs root; a group you belong to "
                    "works)"
                ) from None
            raise
    return _open_address(config, config.port)


def _open_address(config: Config, port: int) -> list[socket.socket]:
    try:
        return open_tcp(config.address, port)
    except OSError as exc:
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            # The value itself is wrong (no such host, not an address of this machine):
            # a configuration error like any other (exit code 2).
            raise ConfigError(
                f"invalid value {config.address!r} for address (from "
                f"{config.origin('address')}): must be an address of this machine or a "
                f"host name that resolves to one; {exc.strerror or exc}"
            ) from None
        raise


def listen_target(config: Config) -> str:
    """Where ``config`` listens, for messages."""
    return f"unix:{config.socket}" if config.socket else f"{config.address}:{config.port}"
