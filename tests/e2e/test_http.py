"""HTTP conformance, end to end: a real Ferryman process, the real WSGI stub app, real clients.

Most checks share the module's ``stub`` server. Checks that need other flags share one
``limits`` server (small body and header limits, 1 s header and keep-alive timeouts);
forwarded headers from a trusted proxy and ``wsgiref.validate`` each start their own.
Byte-exact and malformed traffic goes through ``Wire``, a raw socket with a small
HTTP/1.1 response parser that checks framing strictly.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import select
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from .harness import STUB, Server, serving
from .wire import Response, Wire, chunked, req

STUB_SOURCE = (STUB / "passenger_wsgi.py").read_bytes()
HELLO = b"Hello from Ferryman's stub app\n"


def environ_of(server: Server, request: bytes) -> dict[str, Any]:
    """The environ the app saw for a raw request to /environ."""
    with Wire(server.port) as wire:
        wire.send(request)
        resp = wire.read_response()
    assert resp.status == 200, resp
    data: dict[str, Any] = json.loads(resp.body)
    return data


def assert_date_and_server(resp: Response) -> None:
    date = resp.header("Date")
    assert date is not None, resp.headers
    assert date.endswith(" GMT"), date
    sent = parsedate_to_datetime(date)
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 120, date
    server = resp.header("Server")
    assert server is not None and server.startswith("Ferryman"), resp.headers


def assert_refused(resp: Response, wire: Wire, status: int) -> None:
    """The server's own error response: the status, Date/Server, and the connection closed."""
    assert resp.status == status, resp
    assert resp.complete
    assert_date_and_server(resp)
    assert resp.header("Connection") == "close", resp.headers
    assert wire.closed_within(5), "the connection stayed open after the error response"


@pytest.fixture(scope="module")
def limits() -> Iterator[Server]:
    """One process with tiny limits: 1 KiB bodies, 4 KiB heads, 1 s header/keep-alive timeouts."""
    with serving(
        STUB,
        "--min-instances", "1",
        "--max-pool-size", "1",
        "--max-body-size", "1k",
        "--max-header-size", "4k",
        "--header-timeout", "1",
        "--keepalive-timeout", "1",
    ) as server:  # fmt: skip
        yield server


# -- requests and bodies ------------------------------------------------------------------


def test_get(stub: Server) -> None:
    """A GET is answered 200 with the app's body, its Content-Type and Content-Length."""
    status, headers, body = stub.request("GET", "/")
    assert status == 200
    assert body == HELLO
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(HELLO))


def test_post_body_is_echoed(stub: Server) -> None:
    """A POST body reaches the app byte for byte (all 256 byte values)."""
    payload = bytes(range(256)) * 8
    status, headers, body = stub.request("POST", "/echo", body=payload)
    assert status == 200
    assert body == payload
    assert headers["content-length"] == str(len(payload))


def test_20_mb_upload_reaches_the_app_whole(stub: Server) -> None:
    """A 20 MB upload reaches the app complete: size, sha256 and CONTENT_LENGTH match."""
    payload = os.urandom(20 * 1024 * 1024)
    status, _, body = stub.request("POST", "/digest", body=payload, timeout=60)
    assert status == 200
    size, digest, content_length = body.decode().split(" ")
    assert int(size) == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()
    assert content_length == str(len(payload))


def test_chunked_upload_arrives_complete_with_content_length(stub: Server) -> None:
    """A chunked request body reaches the app de-chunked and complete, with CONTENT_LENGTH set."""
    pieces = [os.urandom(n) for n in (1, 10, 4096, 65536, 1_500_000, 7)]
    payload = b"".join(pieces)
    conn = stub.connection(timeout=30)
    try:
        conn.request("POST", "/digest", body=iter(pieces), encode_chunked=True)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    assert body.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()} {len(payload)}"


def test_chunked_upload_with_extensions_and_trailer(stub: Server) -> None:
    """Chunk extensions and a trailer section are accepted and do not end up in the body."""
    body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with Wire(stub.port) as wire:
        wire.send(req("POST", "/echo", "Transfer-Encoding: chunked") + body)
        resp = wire.read_response()
    assert resp.status == 200
    assert resp.body == b"hello world"


