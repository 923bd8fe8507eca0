"""Static files served by the core: which file a request names, its response head, and
the sending of its bytes to the client.

``StaticFiles`` holds an app's mounts, built once at start: its ``public/``
directory at ``/`` (Passenger's convention: a file that is not there goes to
the app) and each ``--static-dir URL=DIR`` (authoritative: under URL the core
answers alone, 404 for a missing file, 405 for a method other than GET/HEAD).
``Exchange.start`` asks it after the core's own local routes and before the
pool checkout; it answers with a ``StaticReply`` (a head, a small body or an
open file) or None (the app's turn).

Safety. A target is served only if every segment, once percent-decoded, is a
plain name: no empty, ``.`` or ``..`` segment, no hidden names (``.git``,
``.env``; ``.well-known`` is allowed), no ``/``, ``\\``, NUL or control character
coming from an escape, valid UTF-8 only (so the overlong ``%c0%ae`` is refused).
The file opened is then located by the kernel (``/proc/self/fd``, so a symlink
swapped after a check cannot slip through) and must lie inside the mount's
directory, itself resolved at that moment (a deploy may switch a symlink to a new
release): a symlink pointing outside (file or directory) is not followed out.
Only regular files are served: checked with stat before the open and fstat after
it, and opened with O_NONBLOCK (a FIFO must not hang the loop).

Blocking calls on the loop. Opening and stat-ing happen on the event loop: they
are metadata operations on a local directory, answered from the kernel's
caches for files that are served often; a thread hop would cost more than
they do. The bytes are never read whole: ``FileSender`` moves them with
``os.sendfile`` straight from the page cache to the socket, or (TLS, or a
transport without a socket) in bounded chunks, always with back-pressure.

``FileSender`` owns the open file from the moment the reply is made until the
exchange ends (sent, client gone, connection aborted, server stopping):
``close`` is the one place it is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mimetypes
import os
import re
import stat
from collections.abc import Callable, Sequence
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Final
from urllib.parse import unquote_to_bytes

from .request import RequestHead
from .response import DATES, reason, simple_head

log = logging.getLogger("ferryman")

#: Far-future caching for names that carry a content hash (they change name when they change).
IMMUTABLE: Final = b"Cache-Control: public, max-age=31536000, immutable\r\n"
#: Anything else may change under the same name: caches revalidate (a cheap 304).
REVALIDATE: Final = b"Cache-Control: public, max-age=0, must-revalidate\r\n"
#: A hex hash of 8 characters or more as a dotted part of the name: app.3f2a9c1b.css, Django
#: ManifestStaticFilesStorage's base.6b517d0d5813.css.
_FINGERPRINT: Final = re.compile(rb"\.[0-9a-fA-F]{8,}\.")
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_GET_HEAD: Final = frozenset([b"GET", b"HEAD"])
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
#: Precompressed variants, best first: (encoding token, file suffix).
_VARIANTS: Final = ((b"br", b".br"), (b"gzip", b".gz"))
#: Bytes copied through the transport when the socket is full (sendfile said EAGAIN): the
#: transport then tells us, through resume_writing, when the socket has room again.
NUDGE_CHUNK: Final = 64 * 1024
#: Bytes per write when sendfile cannot be used (TLS): the transport's own buffer bounds it.
COPY_CHUNK: Final = 256 * 1024
#: Bytes one turn of the loop sends to one client before letting the others run.
TURN_BUDGET: Final = 8 * 1024 * 1024
#: Content types by file extension, worked out once each: a bounded number of entries,
#: each key at most a file name long (only files that exist get here).
_TYPES: dict[bytes, bytes] = {}
_TYPES_LIMIT: Final = 256
_ENCODED_TYPES: Final = {
    "gzip": b"application/gzip",
    "br": b"application/x-brotli",
    "bzip2": b"application/x-bzip2",
    "xz": b"application/x-xz",
    "compress": b"application/x-compress",
}
_TEXT_TYPES: Final = frozenset(
    [b"application/javascript", b"application/json", b"application/xml", b"image/svg+xml",
     b"application/manifest+json"]
)  # fmt: skip
_NOT_FOUND: Final = b"Not Found\n"
#: The file a directory's URL ("/docs/") is served from.
INDEX: Final = b"index.html"
_OUT_OF_FDS: Final = frozenset([errno.EMFILE, errno.ENFILE])


def content_type(name: bytes) -> bytes:
    """The Content-Type value for a file name (``; charset=utf-8`` for text)."""
    dot = name.rfind(b".")
    ext = name[dot:].lower() if dot > 0 else b""
    known = _TYPES.get(ext)
    if known is not None:
        return known
    guessed, encoding = mimetypes.guess_type("x" + ext.decode("latin-1"), strict=False)
    if encoding is not None:
        value = _ENCODED_TYPES.get(encoding, b"application/octet-stream")
    elif guessed is None:
        value = b"application/octet-stream"
    else:
        value = guessed.encode()
        if value.startswith(b"text/") or value in _TEXT_TYPES:
            value += b"; charset=utf-8"
    if len(_TYPES) < _TYPES_LIMIT:
        _TYPES[ext] = value
    return value


def safe_relative(rest: bytes) -> bytes | None:
    """The file path (relative, bytes) that a target's path names under a mount, or None
    when it is not a plain file name (see the module's Safety)."""
    if not rest.startswith(b"/") or _BAD_ESCAPE.search(rest) is not None:
        return None
    parts = []
    for raw in rest[1:].split(b"/"):
        part = _unquote(raw) if b"%" in raw else raw
        if (
            not part
            or (part[0] == 46 and part != b".well-known")  # ".", "..", ".git", ".env"
            or b"/" in part
            or b"\\" in part
            or any(c < 32 or c == 127 for c in part)
        ):
            return None
        try:
            part.decode("utf-8")
        except UnicodeDecodeError:
            return None
        parts.append(part)
    return b"/".join(parts)


def _unquote(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    size = len(raw)
    while i < size:
        c = raw[i]
        if c == 37 and i + 2 < size and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


class OpenFile:
    """An open regular file and what the head says about it; closed by its owner."""

    __slots__ = ("fd", "length", "offset", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        #: The part of it to send.
        self.offset = 0
        self.length = size

    def close(self) -> None:
        fd = self.fd
        if fd >= 0:
            self.fd = -1
            os.close(fd)


class StaticReply:
    """The core's answer from a static directory: the head (status line and header lines,
    without Connection and the blank line), and a small body or a file to send."""

    __slots__ = ("body", "file", "head", "status")

    def __init__(self, status: int, head: bytes, body: bytes, file: OpenFile | None) -> None:
        self.status = status
        self.head = head
        self.body = body
        self.file = file


def _simple(status: int, body: bytes, extra: bytes = b"") -> StaticReply:
    return StaticReply(status, simple_head(status, len(body), headers=extra), body, None)


class StaticMount:
    """A URL prefix served from a directory."""

    __slots__ = ("authoritative", "directory", "prefix", "root", "segments")

    def __init__(self, url_prefix: str, directory: Path | str, *, authoritative: bool) -> None:
        #: "" for "/"; otherwise "/static" (no trailing slash).
        self.prefix = url_prefix.rstrip("/").encode()
        #: Its segments ("/static/v2": static, v2), to match a path that encodes them.
        self.segments = self.prefix.split(b"/")[1:]
        self.directory = Path(directory)
        #: The directory's absolute path, symlinks not resolved: they are resolved at each
        #: request, so that a deploy that switches a symlink (a "current" release) serves
        #: the new release's files, and a directory made after the start is found.
        self.root = os.fsencode(os.path.abspath(directory))
        #: Under the prefix the core answers alone (404, 405); else misses go to the app.
        self.authoritative = authoritative

    def rest_of(self, path: bytes) -> bytes | None:
        """The part of ``path`` under this mount ("/x/y"), or None if it is not under it."""
        prefix = self.prefix
        if not prefix:
            return path
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if not rest or rest[0] == 47:
                return rest or b"/"
        if path.find(b"%") < 0:
            return None
        # The client percent-encoded part of the prefix (/st%61tic/x): the same mount, as
        # the site routes on the decoded path; compared a segment at a time, so that an
        # encoded "/" never counts as a boundary.
        count = len(self.segments)
        parts = path.split(b"/", count + 1)
        if len(parts) < count + 1:
            return None
        for raw, wanted in zip(parts[1 : count + 1], self.segments, strict=True):
            if unquote_to_bytes(raw) != wanted:
                return None
        return b"/" + parts[count + 1] if len(parts) > count + 1 else b"/"

    def open(self, relative: bytes) -> tuple[OpenFile, os.stat_result] | None:
        """The regular file at ``relative`` inside the mount, opened, or None."""
        root = self.root
        path = root + b"/" + relative
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None  # missing, a dangling link, no permission, a loop: not served
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)  # the caller looks for its index.html
        # Only regular files are opened: a link to a device or a FIFO is not even opened
        # (the check after the open is what makes it safe; this spares the side effects
        # an open of some devices has).
        if not stat.S_ISREG(mode):
            return None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in _OUT_OF_FDS:
                raise  # not the file's fault: the caller answers 503
            return None  # missing, a dangling link, no permission, a loop: not served
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                return None
            # Where the open file really is (the kernel's word for this fd): a symlink
            # swapped between a check of the path and the open cannot slip through.
            real = os.readlink(b"/proc/self/fd/%d" % fd)
            inside = os.path.realpath(root).rstrip(b"/") + b"/"
            if not real.startswith(inside):  # a symlink out of the directory
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return OpenFile(fd, info.st_size), info

    def has_index(self, relative: bytes) -> bool:
        """Whether the directory at ``relative`` has an index.html that would be served."""
        try:
            found = self.open(relative + b"/" + INDEX)
        except OSError:
            return False
        if found is None:
            return False
        found[0].close()
        return True


class StaticFiles:
    """An app's static directories (``mounts``, built once; asked for every request)."""

    def __init__(self, mounts: Sequence[StaticMount]) -> None:
        # The longest prefix first; at equal length the authoritative one.
        self.mounts = sorted(mounts, key=lambda m: (-len(m.prefix), not m.authoritative))

    @classmethod
    def for_app(
        cls,
        root: Path,
        static_dirs: Sequence[tuple[str, str]],
        app_prefix: str = "/",
        *,
        public: bool = True,
    ) -> StaticFiles | None:
        """The mounts of the app in ``root``, mounted at ``app_prefix``: its ``public/``
        directory if it has one, and each ``--static-dir`` (DIR relative to the app's
        directory, URL below the app's prefix). None when none."""
        mounts = []
        base = app_prefix.rstrip("/")
        for given_url, directory in static_dirs:
            url = base + given_url
            path = root / directory
            if not path.is_dir():
                log.warning(
                    "--static-dir %s=%s: %s is not a directory (yet): %s answers 404 until it is",
                    url,
                    directory,
                    path,
                    url,
                )
            mounts.append(StaticMount(url, path, authoritative=True))
        if public and (root / "public").is_dir():
            mounts.append(StaticMount(base or "/", root / "public", authoritative=False))
        return cls(mounts) if mounts else None

    def answer(self, head: RequestHead) -> StaticReply | None:
        """The core's reply for ``head`` from a static directory, or None (the app's turn)."""
        target = head.target
        query = target.find(b"?")
        path = target[:query] if query >= 0 else target
        method = head.method
        for mount in self.mounts:
            rest = mount.rest_of(path)
            if rest is None:
                continue
            authoritative = mount.authoritative
            if not authoritative and method not in _GET_HEAD:
                continue  # public/ serves GET and HEAD; everything else is the app's
            relative = safe_relative(rest)
            if relative is None and rest[-1:] == b"/":
                # A directory's URL: its index.html (nginx's index; Passenger's public/).
                parent = safe_relative(rest[:-1]) if len(rest) > 1 else b""
                if parent is not None:
                    relative = parent + b"/" + INDEX if parent else INDEX
            try:
                found = mount.open(relative) if relative is not None else None
            except IsADirectoryError:
                # A directory named without its "/": to its URL with one if it has an
                # index.html (where the page's relative links work), else a miss.
                assert relative is not None
                if method in _GET_HEAD and mount.has_index(relative):
                    location = path + b"/" + (target[query:] if query >= 0 else b"")
                    return _simple(301, b"Moved Permanently\n", b"Location: %s\r\n" % location)
                found = None
            except OSError:  # out of file descriptors (the listener's alert tells of it)
                return _simple(503, b"Service Unavailable: no file descriptor left.\n")
            if found is None or relative is None:
                if authoritative:
                    return _simple(404, _NOT_FOUND)
                continue
            file, info = found
            if method not in _GET_HEAD:
                file.close()
                return _simple(405, b"Method Not Allowed\n", b"Allow: GET, HEAD\r\n")
            try:
                return _file_reply(head, mount, relative, file, info)
            except BaseException:
                file.close()
                raise
        return None


def _header_values(head: RequestHead) -> dict[bytes, bytes]:
    wanted = (b"accept-encoding", b"if-none-match", b"if-modified-since", b"range", b"if-range")
    found: dict[bytes, bytes] = {}
    for name, value in head.headers:
        lower = name.lower()
        if lower in wanted:
            found[lower] = found[lower] + b", " + value if lower in found else value
    return found


def accepted_encodings(value: bytes) -> set[bytes]:
    """The content codings an Accept-Encoding value accepts (q > 0), lower-cased; ``*``
    stands for any."""
    accepted: set[bytes] = set()
    refused: set[bytes] = set()
    for item in value.lower().split(b","):
        token, _, params = item.partition(b";")
        token = token.strip()
        if not token:
            continue
        q = 1.0
        for param in params.split(b";"):
            key, _, number = param.partition(b"=")
            if key.strip() == b"q":
                try:
                    q = float(number.strip())
                except ValueError:
                    q = 0.0
        (accepted if q > 0 else refused).add(token)
    if b"*" in accepted:
        accepted.update(t for t, _ in _VARIANTS if t not in refused)
    return accepted


def _etag(info: os.stat_result, suffix: bytes) -> bytes:
    # Size and modification time only: the same file deployed to several instances
    # behind a balancer (rsync, an image) gets the same ETag on each, so revalidations
    # and If-Range resumes work whichever instance answers. The inode would differ.
    return b'"%x-%x%s"' % (info.st_size, info.st_mtime_ns, suffix)


def _etag_matches(header: bytes, etag: bytes) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2)."""
    if header.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in header.split(b","))


def _not_modified_since(header: bytes, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(header.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(mtime) <= since


def parse_range(value: bytes, size: int) -> tuple[int, int] | bool | None:
    """A single byte range as (first, last); False when unsatisfiable (416); None when the
    header is to be ignored (not bytes, malformed, several ranges: the whole file)."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.strip().partition(b"-")
    if not dash:
        return None
    first = first.strip()
    last = last.strip()
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return (max(0, size - suffix), size - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored (RFC 9110 14.1.1)
    if start >= size:
        return False
    return (start, min(int(last), size - 1) if last else size - 1)


def _file_reply(
    head: RequestHead, mount: StaticMount, relative: bytes, file: OpenFile, info: os.stat_result
) -> StaticReply:
    headers = _header_values(head)
    name = relative[relative.rfind(b"/") + 1 :]
    encoding = b""
    suffix = b""
    vary = False
    accept = headers.get(b"accept-encoding")
    accepted = accepted_encodings(accept) if accept is not None else set()
    for token, ending in _VARIANTS:
        variant_path = mount.root + b"/" + relative + ending
        if token in accepted and not encoding:
            try:
                variant = mount.open(relative + ending)
            except OSError:  # out of file descriptors: the file already open will do
                variant = None
            if variant is not None:
                file.close()
                file, info = variant
                encoding = token
                suffix = b"-" + token
                vary = True
                continue
        if not vary and os.path.isfile(variant_path):
            vary = True  # the client could get another representation: caches must know
    etag = _etag(info, suffix)
    mtime = info.st_mtime
    modified = formatdate(mtime, usegmt=True).encode()
    lines = [
        b"",  # the status line, once known
        DATES.lines(),
        b"ETag: " + etag + b"\r\n",
        b"Last-Modified: " + modified + b"\r\n",
        IMMUTABLE if _FINGERPRINT.search(name) is not None else REVALIDATE,
    ]
    if vary:
        lines.append(b"Vary: Accept-Encoding\r\n")
    inm = headers.get(b"if-none-match")
    ims = headers.get(b"if-modified-since")
    if (inm is not None and _etag_matches(inm, etag)) or (
        inm is None and ims is not None and _not_modified_since(ims, mtime)
    ):
        file.close()
        lines[0] = b"HTTP/1.1 304 Not Modified\r\n"
        return StaticReply(304, b"".join(lines), b"", None)
    lines.append(b"Content-Type: " + content_type(name) + b"\r\n")
    if encoding:
        lines.append(b"Content-Encoding: " + encoding + b"\r\n")
    lines.append(b"Accept-Ranges: bytes\r\n")
    size = file.size
    status = 200
    wanted = headers.get(b"range")
    if wanted is not None and head.method == b"GET":
        if_range = headers.get(b"if-range")
        if if_range is not None and if_range.strip() not in (etag, modified):
            wanted = None  # the client's copy is another version: the whole file
    if wanted is not None and head.method == b"GET":
        span = parse_range(wanted, size)
        if span is False:
            file.close()
            return _simple(416, b"Range Not Satisfiable\n", b"Content-Range: bytes */%d\r\n" % size)
        if isinstance(span, tuple):
            first, last = span
            status = 206
            file.offset = first
            file.length = last - first + 1
            lines.append(b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, size))
    lines.append(b"Content-Length: %d\r\n" % file.length)
    lines[0] = b"HTTP/1.1 %d %s\r\n" % (status, reason(status))
    return StaticReply(status, b"".join(lines), b"", file)


class FileSender:
    """Sends an ``OpenFile``'s bytes to a client transport, with back-pressure; owns the
    file until ``close``.

    With a plain socket, ``os.sendfile`` writes straight to the socket's fd, which is
    safe only while the transport holds no bytes of its own (they would be overtaken).
    So the transport's write buffer limits are set to 0 for the transfer: any byte
    it holds pauses writing, and ``resume_writing`` comes exactly when it is empty
    again. When the socket is full (EAGAIN), the next bytes of the file go through
    the transport (``NUDGE_CHUNK``): the transport waits for room, sends them, and
    its resume says when to go on. Memory stays bounded by that chunk.

    Without sendfile (TLS, no socket), chunks of ``COPY_CHUNK`` are written while the
    transport is under its high-water mark; its resume_writing calls ``pump`` again.
    """

    __slots__ = (
        "_done",
        "_handle",
        "_limits",
        "_sock_fd",
        "file",
        "sent",
        "transport",
    )

    def __init__(
        self, file: OpenFile, transport: asyncio.Transport, done: Callable[[bool], None]
    ) -> None:
        self.file = file
        self.transport = transport
        #: Called once, when the last byte is handed over (True) or the transfer fails.
        self._done = done
        self.sent = 0
        self._handle: asyncio.Handle | None = None
        self._sock_fd = -1
        #: The transport's (low, high) limits to restore (None: not changed).
        self._limits: tuple[int, int] | None = None
        try:
            # A TLS transport has a socket too, but its bytes must go through the transport.
            if transport.get_extra_info("sslcontext") is None:
                sock = transport.get_extra_info("socket")
                fileno = sock.fileno() if sock is not None else -1
                if fileno >= 0:
                    low, high = transport.get_write_buffer_limits()
                    transport.set_write_buffer_limits(high=0, low=0)
                    self._limits = (low, high)
                    self._sock_fd = fileno
        except BaseException:
            file.close()  # not handed over: still the caller's to give back, so done here
            raise

    def pump(self) -> None:
        """Send what the client can take now (called at start and on resume_writing)."""
        self._handle = None
        file = self.file
        transport = self.transport
        if file.fd < 0:
            return  # closed already
        if transport.is_closing():
            self._fail()
            return
        try:
            if self._sock_fd >= 0:
                finished = self._sendfile(file, transport)
            else:
                finished = self._copy(file, transport)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                log.warning("Cannot send a static file: %s", exc)
            self._fail()
            return
        if finished:
            self._finish(True)

    def _sendfile(self, file: OpenFile, transport: asyncio.Transport) -> bool:
        budget = TURN_BUDGET
        sock_fd = self._sock_fd
        while file.length > 0:
            if transport.get_write_buffer_size():
                return False  # resume_writing calls pump once the transport is empty
            if budget <= 0:
                self._later()
                return False
            try:
                sent = os.sendfile(sock_fd, file.fd, file.offset, min(file.length, budget))
            except BlockingIOError:
                # The socket is full: the next bytes go through the transport, which waits
                # for room and says when it is empty again.
                data = os.pread(file.fd, min(file.length, NUDGE_CHUNK), file.offset)
                if not data:
                    raise OSError(errno.EIO, "the file shrank while it was sent") from None
                transport.write(data)
                sent = len(data)
            if sent == 0:
                raise OSError(errno.EIO, "the file shrank while it was sent")
            file.offset += sent
            file.length -= sent
            self.sent += sent
            budget -= sent
        return True

    def _copy(self, file: OpenFile, transport: asyncio.Transport) -> bool:
        high = transport.get_write_buffer_limits()[1]
        budget = TURN_BUDGET
        while file.length > 0:
            if transport.get_write_buffer_size() > high:
                return False  # paused: resume_writing calls pump again
            if budget <= 0:
                self._later()
                return False
            data = os.pread(file.fd, min(file.length, COPY_CHUNK), file.offset)
            if not data:
                raise OSError(errno.EIO, "the file shrank while it was sent")
            transport.write(data)
            file.offset += len(data)
            file.length -= len(data)
            self.sent += len(data)
            budget -= len(data)
        return True

    def _later(self) -> None:
        """Go on at the next turn of the loop: other clients get theirs meanwhile."""
        self._handle = asyncio.get_running_loop().call_soon(self.pump)

    def _fail(self) -> None:
        self._finish(False)

    def _finish(self, complete: bool) -> None:
        done = self._done
        self._done = _nothing
        done(complete)

    def close(self) -> int:
        """Release the file, give the transport its limits back; returns the bytes sent."""
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()
        self.file.close()
        limits = self._limits
        if limits is not None:
            self._limits = None
            transport = self.transport
            if not transport.is_closing():
                with contextlib.suppress(RuntimeError):
                    transport.set_write_buffer_limits(high=limits[1], low=limits[0])
        self._done = _nothing
        return self.sent


def _nothing(complete: bool) -> None:
    pass
