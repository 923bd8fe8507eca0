"""The front against an attacker, end to end: each probe of the security review, as bytes.

Trailers that try to become headers, memory and disk a client tries to pin, forwarded
headers from untrusted peers, response heads with control characters, and running out
of file descriptors. (Request-line, version and framing rules are rows of the
conformance table in test_conformance.py.)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import APPS, STUB, Server, serving, wait_until
from .wire import Response, Wire, req

GENERIC = APPS / "generic_http"

#: The trailer probe of the review: a chunked body whose trailer section names the fields
#: an attacker would most like to set.
TRAILER_PROBE = (
    b"5\r\nhello\r\n0\r\nX-Remote-User: admin\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n"
    b"Cookie: session=attacker\r\nHost: evil.example\r\nX-Forwarded-For: 198.51.100.66\r\n\r\n"
)


def chunked_post(path: str, *headers: bytes) -> bytes:
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    return head + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"


def environ(port: int, request: bytes) -> dict[str, Any]:
    with Wire(port) as wire:
        wire.send(request)
        resp = wire.read_response()
    assert resp.status == 200, resp
    data: dict[str, Any] = json.loads(resp.body)
    return data


def generic_headers(port: int, request: bytes) -> list[tuple[str, str]]:
    """The header lines the generic app received, in order."""
    with Wire(port) as wire:
        wire.send(request)
        resp = wire.read_response()
    assert resp.status == 200, resp
    return [(name, value) for name, value in json.loads(resp.body)]


@pytest.fixture(scope="module")
def generic() -> Iterator[Server]:
    with serving(GENERIC, "--app-start-command", "python3 server.py") as server:
        yield server


@pytest.fixture(scope="module")
def trusting() -> Iterator[Server]:
    """The stub app behind a server that trusts 127.0.0.1 as a proxy."""
    with serving(STUB, "--trusted-proxies", "127.0.0.1") as server:
        yield server


# -- 1. trailers never become headers ---------------------------------------------------


def test_trailer_fields_never_reach_a_wsgi_app(stub: Server) -> None:
    """Host, Authorization, Cookie, X-Remote-User in a trailer: the app sees none of them."""
    env = environ(stub.port, chunked_post("/environ") + TRAILER_PROBE)
    assert env["HTTP_HOST"] == "x"
    for key in ("HTTP_X_REMOTE_USER", "HTTP_AUTHORIZATION", "HTTP_COOKIE"):
        assert key not in env, (key, env.get(key))
    assert env["CONTENT_LENGTH"] == "5"
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_trailers_leave_the_body_intact(stub: Server) -> None:
    with Wire(stub.port) as wire:
        wire.send(chunked_post("/echo") + TRAILER_PROBE)
        resp = wire.read_response()
    assert (resp.status, resp.body) == (200, b"hello")


def test_a_trailer_cannot_set_the_client_address_behind_a_trusted_proxy(
    trusting: Server,
) -> None:
    """Behind --trusted-proxies, only the head's X-Forwarded-For names the client."""
    request = chunked_post("/environ", b"X-Forwarded-For: 203.0.113.7") + TRAILER_PROBE
    env = environ(trusting.port, request)
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"
    assert env["HTTP_HOST"] == "x"


def test_trailer_fields_never_reach_an_http_app(generic: Server) -> None:
    """A generic app gets one Host, Ferryman's X-Forwarded-Host from the head, no trailer."""
    headers = generic_headers(generic.port, chunked_post("/headers") + TRAILER_PROBE)
    names = [name.lower() for name, _ in headers]
    assert names.count("host") == 1
    by_name = {name.lower(): value for name, value in headers}
    assert by_name["host"] == "x"
    assert by_name["x-forwarded-host"] == "x"
    assert by_name["x-forwarded-for"] == "127.0.0.1"
    for name in ("x-remote-user", "authorization", "cookie", "transfer-encoding"):
        assert name not in names, headers
    assert names.count("content-length") == 1


@pytest.mark.parametrize("field", [b"Content-Length: 99", b"Transfer-Encoding: gzip"])
def test_a_framing_field_in_a_trailer_gets_400(stub: Server, field: bytes) -> None:
    """RFC 9110 6.5.1: framing fields have no place in a trailer section."""
    with Wire(stub.port) as wire:
        wire.send(chunked_post("/echo") + b"5\r\nhello\r\n0\r\n" + field + b"\r\n\r\n")
        resp = wire.read_response()
        assert resp.status == 400
        assert wire.closed_within(5)


