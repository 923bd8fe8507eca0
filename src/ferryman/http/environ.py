"""The request as the app sees it: the CGI-style environ block sent to session loaders.

Header names with characters outside ``[A-Za-z0-9-]`` are dropped, so that
``X_Foo`` cannot pose as ``X-Foo`` once both become ``HTTP_X_FOO``. Forwarded
headers (every ``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP`` and the other
client claims below) are believed only from a trusted proxy; from any other peer
they are dropped, so an app that trusts them (Werkzeug's ProxyFix, Django's
USE_X_FORWARDED_HOST and SECURE_PROXY_SSL_HEADER, Rails' remote_ip) cannot be
lied to.

The caches here are bounded in entries and in bytes: only short keys are cached,
so no client can pin memory by sending unique header names or hosts.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from .request import RequestHead

_VALID_NAME = re.compile(rb"[A-Za-z0-9-]+\Z")
#: Headers in which a client says who it is, how it came or where the app is mounted
#: (lower case), as proxies, load balancers and CDNs set them and frameworks read them.
#: Believed only from trusted proxies; from anyone else they are dropped before the app
#: sees them. Every ``X-Forwarded-*`` name is a claim too (see ``is_client_claim``).
CLIENT_CLAIMS = frozenset(
    [b"forwarded", b"x-real-ip", b"client-ip", b"x-client-ip", b"true-client-ip",
     b"cf-connecting-ip", b"fastly-client-ip", b"x-cluster-client-ip",
     b"x-original-forwarded-for", b"front-end-https", b"x-url-scheme", b"x-scheme",
     b"x-script-name", b"x-original-url", b"x-rewrite-url", b"x-original-host"]
)  # fmt: skip
_FORWARDED_PREFIX = b"x-forwarded-"
_CLAIM_KEYS = frozenset(b"HTTP_" + name.upper().replace(b"-", b"_") for name in CLIENT_CLAIMS)
_FORWARDED_KEY_PREFIX = b"HTTP_X_FORWARDED_"
_SPECIAL_KEYS = {b"CONTENT_TYPE": b"CONTENT_TYPE", b"CONTENT_LENGTH": b"CONTENT_LENGTH"}
#: Headers the core consumed: the body arrives de-chunked, 100-continue was answered.
_CONSUMED = frozenset([b"HTTP_TRANSFER_ENCODING", b"HTTP_EXPECT", b"CONTENT_LENGTH"])
#: Header name → environ key. Bounded: at most _CACHE_ENTRIES names of at most
#: _CACHE_KEY_BYTES bytes (about 100 KB in all); longer or later names are worked out
#: each time. Real clients send a few dozen distinct names.
#: name → (environ key or None, whether only a trusted proxy may send it)
_KEY_CACHE: dict[bytes, tuple[bytes | None, bool]] = {}
_CACHE_ENTRIES = 512
_CACHE_KEY_BYTES = 64
#: (Host, scheme) → (SERVER_NAME, SERVER_PORT): most requests name the same few hosts.
#: Bounded the same way (cleared when full).
_HOST_CACHE: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
_PROTOCOLS = {b"1.1": b"HTTP/1.1", b"1.0": b"HTTP/1.0"}


def header_entry(name: bytes) -> tuple[bytes | None, bool]:
    """(``HTTP_X_FOO`` for ``X-Foo`` or None for names that must be dropped, whether the
    header is a client claim only a trusted proxy may make)."""
    entry = _KEY_CACHE.get(name)
    if entry is not None:
        return entry
    key: bytes | None = None
    claim = False
    if _VALID_NAME.match(name):
        upper = name.upper().replace(b"-", b"_")
        key = _SPECIAL_KEYS.get(upper, b"HTTP_" + upper)
        claim = key in _CLAIM_KEYS or key.startswith(_FORWARDED_KEY_PREFIX)
    entry = (key, claim)
    if len(name) <= _CACHE_KEY_BYTES and len(_KEY_CACHE) < _CACHE_ENTRIES:
        _KEY_CACHE[name] = entry
    return entry


def header_key(name: bytes) -> bytes | None:
    """``HTTP_X_FOO`` for ``X-Foo``; None for names that must be dropped."""
    return header_entry(name)[0]


def is_client_claim(lower_name: bytes) -> bool:
    """Whether a header (name in lower case) is one only a trusted proxy may send."""
    return lower_name in CLIENT_CLAIMS or lower_name.startswith(_FORWARDED_PREFIX)


class BadTarget(ValueError):
    """The request target cannot be given to an app (e.g. it decodes to a NUL byte)."""


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(PATH_INFO, QUERY_STRING) from the request target, path percent-decoded."""
    # .find(), not `in`: CPython 3.11's bytes.__contains__ first tries the argument as an
    # int and builds (and drops) a TypeError: twice the time, on every request.
    if target[:1] == b"/" and target.find(b"%") < 0 and target.find(b"#") < 0:
        path, _, query = target.partition(b"?")  # the common case: nothing to decode
        return path, query
    hash_at = target.find(b"#")
    if hash_at >= 0:
        target = target[:hash_at]
    if target[:1] != b"/":
        if target == b"*":
            return b"*", b""
        # absolute-form (http://host/path?q): keep the path and query only
        scheme_end = target.find(b"://")
        if scheme_end < 0:
            raise BadTarget("request target is neither a path nor an absolute URL")
        authority_end = len(target)
        for stop in (b"/", b"?"):
            at = target.find(stop, scheme_end + 3)
            if 0 <= at < authority_end:
                authority_end = at
        target = target[authority_end:]
        if target[:1] != b"/":
            target = b"/" + target
    path, _, query = target.partition(b"?")
    if path.find(b"%") >= 0:
        path = unquote_to_bytes(path)
        if path.find(b"\0") >= 0:
            raise BadTarget("request path decodes to a NUL byte")
    return path, query