def test_chunked_upload_environ(stub: Server) -> None:
    """For a chunked body the app sees CONTENT_LENGTH and no Transfer-Encoding header."""
    request = req("POST", "/environ", "Transfer-Encoding: chunked", "Content-Type: text/plain")
    env = environ_of(stub, request + chunked(b"abc", b"defg"))
    assert env["CONTENT_LENGTH"] == "7"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert "HTTP_CONTENT_TYPE" not in env


def test_wsgi_input_readlines(stub: Server) -> None:
    """wsgi.input.readlines() returns the body's lines, the last one without a newline."""
    status, _, body = stub.request("POST", "/lines", body=b"one\ntwo\n\nlast")
    assert status == 200
    assert body == b"4\none\ntwo\n\nlast"


# -- streamed responses ----------------------------------------------------------------------


def test_streamed_response_is_chunked(stub: Server) -> None:
    """A body of unknown length is sent chunked, correctly framed and ended by the last chunk."""
    with Wire(stub.port) as wire:
        wire.send(req("GET", "/stream?n=5"))
        resp = wire.read_response()
        assert resp.status == 200
        assert resp.header("Transfer-Encoding") == "chunked"
        assert resp.header("Content-Length") is None
        assert resp.complete
        assert all(resp.chunks)
        assert resp.body == b"".join(b"chunk %d\n" % i for i in range(5))
        # The connection is still usable: the framing ended where it should.
        wire.send(req("GET", "/"))
        assert wire.read_response().body == HELLO


def test_streaming_is_incremental(stub: Server) -> None:
    """The first chunk of a slow stream reaches the client while the rest is still pending."""
    with Wire(stub.port) as wire:
        wire.send(req("GET", "/stream?n=3&delay=0.5"))
        resp = wire.read_head()
        assert resp.status == 200
        assert resp.header("Transfer-Encoding") == "chunked"
        assert wire.read_until(b"\r\n") == b"8\r\n"
        assert wire.read_exact(10) == b"chunk 0\n\r\n"
        first_at = time.monotonic()
        assert b"chunk 1" not in wire.buffer
        rest = wire.read_until(b"0\r\n\r\n")
        done_at = time.monotonic()
    assert rest == b"8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n0\r\n\r\n"
    # Two more 0.5 s delays follow the first chunk; a buffering server sends all at once.
    assert done_at - first_at >= 0.5


# -- connections: keep-alive, pipelining -----------------------------------------------------


def test_keepalive_reuses_the_connection(stub: Server) -> None:
    """Several requests on one http.client connection all come from the same client port."""
    conn = stub.connection(timeout=10)
    try:
        ports = []
        for i in range(5):
            conn.request("POST", "/echo", body=b"body %d" % i)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"body %d" % i
            conn.request("GET", "/environ")
            resp = conn.getresponse()
            assert resp.status == 200
            ports.append(json.loads(resp.read())["REMOTE_PORT"])
        assert conn.sock is not None
        local_port = conn.sock.getsockname()[1]
    finally:
        conn.close()
    assert ports == [str(local_port)] * 5


def test_pipelined_requests_are_answered_in_order(stub: Server) -> None:
    """Three requests sent in one write get three responses, in the order they were sent."""
    with Wire(stub.port) as wire:
        wire.send(
            req("GET", "/stream?n=2")
            + req("POST", "/echo", body=b"pipelined body")
            + req("GET", "/pid")
        )
        first = wire.read_response()
        second = wire.read_response()
        third = wire.read_response()
        assert (first.status, second.status, third.status) == (200, 200, 200)
        assert first.complete and first.header("Transfer-Encoding") == "chunked"
        assert first.body == b"chunk 0\nchunk 1\n"
        assert second.body == b"pipelined body"
        assert int(third.body) in stub.app_pids
        # More of them, each with its own body, still in order and on the same connection.
        wire.send(b"".join(req("POST", "/echo", body=b"request %d" % i) for i in range(8)))
        bodies = [wire.read_response().body for _ in range(8)]
        assert bodies == [b"request %d" % i for i in range(8)]


# -- HEAD -----------------------------------------------------------------------------------


