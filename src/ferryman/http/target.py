"""Request targets: the four forms of RFC 9112 §3.2, checked, and reduced to origin-form.

Rules the code keeps:
1. origin-form (``/path?query``) is the common case and passes untouched.
2. absolute-form (``http://host:port/path?query``) is accepted as RFC 9112 §3.2.2
   requires of servers: only ``http`` and ``https``, a host that is a registered name,
   an IPv4 address or a bracketed IPv6 literal, an optional numeric port, no userinfo.
   It is reduced to origin-form, and its authority replaces the ``Host`` header, so
   that apps only ever see origin-form and one host.
3. asterisk-form (``*``) is for ``OPTIONS`` only.
4. authority-form (``host:port``) is for ``CONNECT`` only, which Ferryman, not being a
   forward proxy, does not implement.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_ABSOLUTE = re.compile(
    rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    rb"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)"
    rb"(?::(?P<port>[0-9]{0,5}))?"
    rb"(?P<rest>[/?].*)?",
    re.DOTALL,
)
_HTTP_SCHEMES = frozenset([b"http", b"https"])


class TargetError(ValueError):
    """The request target is not one Ferryman can serve; ``str()`` says why (for a 400)."""


def absolute_to_origin(target: bytes) -> tuple[bytes, bytes]:
    """(origin-form target, authority) for an absolute-form ``target``; TargetError if it
    is not a valid http(s) URI."""
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise TargetError("the request target is not a path or a valid absolute URI")
    if match.group("scheme").lower() not in _HTTP_SCHEMES:
        raise TargetError("the request target's scheme must be http or https")
    port = match.group("port")  # may be empty: "http://host:/" is "http://host/"
    if port and int(port) > 65535:
        raise TargetError("the request target has an invalid port")
    rest = match.group("rest") or b""
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    authority = match.group("host") + (b":" + port if port else b"")
    return rest, authority


def under(path: bytes, prefix: bytes) -> bool:
    """Whether the raw (percent-encoded) ``path`` is ``prefix`` or lies below it, at a
    segment boundary: ``/api`` takes ``/api`` and ``/api/x``, not ``/apix``. A client
    may percent-encode the prefix (``/%61pi``): compared a segment at a time, decoded,
    so that an encoded ``/`` (``/api%2Fx``) is never a boundary. The app then gets the
    raw segments after the prefix's (Rack's PATH_INFO), and a decoded path that starts
    with the prefix (WSGI's)."""
    if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == 47):
        return True  # 47: "/"
    if path.find(b"%") < 0:
        return False
    wanted = prefix.split(b"/")[1:]
    parts = path.split(b"/", len(wanted) + 1)
    if len(parts) < len(wanted) + 1:
        return False
    return all(
        unquote_to_bytes(raw) == segment for raw, segment in zip(parts[1:], wanted, strict=False)
    )


def path_of(target: bytes) -> bytes:
    """The raw path of an origin-form target (the front made every other form one)."""
    end = len(target)
    for stop in (b"?", b"#"):
        at = target.find(stop)
        if 0 <= at < end:
            end = at
    return target[:end]