def split_host(host: bytes, default_port: bytes) -> tuple[bytes, bytes]:
    """(SERVER_NAME, SERVER_PORT) from a Host header value."""
    if host.startswith(b"["):
        end = host.find(b"]")
        if end > 0:
            rest = host[end + 1 :]
            return host[: end + 1], rest[1:] if rest.startswith(b":") else default_port
    name, sep, port = host.rpartition(b":")
    if sep and port.isdigit() and name.find(b":") < 0:
        return name, port
    return host, default_port


def build_environ(head: RequestHead, body_length: int) -> bytes:
    """The environ block: ``key NUL value NUL ...`` (see session_protocol)."""
    path, query = split_target(head.target)
    trusted = head.trusted
    fields: dict[bytes, bytes] = {}
    cache = _KEY_CACHE
    for name, value in head.headers:
        entry = cache.get(name)
        key, claim = entry if entry is not None else header_entry(name)
        if key is None or (claim and not trusted):
            continue
        if key in fields:
            fields[key] += (b"; " if key == b"HTTP_COOKIE" else b", ") + value
        else:
            fields[key] = value
    host = head.host
    if head.forwarded_host:  # only ever set from a trusted proxy
        host = fields[b"HTTP_HOST"] = head.forwarded_host
    scheme = head.scheme
    server_name, server_port = head.server_name, head.server_port
    if host:
        host_key = (host, scheme)
        found = _HOST_CACHE.get(host_key)
        if found is None:
            found = split_host(host, b"443" if scheme == b"https" else b"80")
            if len(host) <= _CACHE_KEY_BYTES:
                if len(_HOST_CACHE) >= _CACHE_ENTRIES:
                    _HOST_CACHE.clear()
                _HOST_CACHE[host_key] = found
        server_name, server_port = found
    version = head.version
    script_name = head.script_name
    if script_name:  # a prefix app (site.Site matched the prefix against this path)
        path = path[len(script_name) :]
        fields[b"SCRIPT_NAME"] = script_name
    parts = [
        b"REQUEST_METHOD", head.method,
        b"REQUEST_URI", head.target,
        b"PATH_INFO", path,
        b"QUERY_STRING", query,
        b"SERVER_PROTOCOL", _PROTOCOLS.get(version) or b"HTTP/" + version,
        b"SERVER_NAME", server_name,
        b"SERVER_PORT", server_port,
        b"REMOTE_ADDR", head.client_addr,
        b"REMOTE_PORT", head.peer_port,
        b"ferryman.url_scheme", scheme,
    ]  # fmt: skip
    consumed = _CONSUMED
    for key, value in fields.items():
        if key not in consumed:
            parts += (key, value)
    if body_length or b"CONTENT_LENGTH" in fields or b"HTTP_TRANSFER_ENCODING" in fields:
        parts += (b"CONTENT_LENGTH", str(body_length).encode())
    return b"\0".join(parts)