def test_an_oversized_trailer_section_gets_431() -> None:
    """Trailers are bounded like a head (--max-header-size)."""
    with serving(STUB, "--max-header-size", "4k") as server, Wire(server.port) as wire:
        filler = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 200) for i in range(30))
        wire.send(chunked_post("/echo") + b"5\r\nhello\r\n0\r\n" + filler + b"\r\n")
        resp = wire.read_response()
        assert resp.status == 431
        assert resp.header("Connection") == "close"
        assert wire.closed_within(5)


# -- 2. memory no input can pin ------------------------------------------------------------


def test_unique_header_names_and_hosts_do_not_pin_core_memory() -> None:
    """10,000 requests, each with an 8 kB header name and an 8 kB Host never seen before:
    the core's RSS ends within a few MB of where it was (every cache is bounded in bytes)."""
    with serving(STUB, "--thread-count", "4", "--no-access-log") as server:
        with Wire(server.port) as wire:
            for _ in range(200):  # warm up: the steady state of ordinary requests
                wire.send(req("GET", "/"))
                assert wire.read_response().status == 200
        idle = server.rss_kb()
        pad = "a" * 8000

        def client(start: int) -> None:
            with Wire(server.port, timeout=30) as wire:
                for i in range(start, start + 2500):
                    wire.send(req("GET", "/", f"Host: h{i}{pad}", f"X-{i}-{pad}: v"))
                    assert wire.read_response().status == 200

        threads = [threading.Thread(target=client, args=(n * 2500,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        grown = server.rss_kb() - idle
        assert grown < 6 * 1024, f"the core grew by {grown} KiB"


# -- 3. disk and connections no slow client can pin ---------------------------------------


@pytest.fixture(scope="module")
def rated() -> Iterator[Server]:
    """Bodies must arrive at 200 B/s or more, measured over each 1 s period."""
    with serving(STUB, "--body-timeout", "1", "--min-body-rate", "200") as server:
        yield server


@pytest.fixture(scope="module")
def spool() -> Iterator[Server]:
    """3 MiB of request bodies in temp files at most, across all connections."""
    with serving(STUB, "--max-spool-size", "3m", "--thread-count", "4") as server:
        yield server


def test_a_trickled_body_gets_408(rated: Server) -> None:
    """1 byte every 0.1 s never stalls for body_timeout, but is below min_body_rate."""
    mark = rated.mark()
    with Wire(rated.port) as wire:
        wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        try:
            while time.monotonic() - started < 10:
                wire.send(b"x")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = wire.read_response()
        assert resp.status == 408
        assert wire.closed_within(5)
    assert time.monotonic() - started < 5
    rated.wait_for_log(r"408: 127\.0\.0\.1 sent its request body too slowly", start=mark)


def test_a_slow_but_steady_body_is_served(rated: Server) -> None:
    """A body at 600 B/s (three times the minimum) arrives whole over several periods."""
    payload = os.urandom(1500)
    with Wire(rated.port) as wire:
        wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1500\r\n\r\n")
        for at in range(0, len(payload), 60):
            wire.send(payload[at : at + 60])
            time.sleep(0.1)
        resp = wire.read_response()
    assert resp.status == 200
    assert resp.body == payload


def _hold_a_spooled_body(port: int, size: int, sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    sock.sendall(b"s" * sent)
    return sock


def _spool_files(server: Server) -> int:
    """Temp files the core holds open (spooled bodies are unlinked at once, so count fds)."""
    count = 0
    for fd in os.listdir(f"/proc/{server.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{server.pid}/fd/{fd}")
        except OSError:
            continue
        count += "ferryman-body-" in target or target.endswith("(deleted)")
    return count


def test_the_spool_budget_refuses_bodies_that_do_not_fit(spool: Server) -> None:
    """With 2 MiB of one body spooled and max_spool_size 3m, a second 2 MiB body gets 503
    at once (and is logged); once the first is done, the second fits and is served."""
    mark = spool.mark()
    mib = 1024 * 1024
    holder = _hold_a_spooled_body(spool.port, 2 * mib + 10, 2 * mib)
    try:
        assert wait_until(lambda: _spool_files(spool) == 1, 10)
        with Wire(spool.port) as wire:
            wire.send(req("POST", "/digest", f"Content-Length: {2 * mib}"))
            resp = wire.read_response()
            assert resp.status == 503
            assert resp.header("Connection") == "close"
        spool.wait_for_log(r"503 for a request body from 127\.0\.0\.1.*max_spool_size", start=mark)
        # A chunked body finds out as it grows past what is left.
        with Wire(spool.port) as wire:
            wire.send(req("POST", "/digest", "Transfer-Encoding: chunked"))
            try:
                for _ in range(4):
                    wire.send(b"80000\r\n" + b"c" * 0x80000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert wire.read_response().status == 503
        holder.sendall(b"s" * 10)
        holder.settimeout(10)
        assert holder.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        holder.close()
    status, _, body = spool.request("POST", "/digest", body=b"t" * 2 * mib)
    assert status == 200
    assert body.startswith(b"%d " % (2 * mib))
    assert wait_until(lambda: _spool_files(spool) == 0, 10)


# -- 4. forwarded headers from untrusted peers -------------------------------------------------

#: Every header a framework reads to learn the client's address, the scheme, the host, the
#: port or the path prefix from a proxy, and who reads it.
FORWARDED_FIELDS = [
    ("X-Forwarded-For", "Werkzeug ProxyFix x_for, Django apps, Express trust proxy, Rails"),
    ("X-Forwarded-Proto", "ProxyFix x_proto, Django SECURE_PROXY_SSL_HEADER, Express, Rack"),
    ("X-Forwarded-Host", "ProxyFix x_host, Django USE_X_FORWARDED_HOST, Express, Rack"),
    ("X-Forwarded-Port", "ProxyFix x_port, Django USE_X_FORWARDED_PORT, Rack"),
    ("X-Forwarded-Prefix", "ProxyFix x_prefix, Spring, Rack"),
    ("X-Forwarded-Ssl", "Rack, gunicorn secure_scheme_headers"),
    ("X-Forwarded-Protocol", "gunicorn secure_scheme_headers, Django recipes"),
    ("X-Forwarded-Scheme", "Rack"),
    ("X-Forwarded-Server", "Apache mod_proxy"),
    ("Forwarded", "RFC 7239: Rack, Django-Forwarded, Express 5 proxies"),
    ("X-Real-IP", "nginx recipes, many apps"),
    ("Client-IP", "Rails ActionDispatch::RemoteIp"),
    ("X-Client-IP", "request-ip (Node)"),
    ("True-Client-IP", "Akamai, Cloudflare"),
    ("CF-Connecting-IP", "Cloudflare"),
    ("Fastly-Client-IP", "Fastly"),
    ("X-Cluster-Client-IP", "Rackspace, request-ip"),
    ("X-Original-Forwarded-For", "ingress-nginx"),
    ("Front-End-Https", "Microsoft"),
    ("X-Url-Scheme", "Rack recipes"),
    ("X-Scheme", "nginx recipes, Flask snippets"),
    ("X-Script-Name", "Flask reverse-proxy recipes"),
    ("X-Original-URL", "Symfony (removed), IIS"),
    ("X-Rewrite-URL", "Symfony (removed), IIS"),
    ("X-Original-Host", "Azure"),
]
_SENT = [f"{name}: claimed-{i}" for i, (name, _) in enumerate(FORWARDED_FIELDS)]


def _key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def test_no_forwarded_field_reaches_a_wsgi_app_from_an_untrusted_peer(stub: Server) -> None:
    env = environ(stub.port, req("GET", "/environ", *_SENT))
    leaked = [name for name, _ in FORWARDED_FIELDS if _key(name) in env]
    assert leaked == []
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


def test_no_forwarded_field_reaches_an_http_app_from_an_untrusted_peer(generic: Server) -> None:
    headers = dict(generic_headers(generic.port, req("GET", "/headers", *_SENT)))
    leaked = [name for name, _ in FORWARDED_FIELDS if headers.get(name, "").startswith("claim")]
    assert leaked == []
    assert headers["X-Forwarded-For"] == "127.0.0.1"  # Ferryman's own, from the peer


def test_a_trusted_proxy_may_send_every_forwarded_field(trusting: Server) -> None:
    env = environ(trusting.port, req("GET", "/environ", *_SENT))
    missing = [name for name, _ in FORWARDED_FIELDS if _key(name) not in env]
    assert missing == []


# -- 6. response heads with control characters are never forwarded ---------------------------


@pytest.mark.parametrize("char", ["0b", "7f", "1b", "00", "0d"])
def test_a_wsgi_header_value_with_a_control_character_gets_500(stub: Server, char: str) -> None:
    with Wire(stub.port) as wire:
        wire.send(req("GET", f"/bad-value?c={char}"))
        resp = wire.read_response()
    assert resp.status == 500
    assert resp.header("X-Bad") is None


@pytest.mark.parametrize("char", ["0b", "7f", "1b"])
def test_an_http_app_header_value_with_a_control_character_gets_502(
    generic: Server, char: str
) -> None:
    with Wire(generic.port) as wire:
        wire.send(req("GET", f"/bad-header?c={char}"))
        resp: Response = wire.read_response()
    assert resp.status == 502
    assert resp.header("X-Bad") is None
    assert generic.get("/")[0] == 200


def test_a_tab_in_a_header_value_is_fine(stub: Server, generic: Server) -> None:
    with Wire(stub.port) as wire:
        wire.send(req("GET", "/bad-value?c=09"))
        assert wire.read_response().header("X-Bad") == "before\tafter"
    with Wire(generic.port) as wire:
        wire.send(req("GET", "/bad-header?c=09"))
        assert wire.read_response().header("X-Bad") == "before\tafter"


# -- 7. running out of file descriptors is loud ------------------------------------------------


def test_running_out_of_fds_is_logged_and_connections_wait_in_the_backlog() -> None:
    """With ulimit -n 64, 100 connections at once: accept fails, the log says so with the
    limit, and every connection is served once the earlier ones are gone."""
    with serving(STUB, "--thread-count", "4", fd_limit=64) as server:
        mark = server.mark()
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=20)]
        try:
            for _ in range(99):
                socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=20))
            server.wait_for_log(r"Cannot accept connections: .*\(limit 64, (\d+ open|all in use)\)")
            for sock in socks[:50]:  # gone without a word: their fds are freed
                sock.close()
            served = 0
            waiting = socks[50:]
            for sock in waiting:  # those still in the backlog are accepted now, and served
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                served += data.startswith(b"HTTP/1.1 200 ")
                sock.close()
            assert served == len(waiting)
        finally:
            for sock in socks:
                sock.close()
        assert "Traceback" not in "\n".join(server.lines[mark:])
        assert server.get("/")[0] == 200


# -- requests after a body the front decoded, or an upgrade it ignored ------------------------


@pytest.mark.parametrize(
    "first",
    [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5 ; a=b\r\nhello\r\n0\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=["after-a-chunked-body", "after-an-ignored-upgrade"],
)
def test_the_next_request_is_read_as_usual(stub: Server, first: bytes) -> None:
    """Pipelined behind a chunked body (decoded by the front) or an upgrade request (served
    as plain HTTP), the next request is served, and a bad one refused with 400, not 500."""
    with Wire(stub.port) as wire:
        wire.send(first + req("GET", "/"))
        assert wire.read_response().status == 200
        assert wire.read_response().body == b"Hello from Ferryman's stub app\n"
    with Wire(stub.port) as wire:
        wire.send(first + req("GET", "/", "Authorization: a", "Authorization: b"))
        assert wire.read_response().status == 200
        refused = wire.read_response()
        assert refused.status == 400
        assert b"repeated authorization" in refused.body


# -- regressions found by the fuzz target ---------------------------------------------------


def test_a_pri_request_pipelined_behind_another_in_one_packet_gets_505_at_once(
    stub: Server,
) -> None:
    """Found by the fuzz target: 'PRI /x HTTP/1.1' right behind a GET in the same packet
    waited for the rest of an HTTP/2 preface until the header timeout (408 after 30 s);
    alone it got 505 at once. Now both get 505 at once."""
    with Wire(stub.port, timeout=5) as wire:
        started = time.monotonic()
        wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI /environ HTTP/1.1\r\n\r\n")
        first = wire.read_response()
        second = wire.read_response()
        assert (first.status, second.status) == (200, 505)
        assert wire.closed_within(3)
        assert time.monotonic() - started < 3