def test_head_has_no_body_and_the_same_length(stub: Server) -> None:
    """HEAD sends the headers of GET, Content-Length included, and no body bytes."""
    with Wire(stub.port) as wire:
        wire.send(req("HEAD", "/") + req("GET", "/"))
        head = wire.read_response("HEAD")
        get = wire.read_response()  # would misparse if HEAD had left body bytes behind
    assert head.status == get.status == 200
    assert get.body == HELLO
    assert head.header("Content-Length") == get.header("Content-Length") == str(len(HELLO))
    assert head.header("Content-Type") == get.header("Content-Type")


def test_head_on_a_streaming_route_has_no_body(stub: Server) -> None:
    """HEAD on a streamed route sends no body, not even a last chunk."""
    with Wire(stub.port) as wire:
        wire.send(req("HEAD", "/stream?n=3") + req("GET", "/"))
        head = wire.read_response("HEAD")
        get = wire.read_response()
    assert head.status == 200
    assert get.status == 200
    assert get.body == HELLO


def test_head_answered_with_an_empty_list_claims_no_length(stub: Server) -> None:
    """An app returning [] for HEAD does not know GET's length: no Content-Length: 0."""
    with Wire(stub.port) as wire:
        wire.send(req("HEAD", "/head-aware") + req("GET", "/head-aware"))
        head = wire.read_response("HEAD")
        get = wire.read_response()
    assert head.status == get.status == 200
    assert head.header("Content-Length") is None
    assert get.header("Content-Length") == "13"
    assert get.body == b"the GET body\n"


# -- Expect: 100-continue -----------------------------------------------------------------


def test_expect_100_continue(stub: Server) -> None:
    """With Expect: 100-continue the client gets 100 Continue, then sends the body, then 200."""
    body = b"sent after 100 Continue"
    with Wire(stub.port, timeout=5) as wire:
        wire.send(req("POST", "/echo", "Expect: 100-continue", f"Content-Length: {len(body)}"))
        interim = wire.read_head()
        assert (interim.version, interim.status) == ("HTTP/1.1", 100)
        wire.send(body)
        resp = wire.read_response()
    assert resp.status == 200
    assert resp.body == body


def test_expect_100_continue_too_large_gets_413_without_100(limits: Server) -> None:
    """With Expect: 100-continue and a length over the limit the answer is 413, never 100."""
    with Wire(limits.port, timeout=5) as wire:
        wire.send(req("POST", "/echo", "Expect: 100-continue", "Content-Length: 2000"))
        resp = wire.read_response()
        assert_refused(resp, wire, 413)


# -- malformed requests and limits -----------------------------------------------------------

