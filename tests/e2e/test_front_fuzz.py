"""Fuzzing the HTTP front: generated, mutated and split request streams against a real server.

One Ferryman server (the WSGI stub app, one process of 4 threads, 8 KiB head and
64 KiB body limits, 2 s timeouts) serves the whole module. Two tests drive it:

* ``test_fuzz_front`` lets hypothesis build request streams from a structured
  strategy (method, target, version, header lines, framing: Content-Length right,
  wrong or twice, chunked with extensions and trailers, bodies that hide a second
  request), then maybe mutates the bytes (flip, insert, delete, duplicate,
  truncate), pipelines 1-3 requests and sends them cut at random points with
  pauses of at most 5 ms.
* ``test_corpus_probe`` replays every file of ``fuzz_corpus/`` (raw bytes, one
  probe per ``.http`` file) three ways: whole, byte by byte (the first 2 KiB;
  the rest in one piece), and followed by a pipelined ``GET /environ``.

The oracle
----------
Each stream is first read by ``parse_reference``, a strict RFC 9112 reader that
only claims to understand bytes whose framing is unambiguous; the k-th final
response belongs to the k-th request it understood. Rule names are in brackets.

1. Every response is well framed (``Wire`` checks the status line, header lines
   and Content-Length/chunked/close framing) [framing], arrives whole [truncated],
   also when the server closes with client bytes unread (a reset must not eat the
   response: RFC 9112 9.6 staged close) [reset], and without stalling [stall], and
   its status is in ``ALLOWED_STATUS`` [status]:
   any 2xx, 3xx or 4xx (from the app or the core: 400, 404, 405, 408, 411, 413,
   417, 431, ...), 501 and 505; 100 only as an interim response. Any other 5xx
   (500, 502, 503, 504) for client-caused input means something broke.
   For requests the reference understood, also: a major version other than 1
   (HTTP/0.9, 2.0) gets 400 or 505 [version]; an unknown method token gets 501 or
   405 [method]; ``*`` with a method other than OPTIONS gets 400 [star]; HTTP/1.1
   without exactly one Host, or an invalid Host value, gets 400 [host-count];
   a complete request is answered, not timed out with 408 [timeout], nor left
   unanswered [hang]; ``Connection: close`` and HTTP/1.0 requests that carried a
   Transfer-Encoding end the connection after their response [close] [te10],
   sending nothing more [extra]; a plain GET (origin-form, one Host, ordinary
   fields, no body) is never refused with 400, and when the whole stream was
   understood and answered, one more plain GET on the same connection gets its
   own answer [desync]; the app answers the request that was sent (method and
   target) [mapping]; ``/echo`` returns the body byte for byte and ``/environ``
   reports its length [body]; a response to HEAD has no content, whoever wrote
   it [head-body].
2. Afterwards a plain ``GET /`` on a new connection gets 200 [alive].
3. Header integrity, for every ``/environ`` 200: each ``HTTP_*`` key (and
   ``CONTENT_TYPE``) comes from a header *name* in that request's head, the part
   before the blank line, never from the body or chunked trailers; a name with
   characters outside ``[A-Za-z0-9-]`` (``X_Remote_User``) counts for nothing
   [header-origin]. ``HTTP_HOST`` equals the OWS-trimmed value of a Host line of
   the head or the absolute-form target's authority [host]. The peer (127.0.0.1)
   is not a trusted proxy: no ``Forwarded``/``X-Forwarded-*``/``X-Real-IP`` keys,
   ``REMOTE_ADDR`` stays 127.0.0.1 [forwarded]. For a response the reference could
   not place (mutated streams), the head is looked up by its request line.
4. Resource bounds, every 500 examples, at the end and after each corpus file: with
   all connections closed the core's fd count is back at (or below) its baseline,
   its RSS is under baseline + 30 MB, the app process and the temp files are the
   ones from the start, and the core logged no internal error [resources].

Running it
----------
The fuzz test stops starting new rounds of examples after a wall-clock budget:

    FERRYMAN_FUZZ_SECONDS   budget in seconds (default 45; the test fits in 60 s)
    FERRYMAN_FUZZ_EXAMPLES  cap on the number of examples (default 1,000,000)
    FERRYMAN_FUZZ_SEED      base seed, to replay a run's generation (default: random)
    FERRYMAN_FUZZ_REPRODUCE the blob of a failure's ``@reproduce_failure(..., b'<blob>')``
                            line: runs exactly that example once
    FERRYMAN_FUZZ_IGNORE    comma-separated rule names not to enforce, e.g. while a fix
                            is in flight (``FERRYMAN_FUZZ_IGNORE=header-origin,version``)

A long run:

    FERRYMAN_FUZZ_SECONDS=1800 FERRYMAN_FUZZ_EXAMPLES=1000000 \\
        .venv/bin/pytest tests/e2e/test_front_fuzz.py -k fuzz_front

A failure prints the shrunk stream (``Failing test case: ...``) with its cut
points, the seed, and a ``@reproduce_failure`` blob to replay it with
``FERRYMAN_FUZZ_REPRODUCE``; save the bytes as ``fuzz_corpus/<name>.http`` to keep
the case as a probe. Run with ``-s`` to see what the oracle checked (``STATS``).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import hypothesis
import pytest
from hypothesis import HealthCheck, given, note, reproduce_failure, seed, settings
from hypothesis import strategies as st

from .harness import STUB, Server, serving
from .wire import Response, Wire

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
HELLO = b"Hello from Ferryman's stub app\n"

BUDGET = float(os.environ.get("FERRYMAN_FUZZ_SECONDS", "45"))
MAX_EXAMPLES = int(os.environ.get("FERRYMAN_FUZZ_EXAMPLES", "1000000"))
SEED = os.environ.get("FERRYMAN_FUZZ_SEED", "")
REPRODUCE = os.environ.get("FERRYMAN_FUZZ_REPRODUCE", "")
IGNORE = frozenset(r.strip() for r in os.environ.get("FERRYMAN_FUZZ_IGNORE", "").split(",") if r)
#: Examples per hypothesis run; the budget is checked between runs.
ROUND = 50
#: Check 4 (resources) after about this many examples, and at the end.
RESOURCE_EVERY = 500

#: A response, or the rest of one, must arrive within this (every socket op has it).
IO_TIMEOUT = 5.0
#: After the requests the reference understood, wait this long for anything else.
IDLE = 0.3
MAX_HEADER = 8 * 1024
MAX_BODY = 64 * 1024
RSS_SLACK_KB = 30 * 1024

#: Final statuses a client may cause: anything 2xx/3xx/4xx (app or core; the core's own
#: are 400, 404, 405, 408, 411, 413, 417, 431), plus 501 (method or transfer coding not
#: implemented) and 505 (HTTP version). 500, 502, 503, 504 mean something broke.
ALLOWED_STATUS = frozenset(range(200, 500)) | {501, 505}
#: Interim responses: 100 Continue only (upgrades are not tunnelled).
ALLOWED_INTERIM = frozenset({100})

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Header names that reach the app; others are dropped (DESIGN.md section 5).
APP_NAME = re.compile(rb"[A-Za-z0-9-]+")
REQUEST_LINE = re.compile(rb"([^ ]+) ([^ ]+) HTTP/([0-9])\.([0-9])")
HTTP09_LINE = re.compile(rb"([^ ]+) ([^ ]+)")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})([ \t]*;[\t\x20-\x7e\x80-\xff]*)?")
HOST_VALUE = re.compile(rb"(\[[0-9A-Fa-f:.vV]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?")
#: Methods the front's parser knows (llhttp): no rule about their status.
#: Fields that may appear once in a request (the front answers 400 to a second one).
SINGLETON_FIELDS = frozenset(
    b"host content-length content-type authorization proxy-authorization range if-range "
    b"if-modified-since if-unmodified-since max-forwards referer date from".split()
)
KNOWN_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH COPY LOCK MKCOL MOVE PROPFIND "
    b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
    b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PURGE MKCALENDAR LINK UNLINK SOURCE QUERY PRI".split()
)
PLAIN_TARGET = re.compile(rb"/[A-Za-z0-9/._~?=&-]*")
PLAIN_HOST = re.compile(rb"[A-Za-z0-9.-]+(:[0-9]{1,5})?")
PLAIN_VALUE = re.compile(rb"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?|")
UNPLAIN_FIELDS = frozenset(
    [b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"]
)
#: Environ keys a client may only set through a trusted proxy.
FORWARDED_KEY = re.compile(r"HTTP_(FORWARDED|X_FORWARDED_.*|X_REAL_IP)")


class OracleFailure(AssertionError):
    pass


def fail(rule: str, message: str) -> None:
    """Report a broken oracle rule, unless FERRYMAN_FUZZ_IGNORE names it."""
    if rule not in IGNORE:
        raise OracleFailure(f"[{rule}] {message}")


def expect(rule: str, ok: bool, message: str) -> None:
    if not ok:
        fail(rule, message)


# -- the reference reading of a stream ---------------------------------------------------------


@dataclass
class Parsed:
    """One request as a strict RFC 9112 reader sees it."""

    method: bytes
    target: bytes
    #: (major, minor); None for an HTTP/0.9-style line without a version.
    version: tuple[int, int] | None
    #: From the request line up to and including the blank line.
    head: bytes
    #: (name, value without surrounding OWS), in order.
    headers: list[tuple[bytes, bytes]]
    #: The body the app must get; None when its framing is not understood.
    payload: bytes | None = None
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]

    def connection_tokens(self) -> set[bytes]:
        return {t.strip().lower() for v in self.values(b"connection") for t in v.split(b",") if t}

    @property
    def plain(self) -> bool:
        """A GET or HEAD no server may refuse: origin-form, one Host, ordinary fields, no body."""
        hosts = self.values(b"host")
        return (
            self.method in (b"GET", b"HEAD")
            and PLAIN_TARGET.fullmatch(self.target) is not None
            and self.version in ((1, 0), (1, 1))
            and len(hosts) == 1
            and PLAIN_HOST.fullmatch(hosts[0]) is not None
            and self.payload == b""
            and all(
                APP_NAME.fullmatch(name) and PLAIN_VALUE.fullmatch(value)
                for name, value in self.headers
            )
            and not {name.lower() for name, _ in self.headers} & UNPLAIN_FIELDS
            and self.connection_tokens() <= {b"close", b"keep-alive"}
            and not self.repeats_a_singleton()
        )

    def repeats_a_singleton(self) -> bool:
        """A field that may appear once (RFC 9110 5.3) appears twice: 400 is right."""
        names = [name.lower() for name, _ in self.headers]
        return any(names.count(name) > 1 for name in SINGLETON_FIELDS)

    @property
    def closes(self) -> bool:
        """The client asked that the connection end after this request."""
        tokens = self.connection_tokens()
        if b"close" in tokens:
            return True
        return self.version == (1, 0) and b"keep-alive" not in tokens


@dataclass
class Reference:
    requests: list[Parsed]
    #: Every byte of the stream belongs to a request understood whole.
    complete: bool
    #: Where understanding stopped.
    rest: bytes = b""

    def method_of(self, index: int) -> bytes:
        """The method of the ``index``-th request, guessed from request lines if need be."""
        if index < len(self.requests):
            return self.requests[index].method
        lines = [_known_suffix(token) for token in GUESSED_LINE.findall(self.rest)]
        index -= len(self.requests)
        return lines[index] if index < len(lines) else b"GET"


#: A request line where the reference stopped understanding. A body's bytes may run into
#: the next request line (a one-byte body, then "HEAD ..."): whatever precedes the method
#: on its line is skipped, any byte but LF, upper-case letters and CR too (they once were
#: not: body b"A" then "HEAD" read as method "AHEAD", and its response as a GET's).
GUESSED_LINE = re.compile(rb"(?:^|\n)[^\n]*?([A-Z]+)[ \t]+[^ \t\r\n]+(?:[ \t]+HTTP/[^\r\n]*)?\r?\n")


def _known_suffix(token: bytes) -> bytes:
    """The method in ``token``, which may start with body bytes: the longest known method
    it ends with, else the whole token. Only HEAD changes how a response is read: a HEAD
    taken for another method has its response read as one whose content never comes
    (a false [truncated] once the keep-alive timeout closes the connection). The other
    way round is harmless: a token that ends in HEAD without being HEAD (``AHEAD``) is a
    method the server does not know, so it refuses it, and a refusal is taken with or
    without its body (``refused_headless``)."""
    for start in range(len(token)):
        if token[start:] in KNOWN_METHODS:
            return token[start:]
    return token


def _field_lines(lines: Sequence[bytes]) -> list[tuple[bytes, bytes]] | None:
    """(name, value) of field lines; None unless each is a plain ``token: value`` line."""
    fields = []
    for line in lines:
        name, sep, value = line.partition(b":")
        value = value.strip(b" \t")
        if not sep or not TOKEN.fullmatch(name) or not FIELD_VALUE.fullmatch(value):
            return None  # obs-fold, bare CR/LF, control bytes, odd names: not for us to say
        fields.append((name, value))
    return fields


def _chunked(data: bytes, pos: int) -> tuple[bytes, list[tuple[bytes, bytes]], int] | None:
    """(payload, trailers, end) of a chunked body at ``pos``; None unless clean and whole."""
    pieces = []
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        match = CHUNK_LINE.fullmatch(data[pos:eol])
        if match is None:
            return None
        size = int(match.group(1), 16)
        pos = eol + 2
        if size == 0:
            break
        if data[pos + size : pos + size + 2] != b"\r\n":
            return None
        pieces.append(data[pos : pos + size])
        pos += size + 2
    end = data.find(b"\r\n\r\n", pos - 2)
    if end < 0:
        return None
    lines = data[pos:end].split(b"\r\n") if end >= pos else []
    trailers = _field_lines(lines)
    if trailers is None:
        return None
    return b"".join(pieces), trailers, max(end + 4, pos + 2)


def parse_reference(data: bytes) -> Reference:
    """The requests in ``data`` as far as their framing is unambiguous."""
    requests: list[Parsed] = []
    pos = 0
    while True:
        while data.startswith(b"\r\n", pos):
            pos += 2  # RFC 9112 2.2: empty lines before a request line may be ignored
        if pos == len(data):
            return Reference(requests, True)
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return Reference(requests, False, data[pos:])
        head = data[pos : end + 4]
        lines = data[pos:end].split(b"\r\n")
        if any(b"\r" in line or b"\n" in line for line in lines):
            return Reference(requests, False, data[pos:])
        line = REQUEST_LINE.fullmatch(lines[0])
        version: tuple[int, int] | None
        if line is not None:
            method, target = line.group(1), line.group(2)
            version = (int(line.group(3)), int(line.group(4)))
        else:
            old = HTTP09_LINE.fullmatch(lines[0])
            if old is None:
                return Reference(requests, False, data[pos:])
            method, target, version = old.group(1), old.group(2), None
        if not TOKEN.fullmatch(method) or re.search(rb"[\x00-\x20\x7f]", target):
            return Reference(requests, False, data[pos:])
        headers = _field_lines(lines[1:])
        if headers is None:
            return Reference(requests, False, data[pos:])
        request = Parsed(method, target, version, head, headers)
        requests.append(request)
        pos = end + 4
        if version is None or version[0] != 1 or method == b"CONNECT":
            return Reference(requests, False, data[pos:])  # framing unknown; CONNECT has no content
        lengths = request.values(b"content-length")
        codings = request.values(b"transfer-encoding")
        if codings:
            if lengths or len(codings) > 1 or codings[0].lower() != b"chunked":
                return Reference(requests, False, data[pos:])
            if version == (1, 0):
                return Reference(requests, False, data[pos:])  # RFC 9112 6.1: faulty framing
            body = _chunked(data, pos)
            if body is None:
                return Reference(requests, False, data[pos:])
            request.payload, request.trailers, pos = body
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 12:
                return Reference(requests, False, data[pos:])
            size = int(lengths[0])
            if pos + size > len(data):
                return Reference(requests, False, data[pos:])
            request.payload = data[pos : pos + size]
            pos += size
        else:
            request.payload = b""
        if request.values(b"upgrade") or b"upgrade" in request.connection_tokens():
            # A switch would happen after the body (RFC 9110 7.8): from here on, maybe not HTTP/1.
            return Reference(requests, False, data[pos:])


# -- what the app saw ---------------------------------------------------------------------------


def app_key(name: bytes) -> str | None:
    """The environ key a header name becomes, or None if the core must drop it."""
    if not APP_NAME.fullmatch(name):
        return None
    key = name.upper().replace(b"-", b"_").decode()
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return key
    return "HTTP_" + key


def head_names(head: bytes) -> list[bytes]:
    """Every name-like thing in a head, read leniently (any of CR, LF, CRLF ends a line)."""
    return [line.partition(b":")[0].strip(b" \t") for line in re.split(rb"\r\n|\r|\n", head)]


def head_hosts(head: bytes) -> set[bytes]:
    hosts = set()
    for line in re.split(rb"\r\n|\r|\n", head):
        name, sep, value = line.partition(b":")
        if sep and name.strip(b" \t").lower() == b"host":
            hosts.add(value.strip(b" \t"))
    return hosts


def authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (``http://a.example:81/x`` → a.example:81)."""
    scheme_end = target.find(b"://")
    if target.startswith(b"/") or scheme_end < 0:
        return None
    rest = target[scheme_end + 3 :]
    return re.split(rb"[/?#]", rest, maxsplit=1)[0]


