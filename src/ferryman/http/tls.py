"""TLS termination: the server's ``ssl.SSLContext``, built from --ssl-certificate and
--ssl-certificate-key, and its reload on SIGHUP.

Which sockets speak TLS is decided here too (``speaks_tls``): with --ssl alone, every
TCP socket of the server; with --ssl-port, only the sockets on that port (the main port
stays plain HTTP). The handshake itself is the event loop's (the stdlib ``ssl`` module
over the loop's transport): the front hands each accepted socket of a TLS listener to
``connect_accepted_socket`` with ``Certificates.context``, once the first byte the
client sent (peeked at, not taken) is not the start of a plain HTTP request: that one
gets a plain-text 400 instead of a failed handshake's silent close.

A reload builds a whole new context and swaps it in only once the new pair loaded:
loading into the live context could leave it with the new certificate and the old key
when the key does not fit. Connections already open keep the context they were made with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Final

from ..config import Config
from ..errors import ConfigError
from .response import simple_response

log = logging.getLogger("ferryman")

#: The one protocol a TLS client may negotiate with ALPN (no HTTP/2 here).
ALPN_PROTOCOLS: Final = ["http/1.1"]

#: What a plain HTTP request to a TLS port is answered, in plain text, before the close
#: (as nginx does): the person who typed http:// learns why, instead of an empty reply.
PLAIN_HTTP_BODY: Final = b"Bad Request: a plain HTTP request to a port that speaks HTTPS.\n"
#: The first byte of a TLS connection: a handshake record.
_HANDSHAKE_RECORD: Final = 0x16


class TlsFileError(Exception):
    """A certificate or key file that cannot serve, and the setting that names it."""

    def __init__(self, setting: str, path: str, why: str) -> None:
        super().__init__(f"invalid value {path!r} for {setting}: {why}")
        self.setting = setting


class _Encrypted(Exception):
    """The key file asks for a passphrase (never prompted for: there may be no terminal)."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def server_context(certificate: str, key: str) -> ssl.SSLContext:
    """A server context with modern defaults (TLS 1.2 or newer, no compression, no
    renegotiation, ALPN http/1.1) and the certificate chain in ``certificate`` with the
    private key in ``key``. Raises ``TlsFileError`` naming the setting at fault."""
    # A server context as create_default_context(Purpose.CLIENT_AUTH) makes it, without
    # what a server that asks for no client certificate does not need: the system's CA
    # store (memory, at each reload) and SSLKEYLOGFILE (session keys written to a file).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    # Compression opens CRIME; renegotiation started by a client costs the server a
    # handshake for nothing.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    for setting, path in (("ssl_certificate", certificate), ("ssl_certificate_key", key)):
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise TlsFileError(setting, path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(certificate, key, password=_no_passphrase)
    except _Encrypted:
        raise TlsFileError(
            "ssl_certificate_key",
            key,
            "the key is protected by a passphrase, which Ferryman cannot ask for; "
            "store it unencrypted (e.g. openssl pkey -in KEY -out KEY.plain) with mode 0600",
        ) from None
    except ssl.SSLError as exc:
        raise _load_error(certificate, key, exc) from None
    return context


def _load_error(certificate: str, key: str, exc: ssl.SSLError) -> TlsFileError:
    """Which file ``load_cert_chain`` failed on, as far as OpenSSL's reason tells."""
    # (Through getattr: the stubs say str, but it is None for some errors, and compiled
    # code would check the stubs' word.)
    found = getattr(exc, "reason", None)
    reason = found.upper() if isinstance(found, str) else ""
    if "MISMATCH" in reason:
        return TlsFileError(
            "ssl_certificate_key", key, f"the key does not belong to the certificate {certificate}"
        )
    # The certificate is read first: a PEM problem in it is reported before the key is read.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(certificate)
    except (ssl.SSLError, OSError, ValueError):
        return TlsFileError(
            "ssl_certificate", certificate, "it is not a PEM certificate (chain) OpenSSL can load"
        )
    return TlsFileError("ssl_certificate_key", key, f"it is not a PEM private key ({exc})")


def check(config: Config) -> None:
    """At start: with --ssl, the certificate and key load (else ConfigError, exit 2)."""
    if config.ssl:
        context_for(config)


def context_for(config: Config) -> ssl.SSLContext:
    """``config``'s server context; the error names where the setting came from."""
    assert config.ssl_certificate is not None and config.ssl_certificate_key is not None
    try:
        return server_context(config.ssl_certificate, config.ssl_certificate_key)
    except TlsFileError as exc:
        raise ConfigError(f"{exc} (from {config.origin(exc.setting)})") from None


def speaks_tls(config: Config, sock: socket.socket) -> bool:
    """Whether the listening socket ``sock`` serves TLS (--ssl, and --ssl-port)."""
    if not config.ssl or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    port = config.ssl_port
    return port is None or sock.getsockname()[1] == port


class Certificates:
    """The live server context, and its reload from the same files (SIGHUP)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.context: ssl.SSLContext = context_for(config)

    def reload(self) -> bool:
        """Load the certificate and key again; new connections get them. On failure the
        old pair stays in use and one error says why. Returns whether it loaded."""
        config = self.config
        try:
            context = context_for(config)
        except ConfigError as exc:
            log.error("TLS certificate not reloaded, the previous one stays in use: %s", exc)
            return False
        self.context = context
        log.info(
            "Reloaded the TLS certificate %s and key %s",
            config.ssl_certificate,
            config.ssl_certificate_key,
        )
        return True


# -- the first byte of a connection ---------------------------------------------------------


async def readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until ``fd`` (a socket no transport owns yet) has bytes to read, or its end."""
    waiter: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_reader(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def first_byte(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float) -> int:
    """The first byte the client sends on ``sock``, left in place for the handshake (-1:
    it closed without a byte). Raises TimeoutError after ``timeout`` seconds of silence,
    OSError if the connection broke; the caller closes ``sock`` then."""
    await asyncio.wait_for(readable(loop, sock.fileno()), timeout)
    data = sock.recv(1, socket.MSG_PEEK)
    return data[0] if data else -1


def is_plain_http(first: int) -> bool:
    """Whether a connection that starts with ``first`` is plain HTTP (a method's first
    letter) rather than TLS (a handshake record; anything else goes to the handshake,
    which refuses it)."""
    return first != _HANDSHAKE_RECORD and 0x41 <= first <= 0x5A  # A-Z


def answer_plain_http(sock: socket.socket) -> None:
    """Say 400 in plain text to a plain HTTP request on a TLS port (best effort; the
    caller closes the socket)."""
    with contextlib.suppress(OSError):
        # What it sent is read first: a close with unread input would send a reset, which
        # can destroy the answer before the client reads it.
        sock.recv(65536)
        sock.send(simple_response(400, PLAIN_HTTP_BODY, close=True))