MALFORMED = {
    "garbage request line": b"this is not http\r\n\r\n",
    "bad chunk size": req("POST", "/echo", "Transfer-Encoding: chunked")
    + b"zz\r\nabc\r\n0\r\n\r\n",
    "content-length and chunked": req(
        "POST", "/echo", "Content-Length: 3", "Transfer-Encoding: chunked"
    )
    + chunked(b"abc"),
    "two content-lengths": req("POST", "/echo", "Content-Length: 3", "Content-Length: 4") + b"abcd",
    "content-length not a number": req("POST", "/echo", "Content-Length: 3x") + b"abc",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_400_and_close(stub: Server, request_bytes: bytes) -> None:
    """A malformed request gets 400 and the connection is closed."""
    with Wire(stub.port) as wire:
        wire.send(request_bytes)
        resp = wire.read_response()
        assert_refused(resp, wire, 400)


def test_path_decoding_to_nul_gets_400(stub: Server) -> None:
    """A request path that percent-decodes to a NUL byte gets 400, not the app."""
    with Wire(stub.port) as wire:
        wire.send(req("GET", "/environ/a%00b"))
        resp = wire.read_response()
    assert resp.status == 400
    assert resp.body.startswith(b"Bad Request")
    assert_date_and_server(resp)


def test_http11_request_without_host_gets_400(stub: Server) -> None:
    """An HTTP/1.1 request without a Host header gets 400 (RFC 9112 section 3.2)."""
    with Wire(stub.port) as wire:
        wire.send(b"GET / HTTP/1.1\r\n\r\n")
        resp = wire.read_response()
        assert_refused(resp, wire, 400)


def test_bad_request_after_a_good_one_answers_the_good_one_first(stub: Server) -> None:
    """A pipelined good request is answered before the malformed one after it gets 400."""
    with Wire(stub.port) as wire:
        wire.send(req("POST", "/echo", body=b"good") + b"garbage\r\n\r\n")
        good = wire.read_response()
        assert good.status == 200
        assert good.body == b"good"
        assert_refused(wire.read_response(), wire, 400)


LIMITED = {
    "content-length over the limit": req("POST", "/echo", body=b"x" * 2000),
    "chunked body over the limit": req("POST", "/echo", "Transfer-Encoding: chunked")
    + chunked(*[b"y" * 300] * 4),
}


@pytest.mark.parametrize("request_bytes", LIMITED.values(), ids=LIMITED.keys())
def test_body_over_max_body_size_gets_413_and_close(limits: Server, request_bytes: bytes) -> None:
    """A body over --max-body-size gets 413 and the connection is closed."""
    with Wire(limits.port) as wire:
        wire.send(request_bytes)
        resp = wire.read_response()
        assert_refused(resp, wire, 413)


def test_body_at_max_body_size_is_accepted(limits: Server) -> None:
    """A body of exactly --max-body-size bytes, plain or chunked, is accepted."""
    payload = b"z" * 1024
    with Wire(limits.port) as wire:
        wire.send(req("POST", "/echo", body=payload))
        assert wire.read_response().body == payload
        wire.send(
            req("POST", "/echo", "Transfer-Encoding: chunked")
            + chunked(payload[:1000], payload[1000:])
        )
        assert wire.read_response().body == payload


def test_huge_header_gets_431_and_close(limits: Server) -> None:
    """A request head over --max-header-size gets 431 and the connection is closed."""
    with Wire(limits.port) as wire:
        wire.send(req("GET", "/", "X-Big: " + "a" * 5000))
        resp = wire.read_response()
        assert_refused(resp, wire, 431)


def test_many_headers_over_the_limit_get_431(limits: Server) -> None:
    """Many small headers that add up to more than --max-header-size also get 431."""
    headers = [f"X-Header-{i}: {'v' * 40}" for i in range(200)]
    with Wire(limits.port) as wire:
        wire.send(req("GET", "/", *headers))
        resp = wire.read_response()
        assert_refused(resp, wire, 431)


# -- HTTP/1.0 --------------------------------------------------------------------------------


def test_http10_response_of_unknown_length_is_close_delimited(stub: Server) -> None:
    """HTTP/1.0: a body of unknown length is sent unframed and ended by closing the connection."""
    with Wire(stub.port) as wire:
        wire.send(b"GET /stream?n=3 HTTP/1.0\r\n\r\n")
        resp = wire.read_response()
        assert resp.status == 200
        assert resp.header("Transfer-Encoding") is None
        assert resp.header("Content-Length") is None
        assert resp.body == b"chunk 0\nchunk 1\nchunk 2\n"
        assert wire.eof


def test_http10_keepalive_with_known_length_stays_open(stub: Server) -> None:
    """HTTP/1.0 with Connection: keep-alive and a known length: the connection stays open."""
    with Wire(stub.port) as wire:
        for _ in range(3):
            wire.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = wire.read_response()
            assert resp.status == 200
            assert resp.body == HELLO
            assert resp.header("Content-Length") == str(len(HELLO))
            assert (resp.header("Connection") or "").lower() == "keep-alive"
            assert not wire.eof


def test_http10_without_keepalive_is_closed(stub: Server) -> None:
    """HTTP/1.0 without Connection: keep-alive: the connection closes after the response."""
    with Wire(stub.port) as wire:
        wire.send(b"GET / HTTP/1.0\r\n\r\n")
        resp = wire.read_response()
        assert resp.status == 200
        assert resp.body == HELLO
        assert wire.closed_within(5)


# -- PEP 3333 as seen from outside -------------------------------------------------------------


def test_write_callable(stub: Server) -> None:
    """Bytes passed to write() come first, then the returned iterable's."""
    status, _, body = stub.request("GET", "/write")
    assert status == 200
    assert body == b"written directly\nthen returned\n"


def test_file_wrapper(stub: Server) -> None:
    """A wsgi.file_wrapper body sends the whole file."""
    status, _, body = stub.request("GET", "/file")
    assert status == 200
    assert body == STUB_SOURCE


def test_close_is_called_on_the_iterable(stub: Server) -> None:
    """The server calls close() on the app's iterable after sending it."""
    marker = uuid.uuid4().hex
    mark = stub.mark()
    status, _, body = stub.request("GET", f"/closing?marker={marker}")
    assert status == 200
    assert body == b"closing body\n"
    stub.wait_for_log(rf"App \d+ output: stub: close\(\) called for {marker}$", start=mark)


def test_start_response_with_exc_info_before_sending(stub: Server) -> None:
    """start_response with exc_info before any byte was sent replaces the response."""
    status, _, body = stub.request("GET", "/exc-info")
    assert status == 500
    assert body == b"error page from the app\n"


def test_app_error_before_start_response(stub: Server) -> None:
    """An exception before start_response gives 500, and its traceback goes to the log."""
    mark = stub.mark()
    status, headers, body = stub.request("GET", "/error")
    assert status == 500
    assert body == b"Internal Server Error\n"
    assert "date" in headers and "server" in headers
    found = stub.wait_for_log(
        r"App (\d+) output: RuntimeError: stub error before start_response", start=mark
    )
    pid = found.group(1)
    log = stub.log_text().splitlines()[mark:]
    assert f"App {pid} output: Traceback (most recent call last):" in [
        line.split("] ", 1)[-1] for line in log
    ]


def test_app_giving_an_invalid_header_gets_a_500(stub: Server) -> None:
    """Headers that break the WSGI contract give a clean 500 (not a cut response), the
    reason is logged, and the connection serves the next request."""
    mark = stub.mark()
    conn = stub.connection()
    try:
        conn.request("GET", "/bad-header")
        response = conn.getresponse()
        assert response.status == 500
        assert response.read() == b"Internal Server Error\n"
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    finally:
        conn.close()
    stub.wait_for_log(r"App \d+ output: .*BadResponse: invalid header name 'Bad Name'", start=mark)


def test_app_error_mid_stream_leaves_the_response_incomplete(stub: Server) -> None:
    """An exception mid-stream ends the connection without the last chunk."""
    with Wire(stub.port) as wire:
        wire.send(req("GET", "/error-mid"))
        resp = wire.read_response()
        assert resp.status == 200
        assert resp.header("Transfer-Encoding") == "chunked"
        assert resp.body == b"partial\n"
        assert not resp.complete
        assert wire.eof
    conn = stub.connection(timeout=10)
    try:
        conn.request("GET", "/error-mid")
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()


def test_repeated_headers_and_set_cookie_pass_through(stub: Server) -> None:
    """Repeated response headers and Set-Cookie reach the client, in order, with the status."""
    conn = stub.connection(timeout=10)
    try:
        conn.request("GET", "/headers")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 201
    assert resp.reason == "Created"
    assert resp.msg.get_all("X-Custom") == ["one", "two"]
    assert resp.msg.get_all("Set-Cookie") == ["a=1"]
    assert body == b"created\n"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses_have_no_body(stub: Server, code: int) -> None:
    """204 and 304 responses carry no body and no Transfer-Encoding."""
    with Wire(stub.port) as wire:
        wire.send(req("GET", f"/status?code={code}") + req("GET", "/"))
        resp = wire.read_response()
        after = wire.read_response()  # would misparse if body bytes followed the 204/304
    assert resp.status == code
    assert resp.header("Transfer-Encoding") is None
    assert after.status == 200
    assert after.body == HELLO


def test_204_has_no_content_length(stub: Server) -> None:
    """A 204 response has no Content-Length header (RFC 9110 section 8.6: MUST NOT)."""
    with Wire(stub.port) as wire:
        wire.send(req("GET", "/status?code=204", "Connection: close"))
        resp = wire.read_response()
    assert resp.status == 204
    assert resp.header("Content-Length") is None, resp.headers


# -- environ -----------------------------------------------------------------------------------


def test_environ_basics(stub: Server) -> None:
    """The environ has the request's method, path, raw query, protocol, addresses and wsgi keys."""
    conn = stub.connection(timeout=10)
    try:
        conn.request("GET", "/environ?a=%20b&c=d+e&f=%C3%A9", headers={"X-Foo": "bar"})
        resp = conn.getresponse()
        env: dict[str, Any] = json.loads(resp.read())
        assert conn.sock is not None
        local_port = conn.sock.getsockname()[1]
    finally:
        conn.close()
    assert resp.status == 200
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=%20b&c=d+e&f=%C3%A9"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(stub.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["HTTP_HOST"] == f"127.0.0.1:{stub.port}"
    assert env["HTTP_X_FOO"] == "bar"
    assert env.get("CONTENT_LENGTH", "") in ("", "0")
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False


def test_environ_post(stub: Server) -> None:
    """For a POST the environ has REQUEST_METHOD, CONTENT_LENGTH and CONTENT_TYPE."""
    env = environ_of(stub, req("POST", "/environ", "Content-Type: application/json", body=b"{}"))
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_LENGTH"] == "2"
    assert env["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_LENGTH" not in env
    assert "HTTP_CONTENT_TYPE" not in env


def test_environ_http10(stub: Server) -> None:
    """An HTTP/1.0 request has SERVER_PROTOCOL HTTP/1.0; without Host, the listening address."""
    env = environ_of(stub, b"GET /environ HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(stub.port)


def test_path_info_is_percent_decoded_as_latin1(stub: Server) -> None:
    """PATH_INFO is percent-decoded to bytes shown as latin-1: %C3%A9 gives the chars 'Ã©'."""
    env = environ_of(stub, req("GET", "/environ/caf%C3%A9%20x?q=%C3%A9"))
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9 x"
    assert env["QUERY_STRING"] == "q=%C3%A9"


@pytest.mark.parametrize(
    ("host", "name", "port"),
    [("example.com:8080", "example.com", "8080"), ("example.com", "example.com", "80")],
)
def test_server_name_and_port_come_from_host(stub: Server, host: str, name: str, port: str) -> None:
    """SERVER_NAME and SERVER_PORT come from the Host header (port 80 when it has none)."""
    env = environ_of(stub, req("GET", "/environ", f"Host: {host}"))
    assert env["HTTP_HOST"] == host
    assert env["SERVER_NAME"] == name
    assert env["SERVER_PORT"] == port


def test_request_headers_in_environ(stub: Server) -> None:
    """Headers become HTTP_*; repeats join with ', '; a name with '_' is dropped, not merged."""
    env = environ_of(
        stub,
        req(
            "GET",
            "/environ",
            "X-Multi: a",
            "X-Multi: b",
            "X_Foo: smuggled",
            "X-Foo: real",
            "User-Agent: conformance-test",
            "Accept: text/plain",
            "Accept: text/html",
        ),
    )
    assert env["HTTP_X_MULTI"] == "a, b"
    assert env["HTTP_X_FOO"] == "real"
    assert env["HTTP_USER_AGENT"] == "conformance-test"
    assert env["HTTP_ACCEPT"] == "text/plain, text/html"
    assert not any(v == "smuggled" or "smuggled" in str(v) for v in env.values())


# -- forwarded headers ---------------------------------------------------------------------------

FORWARDED = (
    "X-Forwarded-For: 198.51.100.9, 203.0.113.7",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: example.org",
)


def test_forwarded_headers_are_ignored_from_an_untrusted_peer(stub: Server) -> None:
    """Without --trusted-proxies, X-Forwarded-* change nothing and never reach the app."""
    env = environ_of(stub, req("GET", "/environ", "Host: app.test:8000", *FORWARDED))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "app.test:8000"
    assert env["SERVER_NAME"] == "app.test"
    assert env["SERVER_PORT"] == "8000"
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert "HTTP_X_FORWARDED_PROTO" not in env


def test_forwarded_headers_are_honoured_from_a_trusted_proxy() -> None:
    """With --trusted-proxies 127.0.0.1, X-Forwarded-For/-Proto/-Host set the client's view."""
    with serving(STUB, "--trusted-proxies", "127.0.0.1") as server:
        env = environ_of(server, req("GET", "/environ", "Host: app.test:8000", *FORWARDED))
        assert env["REMOTE_ADDR"] == "203.0.113.7"
        assert env["wsgi.url_scheme"] == "https"
        assert env["HTTP_HOST"] == "example.org"
        assert env["SERVER_NAME"] == "example.org"
        assert env["SERVER_PORT"] == "443"
        # The rightmost hop that is not a trusted proxy is the client.
        env = environ_of(server, req("GET", "/environ", "X-Forwarded-For: 203.0.113.8, 127.0.0.1"))
        assert env["REMOTE_ADDR"] == "203.0.113.8"
        assert env["wsgi.url_scheme"] == "http"
        assert env["SERVER_NAME"] == "127.0.0.1"


# -- Date and Server ---------------------------------------------------------------------------


def test_date_and_server_on_app_responses(stub: Server) -> None:
    """App responses, fixed-length and streamed, carry a current Date and a Server header."""
    with Wire(stub.port) as wire:
        for target in ("/", "/stream?n=2", "/headers", "/error"):
            wire.send(req("GET", target))
            assert_date_and_server(wire.read_response())


def test_date_and_server_on_the_servers_own_errors(stub: Server, limits: Server) -> None:
    """The server's own error responses (400, 413, 431) carry Date and Server too."""
    cases = [
        (stub, b"garbage\r\n\r\n", 400),
        (limits, req("POST", "/echo", body=b"x" * 2000), 413),
        (limits, req("GET", "/", "X-Big: " + "b" * 5000), 431),
    ]
    for server, request_bytes, status in cases:
        with Wire(server.port) as wire:
            wire.send(request_bytes)
            resp = wire.read_response()
            assert resp.status == status
            assert_date_and_server(resp)


# -- wsgiref.validate -----------------------------------------------------------------------------


def test_wsgiref_validate_finds_nothing_wrong() -> None:
    """Under wsgiref.validate (warnings as errors) the usual routes all work and log no warning."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "2",
        env={"STUB_VALIDATE": "1"},
    ) as server:  # fmt: skip
        upload = os.urandom(300_000)
        expected_digest = f"{len(upload)} {hashlib.sha256(upload).hexdigest()} {len(upload)}"
        with Wire(server.port) as wire:
            checks: list[tuple[bytes, str, int, bytes | None]] = [
                (req("GET", "/"), "GET", 200, HELLO),
                (req("GET", "/environ?x=1"), "GET", 200, None),
                (req("POST", "/digest", body=upload), "POST", 200, expected_digest.encode()),
                (
                    req("POST", "/digest", "Transfer-Encoding: chunked")
                    + chunked(upload[:1000], upload[1000:]),
                    "POST",
                    200,
                    expected_digest.encode(),
                ),
                (req("POST", "/lines", body=b"a\nb\n"), "POST", 200, b"2\na\nb\n"),
                (req("GET", "/stream?n=3"), "GET", 200, b"chunk 0\nchunk 1\nchunk 2\n"),
                (req("HEAD", "/"), "HEAD", 200, b""),
                (req("HEAD", "/stream?n=3"), "HEAD", 200, b""),
                (req("GET", "/write"), "GET", 200, b"written directly\nthen returned\n"),
                (req("GET", "/file"), "GET", 200, STUB_SOURCE),
                (req("GET", "/headers"), "GET", 201, b"created\n"),
                (req("GET", "/exc-info"), "GET", 500, b"error page from the app\n"),
                (req("GET", "/closing?marker=validated"), "GET", 200, b"closing body\n"),
            ]
            for request_bytes, method, status, body in checks:
                wire.send(request_bytes)
                resp = wire.read_response(method)
                assert resp.status == status, (request_bytes[:60], resp, server.log_text())
                if body is not None:
                    assert resp.body == body, request_bytes[:60]
        # The close line comes after any output of the requests before it (one process).
        server.wait_for_log(r"stub: close\(\) called for validated")
        log = server.log_text()
    for bad in ("Warning", "AssertionError", "Traceback", "garbage collected"):
        assert bad not in log, log


# -- timeouts ---------------------------------------------------------------------------------


def test_header_timeout_gets_408_and_close(limits: Server) -> None:
    """A client that sends half a request head and stalls gets 408 and the connection closed."""
    with Wire(limits.port, timeout=10) as wire:
        started = time.monotonic()
        wire.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        resp = wire.read_response()
        assert time.monotonic() - started >= 0.5  # not at once: after --header-timeout 1
        assert_refused(resp, wire, 408)


@pytest.mark.parametrize("after_a_request", [False, True], ids=["first", "kept-alive"])
def test_a_head_trickled_in_pieces_gets_408_from_its_first_byte(
    limits: Server, after_a_request: bool
) -> None:
    """--header-timeout 1 counts from a head's first byte: pieces every 0.3 s do not stretch
    it (the deadline is set once per head, not per piece), on a fresh connection and on a
    kept-alive one alike."""
    with Wire(limits.port, timeout=10) as wire:
        if after_a_request:
            wire.send(req("GET", "/"))
            assert wire.read_response().status == 200
        started = time.monotonic()
        wire.send(b"GET / HTTP/1.1\r\n")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for i in range(12):  # 3.6 s of pieces, at most
                time.sleep(0.3)
                wire.send(b"X-Piece-%d: x\r\n" % i)
                if select.select([wire.sock], [], [], 0)[0]:
                    break  # the answer is there
        resp = wire.read_response()
        assert_refused(resp, wire, 408)
        assert 0.9 <= time.monotonic() - started < 2.5


def test_idle_keepalive_connection_is_closed(limits: Server) -> None:
    """An idle keep-alive connection is closed by the server after --keepalive-timeout."""
    with Wire(limits.port, timeout=10) as wire:
        wire.send(req("GET", "/"))
        resp = wire.read_response()
        assert resp.status == 200
        assert (resp.header("Connection") or "").lower() != "close"  # kept alive, for now
        idle_from = time.monotonic()
        assert wire.closed_within(5), "the idle connection was not closed within 5 s"
        assert time.monotonic() - idle_from >= 0.5


def test_a_body_that_stalls_gets_408_after_body_timeout() -> None:
    """--body-timeout 2 (and no minimum rate): a client that sends half its body and stops
    gets 408 and the connection closed about 2 s after its last byte; a client whose body
    pieces are each less than 2 s apart is served, however long the whole body takes."""
    with serving(STUB, "--body-timeout", "2", "--min-body-rate", "0") as server:
        mark = server.mark()
        with Wire(server.port, timeout=15) as wire:
            wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
            stalled_at = time.monotonic()
            resp = wire.read_response()
            waited = time.monotonic() - stalled_at
            assert_refused(resp, wire, 408)
        assert 1.9 <= waited < 4, waited
        server.wait_for_log(r"408: 127\.0\.0\.1 was too slow sending a request", start=mark)

        with Wire(server.port, timeout=15) as wire:
            wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
            for piece in (b"a", b"b", b"c"):
                time.sleep(1)  # the pace under test: 3 s in all, 1 s between pieces
                wire.send(piece)
            resp = wire.read_response()
        assert (resp.status, resp.body) == (200, b"abc")


# -- regressions found in review ------------------------------------------------------------


def _read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_partial_request_pipelined_behind_another_still_times_out(limits: Server) -> None:
    """The header timeout applies to a request whose head arrived behind a busy one."""
    with socket.create_connection(("127.0.0.1", limits.port), timeout=15) as sock:
        sock.sendall(b"GET /slow?t=0.5 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        data = _read_until_closed(sock)
        assert time.monotonic() - start < 6
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 408 " in data


def test_100_continue_waits_for_earlier_pipelined_responses(stub: Server) -> None:
    """'100 Continue' never lands in the middle of an earlier request's response."""
    with socket.create_connection(("127.0.0.1", stub.port), timeout=10) as sock:
        sock.sendall(
            b"GET /slow?t=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 3\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while b"100 Continue" not in data:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        first, _, rest = data.partition(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The earlier response comes first, and whole: its body is the PID /slow returns.
        assert first.startswith(b"HTTP/1.1 200 ")
        assert first.split(b"\r\n\r\n", 1)[1].isdigit()
        sock.sendall(b"abc")
        rest += _read_until_closed(sock)
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b"abc")


def test_no_100_continue_for_a_request_without_a_body(stub: Server) -> None:
    with socket.create_connection(("127.0.0.1", stub.port), timeout=10) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        data = _read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"100 Continue" not in data


def test_system_exit_in_a_request_does_not_cost_the_process_a_thread() -> None:
    """An app raising SystemExit while serving gets a 500; its process keeps serving."""
    with serving(
        STUB, "--min-instances", "1", "--max-pool-size", "1", "--thread-count", "1"
    ) as server:
        assert server.get("/sysexit")[0] == 500
        for _ in range(3):
            assert server.get("/pid", timeout=10)[0] == 200