def origin_form(target: bytes) -> bytes:
    """The target as the app sees it: absolute-form is reduced to origin-form (RFC 9112
    3.2.2; its authority becomes the Host)."""
    found = authority(target)
    if found is None:
        return target
    rest = target[target.find(b"://") + 3 + len(found) :]
    return rest if rest.startswith(b"/") else b"/" + rest


def target_path(target: bytes) -> bytes:
    found = authority(target)
    if found is not None:
        target = target[target.find(b"://") + 3 + len(found) :] or b"/"
    return unquote_to_bytes(re.split(rb"[?#]", target, maxsplit=1)[0])


def locate_heads(stream: bytes, method: bytes, target: bytes) -> list[bytes]:
    """Heads in ``stream`` that start with this request line (for streams not understood)."""
    heads = []
    # The target as sent: the app's, or an absolute-form one reduced to it.
    sent = re.escape(target) + rb"|[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]*" + re.escape(target)
    line = re.escape(method) + rb"[ \t]+(?:" + sent + rb")"
    for match in re.finditer(line, stream):
        found = (stream.find(b"\n\r\n", match.end()), stream.find(b"\n\n", match.end()))
        ends = [at for at in found if at >= 0]
        heads.append(stream[match.start() : min(ends) + 1] if ends else stream[match.start() :])
    return heads


