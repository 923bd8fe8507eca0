"""--proxy-protocol over real sockets: PROXY v1 and v2 headers before HTTP requests.

The server trusts 127.0.0.1 (the test plays the load balancer); the headers name other
clients, which the WSGI stub app must see as REMOTE_ADDR, and the access log as the
client. Untrusted peers, malformed headers and stalled headers get the connection
closed with nothing served, and leave no descriptor behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import time

from .harness import APPS, STUB, Server, ferryman, serving, wait_until
from .wire import Wire, req

TRUSTING = ("--proxy-protocol", "--trusted-proxies", "127.0.0.1")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
ENVIRON = req("GET", "/environ", "X-Forwarded-For: 198.51.100.66", "X-Real-IP: 198.51.100.67")


def v1(src: str, sport: int, dport: int = 3000) -> bytes:
    family, dst = ("TCP6", "::1") if ":" in src else ("TCP4", "127.0.0.1")
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 3000, tlvs: bytes = b"") -> bytes:
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if source.version == 4 else 0x21
    block = source.packed + destination.packed + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def environ_of(wire: Wire) -> dict[str, str]:
    resp = wire.read_response()
    assert resp.status == 200, resp
    env: dict[str, str] = json.loads(resp.body)
    return env


def refused(wire: Wire) -> bool:
    """The server closed the connection without a byte of an answer."""
    return wire.read_to_eof() == b""


def test_v1_and_v2_name_the_client() -> None:
    with serving(STUB, *TRUSTING) as server:
        for header, addr, port in (
            (v1("203.0.113.7", 56324), "203.0.113.7", "56324"),
            (v1("2001:db8::7", 1), "2001:db8::7", "1"),
            (v2("198.51.100.22", 40000, tlvs=b"\x04\x00\x03abc"), "198.51.100.22", "40000"),
            (v2("2001:db8::8", 65535, dst="::1"), "2001:db8::8", "65535"),
        ):
            mark = server.mark()
            with Wire(server.port) as wire:
                wire.send(header + ENVIRON)
                env = environ_of(wire)
            assert env["REMOTE_ADDR"] == addr, header
            assert env["REMOTE_PORT"] == port, header
            # The client behind the balancer is not trusted: what it claims is dropped.
            assert "HTTP_X_FORWARDED_FOR" not in env, env
            assert "HTTP_X_REAL_IP" not in env, env
            server.wait_for_log(rf'^{addr} - - .*"GET /environ HTTP/1\.1" 200', start=mark)


def test_header_byte_by_byte_then_keep_alive() -> None:
    """The header in one-byte segments, then several requests on the connection."""
    with serving(STUB, *TRUSTING) as server, Wire(server.port) as wire:
        wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in v2("192.0.2.55", 1234) + b"GET /envi":
            wire.send(bytes([byte]))
            time.sleep(0.002)
        wire.send(ENVIRON[len(b"GET /envi") :])
        assert environ_of(wire)["REMOTE_ADDR"] == "192.0.2.55"
        for _ in range(3):
            wire.send(ENVIRON)
            env = environ_of(wire)
            assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.55", "1234")


def test_v1_byte_by_byte() -> None:
    with serving(STUB, *TRUSTING) as server, Wire(server.port) as wire:
        wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in v1("192.0.2.56", 4321):
            wire.send(bytes([byte]))
            time.sleep(0.002)
        wire.send(ENVIRON)
        assert environ_of(wire)["REMOTE_ADDR"] == "192.0.2.56"


def test_header_and_pipelined_requests_in_one_packet() -> None:
    with serving(STUB, *TRUSTING) as server, Wire(server.port) as wire:
        wire.send(
            v1("203.0.113.9", 9) + ENVIRON + ENVIRON + req("GET", "/environ", "Connection: close")
        )
        for _ in range(3):
            assert environ_of(wire)["REMOTE_ADDR"] == "203.0.113.9"
        assert wire.closed_within(5)


def test_a_trusted_client_and_the_balancer_own_connections() -> None:
    """A client that is itself a trusted proxy (a chain of proxies) is believed; v2 LOCAL
    (the balancer's own health check) is the balancer, trusted; v1 UNKNOWN is the
    balancer's address but not trusted (some client the balancer could not name)."""
    with serving(STUB, *TRUSTING) as server:
        with Wire(server.port) as wire:
            wire.send(v1("127.0.0.1", 5555) + ENVIRON)
            env = environ_of(wire)
            assert env["REMOTE_ADDR"] == "198.51.100.66"  # from X-Forwarded-For
            assert env["REMOTE_PORT"] == "5555"
        with Wire(server.port) as wire:
            wire.send(V2_LOCAL + ENVIRON)
            env = environ_of(wire)
            assert env["REMOTE_ADDR"] == "198.51.100.66"
            assert env["HTTP_X_REAL_IP"] == "198.51.100.67"
        with Wire(server.port) as wire:
            wire.send(b"PROXY UNKNOWN\r\n" + ENVIRON)
            env = environ_of(wire)
            assert env["REMOTE_ADDR"] == "127.0.0.1"
            assert "HTTP_X_FORWARDED_FOR" not in env


def test_apps_that_speak_http_get_the_client_in_x_forwarded_for() -> None:
    with serving(APPS / "generic_http", *TRUSTING) as server, Wire(server.port) as wire:
        wire.send(v2("203.0.113.77", 2000) + req("GET", "/headers", "X-Forwarded-For: 10.9.9.9"))
        resp = wire.read_response()
        assert resp.status == 200, resp
        headers = json.loads(resp.body)
        assert ["X-Forwarded-For", "203.0.113.77"] in headers, headers
        assert [name for name, _ in headers].count("X-Forwarded-For") == 1, headers


def test_untrusted_peers_are_refused() -> None:
    """127.0.0.1 is not among the trusted proxies: its connections close unread."""
    with serving(STUB, "--proxy-protocol", "--trusted-proxies", "10.0.0.0/8") as server:
        for data in (v1("203.0.113.7", 1) + ENVIRON, ENVIRON, b""):
            with Wire(server.port) as wire:
                if data:
                    wire.send(data)
                assert refused(wire)
        server.wait_for_log(r"Refused a connection from 127\.0\.0\.1: it is not in trusted_proxies")
        assert "GET /environ" not in server.log_text()


def test_malformed_headers_are_refused_and_the_server_goes_on() -> None:
    with serving(STUB, *TRUSTING) as server:
        for bad in (
            ENVIRON,  # no header at all (the option is on: it is required)
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n" + ENVIRON,
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\n" + ENVIRON,
            b"PROXY TCP4 " + b"1" * 200,
            V2_SIGNATURE + b"\x21\x11\xff\xff",
            V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12,
        ):
            with Wire(server.port) as wire:
                wire.send(bad)
                assert refused(wire), bad
        server.wait_for_log(r"Refused a connection from 127\.0\.0\.1: the connection does not")
        assert "GET /environ" not in server.log_text()
        with Wire(server.port) as wire:
            wire.send(v1("203.0.113.8", 8) + ENVIRON)
            assert environ_of(wire)["REMOTE_ADDR"] == "203.0.113.8"


def test_a_stalled_header_times_out() -> None:
    """Half a header, then nothing: closed after header_timeout, as a stalled request head."""
    with serving(STUB, *TRUSTING, "--header-timeout", "1") as server:
        with Wire(server.port) as wire:
            wire.send(v1("203.0.113.7", 1)[:10])
            started = time.monotonic()
            assert wire.closed_within(5)
            assert 0.8 < time.monotonic() - started < 4
        server.wait_for_log(r"no complete PROXY header within header_timeout")
        with Wire(server.port) as wire:  # and a connection that sends nothing at all
            assert wire.closed_within(5)


def test_on_a_unix_socket(tmp_path: os.PathLike[str]) -> None:
    sock_path = os.path.join(tmp_path, "s.sock")
    args = ("--socket", sock_path, "--proxy-protocol", "--trusted-proxies", "unix")
    with serving(STUB, *args):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(sock_path)
            client.sendall(v2("203.0.113.5", 5) + req("GET", "/environ", "Connection: close"))
            data = b""
            while chunk := client.recv(65536):
                data += chunk
        env = json.loads(data.partition(b"\r\n\r\n")[2])
        assert env["REMOTE_ADDR"] == "203.0.113.5"


def test_without_trusted_proxies_the_start_is_refused(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    result = subprocess.run(
        [sys.executable, "-m", "ferryman", "start", str(STUB), "--proxy-protocol"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "proxy_protocol" in lines[0]
    assert "trusted_proxies" in lines[0]


def _refuse_many(server: Server, count: int) -> None:
    for i in range(count):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            kind = i % 4
            if kind == 0:
                sock.sendall(ENVIRON)  # malformed: no header
            elif kind == 1:
                sock.sendall(v1("203.0.113.7", 1)[:7])  # half a header, then gone
                continue
            elif kind == 2:
                sock.sendall(v2("203.0.113.7", 1) + b"GET / HTTP/1.1\r\n")  # half a request
                continue
            else:
                sock.sendall(b"PROXY TCP4 x\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""


def test_refused_connections_leave_no_descriptor() -> None:
    with serving(STUB, *TRUSTING, "--no-access-log") as server:
        with Wire(server.port) as wire:
            wire.send(v1("203.0.113.7", 1) + ENVIRON)
            environ_of(wire)
        before = server.settled_resources()
        _refuse_many(server, 300)
        assert wait_until(lambda: server.resources() == before, timeout=10), (
            before,
            server.resources(),
        )
    with serving(STUB, "--proxy-protocol", "--trusted-proxies", "10.0.0.0/8") as server:
        before = server.settled_resources()
        _refuse_many(server, 300)
        assert wait_until(lambda: server.resources() == before, timeout=10), (
            before,
            server.resources(),
        )


def test_a_stop_closes_connections_still_in_their_header() -> None:
    """A connection still sending its header holds no request: a stop closes it at once."""
    with serving(STUB, *TRUSTING, "--header-timeout", "30") as server, Wire(server.port) as wire:
        wire.send(v2("203.0.113.7", 1)[:20])
        time.sleep(0.2)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10
        assert wire.closed_within(5)


def test_peers_that_leave_at_once_are_closed_quietly() -> None:
    """A TCP peer that resets before its connection is set up has no address any more:
    it is closed quietly, not taken for a Unix-socket peer (and refused as untrusted)."""
    with serving(STUB, *TRUSTING) as server:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, at once
        with Wire(server.port) as wire:
            wire.send(v1("203.0.113.7", 1) + ENVIRON)
            assert environ_of(wire)["REMOTE_ADDR"] == "203.0.113.7"
        assert "Refused a connection" not in server.log_text(), server.log_text()


def test_the_admin_api_needs_no_proxy_header() -> None:
    """--proxy-protocol is for the app's port: `ferryman status` (the admin socket) works.
    Regression: the admin API took the setting too and refused every connection."""
    with serving(STUB, "--proxy-protocol", "--trusted-proxies", "10.0.0.0/8") as server:
        result = ferryman(server, "status", "--show=json")
        assert json.loads(result.stdout)["apps"][0]["processes"]
