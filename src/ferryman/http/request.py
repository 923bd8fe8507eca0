"""RequestHead: one request's head as the front parsed and checked it, built once.

Everything downstream reads it: the environ for session loaders, the request line
and headers for apps that speak HTTP, the access log. Who the client is, by which
scheme and for which host is worked out here, once per request: from the peer,
and — only when the peer is a trusted proxy — from its ``X-Forwarded-For``,
``X-Forwarded-Proto`` and ``X-Forwarded-Host`` headers.
"""

from __future__ import annotations

import ipaddress

from ..config import ProxyNetworks


def is_trusted(address: str, networks: ProxyNetworks) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(not isinstance(net, str) and ip in net for net in networks)


def forwarded_client(xff: bytes, networks: ProxyNetworks) -> bytes | None:
    """The client address in X-Forwarded-For: the rightmost hop that is not a trusted proxy."""
    hops = [h.strip() for h in xff.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, networks):
            return hop.encode("latin-1")
    return hops[0].encode("latin-1") if hops else None


class RequestHead:
    """The request line, the headers, and who sent them.

    ``client_addr``, ``scheme`` and ``forwarded_host`` are the peer's own (``peer_addr``,
    ``http``, none) unless the peer is a trusted proxy that says otherwise.
    """

    __slots__ = (
        "client_addr",
        "forwarded_host",
        "headers",
        "host",
        "method",
        "peer_addr",
        "peer_port",
        "scheme",
        "script_name",
        "server_name",
        "server_port",
        "target",
        "trusted",
        "version",
    )

    def __init__(  # noqa: PLR0917 - built once per request: positional calls are cheaper
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        host: bytes,
        peer_addr: bytes,
        peer_port: bytes,
        trusted: bool,
        server_name: bytes,
        server_port: bytes,
        scheme: bytes = b"http",
    ) -> None:
        self.method = method
        self.target = target
        #: b"1.1" or b"1.0".
        self.version = version
        #: As received (values trimmed), in order; trailers never among them.
        self.headers = headers
        #: The Host header's value (b"" when there was none).
        self.host = host
        self.peer_addr = peer_addr
        self.peer_port = peer_port
        #: The peer is a trusted proxy (--trusted-proxies, or a Unix socket).
        self.trusted = trusted
        #: The listening address, for requests without a Host.
        self.server_name = server_name
        self.server_port = server_port
        self.client_addr = peer_addr
        #: The connection's scheme, or the one a trusted proxy names.
        self.scheme = scheme
        #: The first X-Forwarded-Host from a trusted proxy (b"" otherwise).
        self.forwarded_host = b""
        #: The URL prefix of the app it goes to (site.Site), b"" for an app at /.
        self.script_name = b""

    def believe_proxy(self, networks: ProxyNetworks) -> None:
        """The peer is a trusted proxy: take the client, scheme and host it names."""
        forwarded_for = forwarded_proto = None
        for name, value in self.headers:
            if len(name) < 15 or name[:12].lower() != b"x-forwarded-":
                continue
            lower = name.lower()
            if lower == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif lower == b"x-forwarded-proto":
                forwarded_proto = forwarded_proto or value
            elif lower == b"x-forwarded-host" and not self.forwarded_host:
                self.forwarded_host = value.split(b",")[0].strip()
        if forwarded_for:
            self.client_addr = forwarded_client(forwarded_for, networks) or self.peer_addr
        if forwarded_proto:
            first = forwarded_proto.split(b",")[0].strip().lower()
            if first in (b"http", b"https"):
                self.scheme = first

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lower-case); for logging."""
        size = len(name)
        for key, value in self.headers:
            if len(key) == size and key.lower() == name:
                return value
        return None