def check_environ(
    env: dict[str, Any],
    heads: Sequence[bytes],
    where: str,
    trailers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Check 3: the keys the app saw come from header names in one of ``heads``."""
    from_trailers = {app_key(name) for name, _ in trailers}
    allowed: set[str] = set()
    hosts: set[bytes] = set()
    for head in heads:
        allowed.update(k for k in map(app_key, head_names(head)) if k)
        hosts |= head_hosts(head)
        # An absolute-form target's authority is the host (the app sees origin-form).
        line = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0].split()
        own = authority(line[1]) if len(line) > 1 else None
        if own is not None:
            hosts.add(own)
            allowed.add("HTTP_HOST")  # the target's authority is the request's Host
    for key in sorted(env):
        if key.startswith("HTTP_") or key == "CONTENT_TYPE":
            expect(
                "header-origin",
                key in allowed,
                f"{where}: the app saw {key}={env[key]!r}, which no header line of the "
                f"request's head names (head names: {sorted(allowed)})"
                + (" - it came in a chunked trailer" if key in from_trailers else ""),
            )
        if FORWARDED_KEY.fullmatch(key):
            fail("forwarded", f"{where}: {key}={env[key]!r} from an untrusted peer")
    expect(
        "forwarded",
        env.get("REMOTE_ADDR") == "127.0.0.1",
        f"{where}: REMOTE_ADDR={env.get('REMOTE_ADDR')!r}",
    )
    if "HTTP_HOST" in env:
        host = env["HTTP_HOST"].encode("latin-1")
        expect(
            "host",
            host in hosts,
            f"{where}: HTTP_HOST={host!r} is neither a Host value of the head nor the "
            f"target's authority ({sorted(hosts)})",
        )


def environ_of(resp: Response) -> dict[str, Any] | None:
    """The environ a /environ response reports (None for other responses)."""
    if resp.status != 200 or resp.header("Content-Type") != "application/json":
        return None
    try:
        data = json.loads(resp.body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "wsgi.version" in data else None


# -- one stream over one connection --------------------------------------------------------------


#: What the oracle got to see, printed after the fuzz test (``-s``): a check that never ran
#: cannot fail, so these numbers say whether it did.
STATS: Counter[str] = Counter()


class FuzzWire(Wire):
    """``Wire`` (which notes a reset), typed for ``with``."""

    def __enter__(self) -> FuzzWire:
        return self


def _wait_data(wire: FuzzWire, seconds: float) -> bool:
    """Whether response bytes are there or arrive within ``seconds`` (False on close too)."""
    if wire.buffer:
        return True
    if wire.eof:
        return False
    wire.sock.settimeout(seconds)
    try:
        return wire._fill()
    except TimeoutError:
        return False
    finally:
        wire.sock.settimeout(IO_TIMEOUT)


def _send(wire: FuzzWire, stream: bytes, cuts: Sequence[int], pauses: Sequence[float]) -> None:
    """Send ``stream`` in pieces (cut at ``cuts``), pausing between them; stop if refused."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        if i and pauses:
            time.sleep(pauses[i % len(pauses)])
        try:
            wire.sock.sendall(stream[start:end])
        except (BrokenPipeError, ConnectionResetError):
            return  # the server closed (after a refusal): read what it said


SENTINEL = b"GET /environ?fuzz-sentinel HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n"


def converse(port: int, stream: bytes, cuts: Sequence[int], pauses: Sequence[float]) -> None:
    """Send one stream on a new connection and hold what comes back to the oracle."""
    ref = parse_reference(stream)
    requests = ref.requests
    STATS["streams"] += 1
    STATS["streams understood whole"] += ref.complete
    STATS["requests understood"] += len(requests)
    responses: list[Response] = []
    with FuzzWire(port, timeout=IO_TIMEOUT) as wire:
        _send(wire, stream, cuts, pauses)
        while True:
            index = len(responses)
            if responses and responses[-1].header("Connection") == "close":
                _closed_within(wire, IO_TIMEOUT, "close", "the response said Connection: close")
                break
            understood = index < len(requests) and requests[index].payload is not None
            if index >= len(requests) and ref.complete:
                if requests and requests[-1].closes:
                    _closed_within(wire, IO_TIMEOUT, "close", "the last request asked for close")
                    break
                # Every request is answered: one more, ours, must come back next.
                try:
                    wire.send(SENTINEL)
                except OSError:
                    break
                if not _wait_data(wire, IO_TIMEOUT):
                    break  # a server may close an idle keep-alive connection at any time
                resp = _read(wire, b"GET")
                env = environ_of(resp)
                STATS["sentinels answered"] += 1
                expect(
                    "desync",
                    env is not None and env.get("QUERY_STRING") == "fuzz-sentinel",
                    "every request was answered, then a plain GET on the same connection got "
                    f"{resp.status} {resp.body[:300]!r}",
                )
                break
            if not _wait_data(wire, IO_TIMEOUT if understood else IDLE):
                if understood and not wire.eof:
                    fail("hang", f"request {index} was complete and got no answer")
                STATS["ended by close" if wire.eof else "ended by idle wait"] += 1
                break
            method = ref.method_of(index)
            resp = _read(wire, method)
            if method == b"HEAD" and wire.buffer and not wire.buffer.startswith(b"HTTP/"):
                if not refused_headless(resp):
                    fail(
                        "head-body", f"a response to HEAD had content: {bytes(wire.buffer)[:300]!r}"
                    )
                wire.buffer.clear()  # a refusal's body: the server did not read a HEAD
            if resp.status < 200:
                expect("status", resp.status in ALLOWED_INTERIM, f"interim {resp.status}")
                continue
            responses.append(resp)
            STATS[f"status {resp.status}"] += 1
            _check_response(stream, ref, index, resp)
            if index < len(requests) and requests[index].closes:
                _closed_within(wire, IO_TIMEOUT, "close", f"request {index} asked for close")
                break
            if (
                index < len(requests)
                and requests[index].version == (1, 0)
                and requests[index].values(b"transfer-encoding")
            ):
                why = f"request {index} is HTTP/1.0 with Transfer-Encoding (RFC 9112 6.1: close)"
                _closed_within(wire, IO_TIMEOUT, "te10", why)
                break


def _closed_within(wire: FuzzWire, seconds: float, rule: str, why: str) -> None:
    """Check that the server closes the connection within ``seconds``, sending nothing more."""
    if wire.buffer:
        fail(rule, f"{why}; instead it sent {bytes(wire.buffer)[:300]!r}")
        wire.buffer.clear()
    try:
        closed = wire.closed_within(seconds)
    except AssertionError as exc:
        fail(rule, f"{why}; instead: {exc}")
        return
    expect(rule, closed, f"{why}; the connection stayed open")


def _read(wire: FuzzWire, method: bytes) -> Response:
    try:
        resp = wire.read_response(method.decode("latin-1"))
    except TimeoutError:
        raise OracleFailure(
            f"[stall] a response stopped mid-way; got so far: {bytes(wire.buffer)[:300]!r}"
        ) from None
    except AssertionError as exc:
        raise OracleFailure(f"[framing] {exc}") from None
    if not resp.complete and wire.reset:
        fail(
            "reset",
            f"the server reset the connection and cut a response short ({len(resp.body)} "
            f"bytes of the body came): it closed with client bytes unread instead of a "
            f"staged close (RFC 9112 9.6): {resp}",
        )
    # A refusal without its body: the server read a HEAD method in a request it refused,
    # where this reference could not make out a request (only the body may be missing).
    headless = refused_headless(resp) and not resp.body
    expect("truncated", resp.complete or headless, f"response cut short: {resp}")
    return resp


def refused_headless(resp: Response) -> bool:
    """A refusal of the core's own (4xx/5xx, then close): sent with or without its body,
    as the server read the request as HEAD or not; where request lines are malformed the
    two readings may differ, and either is right."""
    return resp.status >= 400 and resp.header("Connection") == "close"


def _check_response(stream: bytes, ref: Reference, index: int, resp: Response) -> None:
    """Checks 1 and 3 for the ``index``-th final response."""
    where = f"response {index} ({resp.status})"
    expect("status", resp.status in ALLOWED_STATUS, f"{where}: status not allowed: {resp}")
    env = environ_of(resp)
    if index >= len(ref.requests):
        if env is not None:  # not placed by the reference: find its head by the request line
            method = env.get("REQUEST_METHOD", "").encode("latin-1")
            target = env.get("REQUEST_URI", "").encode("latin-1")
            heads = locate_heads(stream, method, target)
            expect("mapping", bool(heads), f"{where}: the app saw {method!r} {target!r}")
            check_environ(env, heads, where)
            STATS["environ checked (located by request line)"] += 1
        return
    request = ref.requests[index]
    if request.payload is not None:
        expect("timeout", resp.status != 408, f"{where}: 408 for a complete request")
    if request.plain:
        STATS["plain requests"] += 1
        expect("desync", resp.status != 400, f"{where}: a plain GET was refused: {resp}")
    rules: list[tuple[str, frozenset[int]]] = []
    preface = request.method == b"PRI" and request.target == b"*" and request.version == (2, 0)
    if request.method == b"PRI" and not preface:
        rules.append(("pri", frozenset({400, 505})))  # HTTP/2's preface method, misused
    if request.version not in ((1, 0), (1, 1)) and not preface:  # 0.9, 1.2, 2.0...
        rules.append(("version", frozenset({400, 505})))
    if request.method not in KNOWN_METHODS:
        # 400 too when the target has bytes the parser refuses (non-ASCII): malformed;
        # and when requests came before it in the stream: the front tells an unknown
        # method from a malformed line only when it can see the line whole from its start.
        form = rb"/[\x21-\x7e]*|\*|[A-Za-z][A-Za-z0-9+.-]*://[\x21-\x7e]*"  # a target's forms
        clear = index == 0 and re.fullmatch(form, request.target) is not None
        rules.append(("method", frozenset({405, 501} if clear else {400, 405, 501})))
    if request.target == b"*" and request.method != b"OPTIONS" and not preface:
        rules.append(("star", frozenset({400})))
    hosts = request.values(b"host")
    if (
        (request.version == (1, 1) and len(hosts) != 1)
        or len(hosts) > 1
        or any(not HOST_VALUE.fullmatch(h) for h in hosts)
    ):
        rules.append(("host-count", frozenset({400})))
    rules = [(rule, codes) for rule, codes in rules if rule not in IGNORE]
    expected: set[int] = set()
    for _, codes in rules:
        expected |= codes  # several rules broken at once: any of their answers will do
    if len(request.head) > MAX_HEADER - 512:
        expected.add(431)  # a head at the size limit may be refused for that first
    if rules and resp.status not in expected:
        names = "/".join(rule for rule, _ in rules)
        fail(rules[0][0], f"{where}: {names} wants a status in {sorted(expected)}: {resp}")
    if env is not None:
        seen = (env.get("REQUEST_METHOD", ""), env.get("REQUEST_URI", ""))
        expect(
            "mapping",
            seen
            == (request.method.decode("latin-1"), origin_form(request.target).decode("latin-1")),
            f"{where}: the app saw {seen}, the request was {request.method!r} {request.target!r}",
        )
        check_environ(env, [request.head], where, request.trailers)
        STATS["environ checked (placed by the reference)"] += 1
        if request.payload is not None:
            expect(
                "body",
                int(env.get("CONTENT_LENGTH") or 0) == len(request.payload),
                f"{where}: CONTENT_LENGTH={env.get('CONTENT_LENGTH')!r} for a "
                f"{len(request.payload)}-byte body",
            )
    if (
        resp.status == 200
        and request.payload is not None
        and request.method not in (b"HEAD",)
        and target_path(request.target) == b"/echo"
    ):
        STATS["echo checked"] += 1
        expect(
            "body",
            resp.body == request.payload,
            f"{where}: /echo returned {resp.body[:200]!r}, the body was {request.payload[:200]!r}",
        )


# -- the server and its baseline ---------------------------------------------------------------


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Target:
    server: Server
    fds: int
    children: list[int]
    temp: list[str]
    rss: int
    log_start: int

    @property
    def port(self) -> int:
        return self.server.port

    def check_alive(self) -> None:
        """Check 2: a plain GET / on a new connection gets 200."""
        try:
            with Wire(self.port, timeout=IO_TIMEOUT) as wire:
                wire.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                resp = wire.read_response()
        except (OSError, AssertionError) as exc:
            raise OracleFailure(f"[alive] GET / on a new connection failed: {exc!r}") from None
        if resp.status != 200 or resp.body != HELLO:
            fail("alive", f"GET / on a new connection: {resp}")

    def log_since(self, mark: int) -> str:
        """The server's log lines from ``mark`` on (the last 30), for a failure message."""
        lines = self.server.log_text().splitlines()[mark:][-30:]
        return "\n  server log:\n    " + "\n    ".join(lines) if lines else ""

    def check_resources(self) -> None:
        """Check 4: fds, app process, temp files, memory and log back at their baseline."""
        fds, children, temp = self.server.settled_resources()
        rss = rss_kb(self.server.pid)
        errors = [
            line
            for line in self.server.log_text().splitlines()[self.log_start :]
            if re.search(r"Traceback|internal error| (ERROR|CRITICAL) ", line)
        ]
        expect("resources", fds <= self.fds, f"core fds {fds}, baseline {self.fds}")
        expect("resources", children == self.children, f"app {children}, was {self.children}")
        expect("resources", temp == self.temp, f"temp files {temp}, were {self.temp}")
        expect("resources", rss <= self.rss + RSS_SLACK_KB, f"core RSS {rss} kB, was {self.rss}")
        expect("resources", not errors, "the core logged:\n" + "\n".join(errors[:20]))


def _warm(server: Server) -> None:
    """Four overlapping requests, so every app thread has its keep-alive connection."""
    threads = [
        threading.Thread(target=server.get, args=("/slow?t=0.3",), kwargs={"timeout": 10})
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with serving(
        STUB,
        "--min-instances", "1",
        "--max-pool-size", "1",
        "--thread-count", "4",
        "--max-header-size", "8k",
        "--max-body-size", "64k",
        "--header-timeout", "2",
        "--body-timeout", "2",
        "--keepalive-timeout", "2",
        "--no-access-log",
    ) as server:  # fmt: skip
        _warm(server)
        fds, children, temp = server.settled_resources()
        yield Target(server, fds, children, temp, rss_kb(server.pid), server.mark())


# -- generation --------------------------------------------------------------------------------

#: Each request draws which of these to get wrong; the rest comes from the plausible pools.
ODDITIES = ("method", "target", "version", "host", "headers", "eol", "framing", "big")
METHODS = [*[b"GET"] * 4, *[b"POST"] * 4, b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"HEAD"]
ODD_METHODS = [
    b"TRACE", b"PROPFIND", b"M-SEARCH", b"CONNECT", b"PRI", b"FOO", b"get", b"DESCRIBE",
    b"G@T", b"", b"GET\x00", b"X" * 40,
]  # fmt: skip
TARGETS = [
    *[b"/environ"] * 6, *[b"/echo"] * 4, b"/", b"/environ/a%2Fb", b"/environ?x=1&y", b"/nope",
    b"http://auth.example/environ", b"http://auth.example:8080/echo?q", b"/ech%6F",
]  # fmt: skip
ODD_TARGETS = [
    b"*", b"HTTP://Auth.Example/environ", b"s://]ufd/:", b"//environ", b"/environ#frag",
    b"/%00", b"/environ%", b"/\xff", b"/en viron", b"environ", b"", b"http://user@h/environ",
    b"http://[::1]:80/environ", b"http:///environ", b"/environ\x00",
]  # fmt: skip
VERSIONS = [*[b"HTTP/1.1"] * 4, b"HTTP/1.0"]
ODD_VERSIONS = [
    b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"", b"http/1.1", b"HTTP/11",
    b"HTTP/1.1 ", b"HTTP/1.1\x00",
]  # fmt: skip
NAMES = [
    b"X-A", b"Accept", b"User-Agent", b"Cookie", b"Authorization", b"X-Remote-User",
    b"X_Remote_User", b"x-remote-user", b"Content-Type", b"X-Forwarded-For",
    b"X-Forwarded-Proto", b"X-Forwarded-Host", b"X-Forwarded-Prefix", b"Forwarded",
    b"X-Real-IP", b"Connection", b"Expect", b"Trailer", b"TE", b"Keep-Alive", b"X-A.B",
]  # fmt: skip
ODD_NAMES = [
    b"Upgrade", b"X A", b"", b"X-\xc3\xa4", b"X-A\x00", b":authority", b"Host ",
    b"Transfer-Encoding", b"Content-Length", b"Host", b"X-A\t", b"\tX-A",
]  # fmt: skip
VALUES = [
    b"x", b"admin", b"1.2.3.4", b"close", b"keep-alive", b"100-continue", b"", b"a=b; c=d",
    b"\xff\xfe", b"chunked", b"5", b"Basic YWRtaW46YWRtaW4=", b"a  b", b"trailers",
]  # fmt: skip
ODD_VALUES = [
    b"upgrade", b"foo", b"a\x00b", b"a\x01", b"a\x7f", b"a\rb", b"a\nb", b"a\r\n b",
    b"a\r\nX-Injected: 1",
]  # fmt: skip
HOSTS = [*[b"127.0.0.1"] * 4, b"x", b"evil.example", b"[::1]:80", b"x:8080", b"127.0.0.1:1"]
ODD_HOSTS = [b"a:b:c", b"x:99999", b"", b"x y", b"x/y", b"h\xff", b"x@y", b"x,y", b"[::1"]
OWS = [b"", b"", b"", b" ", b"  ", b"\t", b" \t"]
ODD_EOLS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n "]
TRAILER_NAMES = [
    b"Host", b"X-Remote-User", b"Authorization", b"Cookie", b"X-Forwarded-For",
    b"Content-Type", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect",
    b"X-Trailer", b"X_Trailer",
]  # fmt: skip
EXTENSIONS = [*[b""] * 4, b";a=b", b";a", b';a="x;y"', b";" + b"e" * 100]
ODD_EXTENSIONS = [b" ;a=b", b' ; a="x;y"', b";\x00", b";a=b\rc"]
FRAMINGS = ["length", "length", "chunked"]
ODD_FRAMINGS = ["cl_wrong", "cl_two", "cl_te", "te_cl", "cl_odd", "te_odd", "chunk_odd", "none"]
SMUGGLED = b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Smuggled: 1\r\n\r\n"
INTERESTING = [0, 9, 10, 13, 32, 34, 44, 58, 59, 127, 128, 255, ord("0"), ord("f"), ord("G")]

small = st.integers(min_value=0, max_value=1 << 16)


def pick(draw: st.DrawFn, odd: bool, usual: Sequence[bytes], unusual: Sequence[bytes]) -> bytes:
    return draw(st.sampled_from(unusual if odd else usual))


@st.composite
def header_line(draw: st.DrawFn, odd: frozenset[str]) -> bytes:
    weird = "headers" in odd and draw(st.booleans())
    name = pick(draw, weird and draw(st.booleans()), NAMES, ODD_NAMES)
    if weird and draw(st.booleans()):
        value = draw(st.one_of(st.sampled_from(ODD_VALUES), st.binary(max_size=6)))
    else:
        value = draw(st.sampled_from(VALUES))
    eol = pick(draw, "eol" in odd and draw(st.integers(0, 3)) == 0, [b"\r\n"], ODD_EOLS)
    return name + b":" + draw(st.sampled_from(OWS)) + value + draw(st.sampled_from(OWS)) + eol


@st.composite
def body(draw: st.DrawFn, big: bool) -> bytes:
    if big and draw(st.booleans()):  # a body just under or over the 64 KiB limit
        return b"b" * (MAX_BODY + draw(st.integers(min_value=-2, max_value=2)))
    kind = draw(st.sampled_from(["none", "none", "small", "small", "smuggle"]))
    if kind == "none":
        return b""
    if kind == "smuggle":
        return SMUGGLED
    return draw(st.binary(min_size=1, max_size=40))


@st.composite
def chunked_body(draw: st.DrawFn, payload: bytes, odd: bool) -> bytes:
    """``payload`` chunked, with extensions (odd ones if ``odd``) and trailers."""
    out = []
    at = 0
    extensions = ODD_EXTENSIONS + EXTENSIONS if odd else EXTENSIONS
    while at < len(payload):
        size = draw(st.integers(min_value=1, max_value=max(1, len(payload) - at)))
        size_text = b"%x" % size
        if draw(st.booleans()):
            size_text = size_text.upper().rjust(draw(st.integers(1, 6)), b"0")
        out.append(size_text + draw(st.sampled_from(extensions)) + b"\r\n")
        out.append(payload[at : at + size] + b"\r\n")
        at += size
    out.append(b"0" + draw(st.sampled_from(extensions)) + b"\r\n")
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(TRAILER_NAMES))
        out.append(name + b": " + draw(st.sampled_from(VALUES)) + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def request(draw: st.DrawFn, allow_head: bool) -> bytes:
    """One request's bytes: plausible, except in the few respects drawn as odd."""
    odd = frozenset(draw(st.sets(st.sampled_from(ODDITIES), max_size=2)))
    methods = METHODS if allow_head else [m for m in METHODS if m != b"HEAD"]
    method = pick(draw, "method" in odd, methods, ODD_METHODS)
    target = pick(draw, "target" in odd, TARGETS, ODD_TARGETS)
    if "target" in odd and draw(st.booleans()):
        target += draw(st.binary(max_size=4))
    version = pick(draw, "version" in odd, VERSIONS, ODD_VERSIONS)
    sep = pick(draw, "eol" in odd and draw(st.booleans()), [b" "], [b"  ", b"\t"])
    line = method + sep + target + (sep + version if version else b"") + b"\r\n"
    lines = []
    for _ in range(draw(st.sampled_from([0, 2])) if "host" in odd else 1):
        value = pick(draw, "host" in odd and draw(st.booleans()), HOSTS, ODD_HOSTS)
        lines.append(b"Host:" + draw(st.sampled_from(OWS)) + value + b"\r\n")
    lines += draw(st.lists(header_line(odd), max_size=5))
    if "big" in odd and draw(st.booleans()):  # a head just under or over the 8 KiB limit
        lines.append(b"X-Big: " + b"h" * (MAX_HEADER - 40 + draw(st.integers(-8, 48))) + b"\r\n")
    payload = draw(body("big" in odd))
    framing = draw(st.sampled_from(ODD_FRAMINGS if "framing" in odd else FRAMINGS))
    encoded = payload
    if framing == "length":
        if payload:
            lines.append(b"Content-Length: %d\r\n" % len(payload))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked\r\n")
        encoded = draw(chunked_body(payload, "framing" in odd))
    elif framing == "cl_wrong":
        lines.append(b"Content-Length: %d\r\n" % max(0, len(payload) + draw(st.integers(-3, 3))))
    elif framing == "cl_two":
        other = len(payload) + draw(st.integers(0, 2))
        lines += [b"Content-Length: %d\r\n" % len(payload), b"Content-Length: %d\r\n" % other]
    elif framing in ("cl_te", "te_cl"):
        encoded = draw(chunked_body(payload, False))
        both = [b"Content-Length: %d\r\n" % len(payload), b"Transfer-Encoding: chunked\r\n"]
        lines += both if framing == "cl_te" else both[::-1]
    elif framing == "cl_odd":
        odd_lengths = [b"-1", b"99999999999999999999", b"+5", b"0x5", b"5, 5", b"", b"1e3"]
        lines.append(b"Content-Length: " + draw(st.sampled_from(odd_lengths)) + b"\r\n")
    elif framing == "te_odd":
        codings = [b"gzip, chunked", b"chunked, gzip", b"Chunked", b"chunked, chunked", b"x"]
        lines.append(b"Transfer-Encoding: " + draw(st.sampled_from(codings)) + b"\r\n")
        encoded = draw(chunked_body(payload, False))
    elif framing == "chunk_odd":
        lines.append(b"Transfer-Encoding: chunked\r\n")
        bodies = [
            b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\r\nhello\r\n",
            b"3\r\nhello\r\n0\r\n\r\n", b"5\nhello\n0\n\n", b"5\r\nhello\r\n0\r\nX: y\r\n",
        ]  # fmt: skip
        encoded = draw(st.sampled_from(bodies))
    if draw(st.booleans()):
        lines = draw(st.permutations(lines))
    return line + b"".join(lines) + b"\r\n" + encoded


def shown(data: bytes) -> str:
    """``data`` as an exact Python expression, runs of one byte as ``b'b' * 65536``."""
    parts = []
    at = 0
    for run in re.finditer(rb"(.)\1{31,}", data, re.DOTALL):
        if run.start() > at:
            parts.append(repr(data[at : run.start()]))
        parts.append(f"{data[run.start() : run.start() + 1]!r} * {run.end() - run.start()}")
        at = run.end()
    if at < len(data) or not parts:
        parts.append(repr(data[at:]))
    return " + ".join(parts)


class Case:
    """One generated stream and how to send it (a plain class: hypothesis prints dataclasses
    field by field, which for a 64 KiB body is a 64 KiB line)."""

    __slots__ = ("cuts", "pauses", "stream")

    def __init__(self, stream: bytes, cuts: tuple[int, ...], pauses: tuple[float, ...]) -> None:
        self.stream = stream
        self.cuts = cuts
        self.pauses = pauses

    def __repr__(self) -> str:
        return f"Case(stream={shown(self.stream)}, cuts={self.cuts!r}, pauses={self.pauses!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def mutate(data: bytes, ops: Sequence[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, at, byte in ops:
        pos = at % (len(out) + 1)
        if kind == "flip" and pos < len(out):
            out[pos] ^= 1 << (byte % 8)
        elif kind == "set" and pos < len(out):
            out[pos] = byte
        elif kind == "insert":
            out[pos:pos] = bytes([byte])
        elif kind == "delete":
            del out[pos : pos + 1 + byte % 4]
        elif kind == "duplicate":
            out[pos:pos] = out[pos : pos + 1 + byte % 32]
        elif kind == "truncate":
            del out[pos:]
    return bytes(out)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    mutated = draw(st.integers(0, 3)) == 0
    count = draw(st.sampled_from([1, 1, 1, 2, 2, 3]))
    stream = b"".join(draw(request(allow_head=not mutated)) for _ in range(count))
    if mutated:
        ops = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "truncate"]),
                    small,
                    st.one_of(st.sampled_from(INTERESTING), st.integers(0, 255)),
                ),
                min_size=1,
                max_size=3,
            )
        )
        stream = mutate(stream, ops)
    cuts = tuple(draw(st.lists(st.integers(0, max(0, len(stream))), max_size=6)))
    pauses = tuple(draw(st.lists(st.sampled_from([0.0, 0.001, 0.002, 0.005]), max_size=3)))
    return Case(stream, cuts, pauses)


# -- the tests -----------------------------------------------------------------------------------


def run_case(target: Target, case: Case) -> None:
    note(f"stream ({len(case.stream)} bytes): {shown(case.stream)}")
    mark = target.server.mark()
    try:
        converse(target.port, case.stream, case.cuts, case.pauses)
        target.check_alive()
    except OracleFailure as exc:
        raise OracleFailure(
            f"{exc}\n  stream: {shown(case.stream)}\n  cuts: {case.cuts} pauses: {case.pauses}"
            + target.log_since(mark)
        ) from None


def fuzz_round(target: Target, examples: int, round_seed: int) -> Callable[[], None]:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=False,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    def one(case: Case) -> None:
        run_case(target, case)

    if REPRODUCE:
        return reproduce_failure(hypothesis.__version__, REPRODUCE.encode())(one)
    return seed(round_seed)(one)


@pytest.mark.slow
def test_fuzz_front(target: Target) -> None:
    """Generated and mutated request streams: the oracle holds for every one (module doc)."""
    base = int(SEED) if SEED else random.randrange(1 << 32)
    started = time.monotonic()
    done = 0
    rounds = 0
    while done < MAX_EXAMPLES and time.monotonic() - started < BUDGET:
        examples = 1 if REPRODUCE else min(ROUND, MAX_EXAMPLES - done)
        try:
            fuzz_round(target, examples, base + rounds)()
        except BaseException as exc:
            exc.add_note(f"FERRYMAN_FUZZ_SEED={base} (round {rounds})")
            raise
        done += examples
        rounds += 1
        if REPRODUCE:
            break
        if done // RESOURCE_EVERY != (done - examples) // RESOURCE_EVERY:
            target.check_resources()
    target.check_resources()
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {done} examples in {rounds} rounds, {elapsed:.1f} s, seed {base}")
    for key, count in sorted(STATS.items()):
        print(f"  {key}: {count}")


#: A request the reference does not understand (two spaces in its request line), with a
#: body; each case's body ends with bytes that run into the request line after it.
_UNCLEAR = b"GET  /environ  HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"


@pytest.mark.parametrize(
    ("body", "after", "method"),
    [
        (b"\x00", b"HEAD", b"HEAD"),
        (b"A", b"HEAD", b"HEAD"),  # found by the fuzz test: read as "AHEAD", then as a GET's
        (b"xQ", b"HEAD", b"HEAD"),
        (b"Qx", b"HEAD", b"HEAD"),
        (b"a\rB", b"HEAD", b"HEAD"),
        (b"X Y", b"HEAD", b"HEAD"),
        (b"A", b"GET", b"GET"),
        (b"x", b"UNLOCK", b"UNLOCK"),  # a known method, not the LOCK it ends with
        (b"x", b"FOO", b"FOO"),  # unknown to the server: refused whatever precedes it
    ],
)
def test_method_after_body(body: bytes, after: bytes, method: bytes) -> None:
    """The oracle reads the method of a request that follows a body it could not frame."""
    stream = _UNCLEAR % (len(body), body) + after + b" /environ HTTP/1.1\r\nHost: x\r\n\r\n"
    ref = parse_reference(stream)
    assert not ref.requests
    assert [ref.method_of(0), ref.method_of(1)] == [b"GET", method]


FOLLOW = b"GET /environ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fuzz-Follow: 1\r\n\r\n"


@pytest.mark.parametrize("probe", sorted(CORPUS.glob("*.http")), ids=lambda p: p.stem)
def test_corpus_probe(target: Target, probe: Path) -> None:
    """A seed probe, sent whole, byte by byte, and with a pipelined GET /environ after it."""
    data = probe.read_bytes()
    ways = {
        "whole": (data, ()),
        "byte by byte": (data, tuple(range(1, min(len(data), 2048)))),
        "pipelined": (data + FOLLOW, ()),
    }
    for way, (stream, cuts) in ways.items():
        mark = target.server.mark()
        try:
            converse(target.port, stream, cuts, ())
            target.check_alive()
        except OracleFailure as exc:
            raise OracleFailure(
                f"{probe.name}, sent {way}: {exc}{target.log_since(mark)}"
            ) from None
    target.check_resources()
