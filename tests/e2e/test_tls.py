"""TLS termination (--ssl): real handshakes with real clients, the certificate reload on
SIGHUP, --ssl-port beside plain HTTP, and what bad or idle clients leave behind."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ..tls_files import make_pair
from .harness import APPS, STUB, failed_start, refused_start, serving, wait_until

GENERIC = APPS / "generic_http"


def tls_args(cert: Path, key: Path) -> list[str]:
    return ["--ssl", "--ssl-certificate", str(cert), "--ssl-certificate-key", str(key)]


def verifying(cafile: Path) -> ssl.SSLContext:
    """A client context that trusts only ``cafile`` and checks the name (127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def trusting() -> ssl.SSLContext:
    """A client context that takes any certificate (to look at which one is served)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def https_request(
    port: int,
    path: str,
    context: ssl.SSLContext,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def served_certificate(port: int) -> bytes:
    """The certificate a new TLS connection to ``port`` is shown (DER)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        trusting().wrap_socket(raw) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_https_request_is_served_and_the_app_sees_https(tmp_path: Path) -> None:
    """A verifying client gets 200 over TLS 1.2+, ALPN picks http/1.1, and the WSGI app
    sees wsgi.url_scheme https; the banner says https://."""
    cert, key = make_pair(tmp_path, "a")
    with serving(STUB, *tls_args(cert, key)) as server:
        server.wait_for_log(rf"Listening on https://127\.0\.0\.1:{server.port}$")
        conn = http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=30, context=verifying(cert)
        )
        try:
            conn.request("GET", "/environ")
            response = conn.getresponse()
            environ = json.loads(response.read())
            assert response.status == 200
            sock = conn.sock
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.selected_alpn_protocol() == "http/1.1"
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            # Keep-alive works on the TLS connection as on a plain one.
            conn.request("GET", "/pid")
            assert conn.getresponse().read().isdigit()
        finally:
            conn.close()
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["HTTP_HOST"] == f"127.0.0.1:{server.port}"

        if shutil.which("curl"):
            result = subprocess.run(
                ["curl", "-sS", "--cacert", str(cert), f"https://127.0.0.1:{server.port}/"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == b"Hello from Ferryman's stub app\n"
        assert server.stop() == 0


def test_an_http_app_gets_x_forwarded_proto_https(tmp_path: Path) -> None:
    """An app that speaks HTTP gets X-Forwarded-Proto: https; a client's own claim is
    dropped, and a trusted proxy's claim still wins (it knows what its client used)."""
    cert, key = make_pair(tmp_path, "a")
    with serving(GENERIC, *tls_args(cert, key)) as server:
        status, _, body = https_request(
            server.port, "/headers", verifying(cert), {"X-Forwarded-Proto": "http"}
        )
        assert status == 200
        forwarded = [v for k, v in json.loads(body) if k.lower() == "x-forwarded-proto"]
        assert forwarded == ["https"]
    with serving(GENERIC, *tls_args(cert, key), "--trusted-proxies", "127.0.0.1") as server:
        status, _, body = https_request(
            server.port, "/headers", verifying(cert), {"X-Forwarded-Proto": "http"}
        )
        forwarded = [v for k, v in json.loads(body) if k.lower() == "x-forwarded-proto"]
        assert forwarded == ["http"]


def test_plain_http_and_old_tls_are_refused_and_the_server_serves_on(tmp_path: Path) -> None:
    """Plain HTTP to the TLS port: a plain-text 400 (as nginx says it) and the close (no
    crash, nothing logged as an error); a TLS 1.1 client is refused; both leave the
    server serving."""
    cert, key = make_pair(tmp_path, "a")
    with serving(STUB, *tls_args(cert, key)) as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                started = time.monotonic()
                answer = read_until_closed(sock)
            assert time.monotonic() - started < 5
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
            assert b"Connection: close" in head
            assert body == b"Bad Request: a plain HTTP request to a port that speaks HTTPS.\n"

        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client may offer TLS 1.1
        with warnings.catch_warnings():  # (these versions are deprecated: that's the point)
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            pytest.raises((ssl.SSLError, ConnectionError)),
            old.wrap_socket(raw),
        ):
            pass

        status, _, body = https_request(server.port, "/", verifying(cert))
        assert (status, body) == (200, b"Hello from Ferryman's stub app\n")
        assert server.proc.poll() is None
        assert "Traceback" not in server.log_text()
        assert " ERROR " not in server.log_text()


def test_a_silent_client_is_closed_by_the_handshake_timeout(tmp_path: Path) -> None:
    """A client that connects and sends nothing (or half a ClientHello) is closed after
    header_timeout."""
    cert, key = make_pair(tmp_path, "a")
    with serving(STUB, *tls_args(cert, key), "--header-timeout", "1") as server:
        for first_bytes in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
                sock.sendall(first_bytes)
                started = time.monotonic()
                assert read_until_closed(sock) == b""
                waited = time.monotonic() - started
            assert 0.5 < waited < 5, waited
        assert https_request(server.port, "/", verifying(cert))[0] == 200


def test_sighup_reloads_the_certificate(tmp_path: Path) -> None:
    """certbot renews: the files get a new pair, SIGHUP, and new connections see it (an
    open keep-alive connection goes on as it was). A broken pair is logged and the last
    good one stays in use."""
    cert, key = make_pair(tmp_path, "live")
    new_cert, new_key = make_pair(tmp_path, "renewed", common_name="renewed.example")
    old_der = der_of(cert)
    with serving(STUB, *tls_args(cert, key)) as server:
        assert served_certificate(server.port) == old_der
        kept = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30, context=trusting())
        try:
            kept.request("GET", "/")
            assert kept.getresponse().read()

            shutil.copyfile(new_cert, cert)
            shutil.copyfile(new_key, key)
            mark = server.mark()
            server.send_signal(signal.SIGHUP)
            server.wait_for_log(f"Reloaded the TLS certificate {cert} and key {key}", start=mark)
            assert served_certificate(server.port) == der_of(new_cert)
            kept.request("GET", "/")  # the connection from before the reload
            response = kept.getresponse()
            assert (response.status, response.read()) == (200, b"Hello from Ferryman's stub app\n")
        finally:
            kept.close()

        # A renewal gone wrong: a certificate cut short, and then a key of another pair.
        cert.write_text(new_cert.read_text()[:200])
        mark = server.mark()
        server.send_signal(signal.SIGHUP)
        error = server.wait_for_log("TLS certificate not reloaded", start=mark)
        assert f"invalid value '{cert}' for ssl_certificate" in error.string
        assert "the previous one stays in use" in error.string
        assert served_certificate(server.port) == der_of(new_cert)

        shutil.copyfile(new_cert, cert)
        _, stranger_key = make_pair(tmp_path, "stranger")
        shutil.copyfile(stranger_key, key)
        mark = server.mark()
        server.send_signal(signal.SIGHUP)
        error = server.wait_for_log("TLS certificate not reloaded", start=mark)
        assert "does not belong to the certificate" in error.string
        assert served_certificate(server.port) == der_of(new_cert)
        status, _, _ = https_request(server.port, "/", trusting())
        assert status == 200
        assert server.stop() == 0


def test_ssl_port_serves_https_beside_plain_http(tmp_path: Path) -> None:
    """--ssl-port P: the main port stays plain HTTP, P speaks TLS; both serve."""
    cert, key = make_pair(tmp_path, "a")
    ssl_port = free_port()
    with serving(STUB, *tls_args(cert, key), "--ssl-port", str(ssl_port)) as server:
        server.wait_for_log(rf"Listening on http://127\.0\.0\.1:{server.port}$")
        server.wait_for_log(rf"Listening on https://127\.0\.0\.1:{ssl_port}$")
        status, body = server.get("/environ")
        assert status == 200
        assert json.loads(body)["wsgi.url_scheme"] == "http"
        status, _, body = https_request(ssl_port, "/environ", verifying(cert))
        assert status == 200
        environ = json.loads(body)
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["SERVER_PORT"] == str(ssl_port)
        assert server.stop() == 0


def test_ssl_port_survives_a_core_crash(tmp_path: Path) -> None:
    """The watchdog holds the TLS port as it holds the main one: after the core dies, the
    next core serves HTTPS on it again."""
    cert, key = make_pair(tmp_path, "a")
    ssl_port = free_port()
    with serving(STUB, *tls_args(cert, key), "--ssl-port", str(ssl_port)) as server:
        old_core = server.pid
        mark = server.mark()
        server.app_pids.update(server.children())
        os.kill(old_core, signal.SIGKILL)
        server.pid = server.find_core(not_pid=old_core)
        server.wait_for_log(rf"Listening on https://127\.0\.0\.1:{ssl_port}$", start=mark)
        server.wait_for_log(r"App \d+ ready", start=mark)
        assert https_request(ssl_port, "/", verifying(cert))[0] == 200


def test_ssl_start_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    """--ssl without a key, or with a certificate that is not one: exit code 2 before
    anything listens, one line naming the setting."""
    junk = tmp_path / "junk.crt"
    junk.write_text("junk\n")
    _, key = make_pair(tmp_path, "a")
    cases = [
        (["--ssl", "--ssl-certificate", str(junk)], "invalid value true for ssl (from --ssl)"),
        (tls_args(junk, key), f"invalid value '{junk}' for ssl_certificate"),
    ]
    for args, expected in cases:
        assert expected in refused_start(*args)


def test_a_stop_does_not_wait_for_handshakes(tmp_path: Path) -> None:
    """SIGTERM while a client sits in its handshake: the server stops at once, not after
    header_timeout."""
    cert, key = make_pair(tmp_path, "a")
    with (
        serving(STUB, *tls_args(cert, key), "--header-timeout", "60") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle,
    ):
        idle.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        time.sleep(0.3)
        started = time.monotonic()
        assert server.stop(timeout=20) == 0
        assert time.monotonic() - started < 10


def test_tls_connections_leave_no_trace(tmp_path: Path) -> None:
    """Hundreds of TLS connections (full requests, keep-alive, plain HTTP, handshakes cut
    off at each stage, resets) leave the core's fds, children and temp files as they were."""
    cert, key = make_pair(tmp_path, "a")
    # One process, so that the pool cannot grow between the readings (/slow keeps it busy).
    args = ("--no-access-log", "--header-timeout", "2", "--max-pool-size", "1")
    with serving(STUB, *tls_args(cert, key), *args) as server:
        context = verifying(cert)
        for _ in range(3):
            assert https_request(server.port, "/", context)[0] == 200
        before = server.settled_resources()

        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30, context=context)
        for _ in range(100):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.close()
        for i in range(300):
            kind = i % 6
            if kind == 0:
                assert https_request(server.port, "/", context)[0] == 200
            elif kind == 1:  # connects and leaves before any byte
                socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
            elif kind == 2:  # half a ClientHello, then gone
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            elif kind == 3:  # a reset in the middle of the handshake
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock.sendall(b"\x16\x03\x01\x02\x00")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            elif kind == 4:  # plain HTTP
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    read_until_closed(sock)
            else:  # handshake done, request sent, gone before the answer
                with (
                    socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
                ):
                    sock.sendall(b"GET /slow?t=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
        # Cut-off handshakes end by header_timeout at the latest.
        assert wait_until(lambda: server.settled_resources() == before, timeout=20), (
            before,
            server.resources(),
        )
        assert https_request(server.port, "/", context)[0] == 200
        assert server.proc.poll() is None
        assert "Traceback" not in server.log_text()


def test_a_taken_ssl_port_is_reported(tmp_path: Path) -> None:
    """The ssl_port in use: exit code 1 and a line that says it was the ssl_port."""
    cert, key = make_pair(tmp_path, "a")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = failed_start(*tls_args(cert, key), "--ssl-port", str(port))
    assert result.returncode == 1
    assert f"Address already in use (on the ssl_port, {port})" in result.stderr
    assert "Traceback" not in result.stderr


def test_unix_socket_with_an_ssl_port(tmp_path: Path) -> None:
    """--socket with --ssl-port: plain HTTP on the Unix socket (for the proxy in front),
    HTTPS on the TCP port; both are removed or closed at the stop."""
    cert, key = make_pair(tmp_path, "a")
    path = tmp_path / "front.sock"
    ssl_port = free_port()
    args = ["--socket", str(path), *tls_args(cert, key), "--ssl-port", str(ssl_port)]
    with serving(STUB, *args) as server:
        assert server.unix_socket == str(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_until_closed(sock)
        assert b'"wsgi.url_scheme": "http"' in answer
        status, _, body = https_request(ssl_port, "/environ", verifying(cert))
        assert status == 200
        assert json.loads(body)["wsgi.url_scheme"] == "https"
        assert server.stop() == 0
    assert not path.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ssl_port), timeout=5).close()


def test_websocket_over_tls(tmp_path: Path) -> None:
    """wss://: the upgrade and the tunnel work through TLS as through plain TCP (a
    megabyte each way, and the server's close code)."""
    cert, key = make_pair(tmp_path, "a")
    with serving(APPS / "asgi_fastapi", *tls_args(cert, key)) as server:
        (pid,) = server.app_pids
        url = f"wss://127.0.0.1:{server.port}/ws/echo"
        with connect(url, ssl=verifying(cert), max_size=2**21) as ws:
            assert ws.recv() == str(pid)
            big = os.urandom(1024 * 1024)
            ws.send(big)
            assert ws.recv() == big
            ws.send("close:4001")
            with pytest.raises(ConnectionClosed):
                ws.recv()
            assert ws.close_code == 4001
        server.wait_for_log(r'"GET /ws/echo HTTP/1.1" 101 ')


def test_static_files_over_tls_are_encrypted_whole_and_ranged(tmp_path: Path) -> None:
    """A static file on a TLS connection is copied through the TLS transport (sendfile
    would bypass the encryption): the bytes arrive whole, and a range is exact."""
    cert, key = make_pair(tmp_path, "site")
    app = tmp_path / "app"
    shutil.copytree(STUB, app)
    (app / "public").mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    (app / "public" / "big.bin").write_bytes(data)
    with serving(app, *tls_args(cert, key)) as server:
        status, headers, body = https_request(server.port, "/big.bin", verifying(cert))
        assert status == 200
        assert body == data
        status, headers, body = https_request(
            server.port, "/big.bin", verifying(cert), {"Range": "bytes=100-199"}
        )
        assert (status, body) == (206, data[100:200])
        assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"


def _proxy_v1(src: str, sport: int) -> bytes:
    return f"PROXY TCP4 {src} 127.0.0.1 {sport} 443\r\n".encode()


def _proxy_v2(src: str, sport: int) -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 443)
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    return signature + b"\x21\x11" + struct.pack("!H", len(block)) + block


def _environ_through_tls(
    port: int, header: bytes, cafile: Path, *, one_packet: bool
) -> dict[str, str]:
    """GET /environ over TLS after ``header``; with ``one_packet`` the header and the
    TLS ClientHello go in one send, as a balancer's first segment may carry both."""
    context = verifying(cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if not one_packet:
            raw.sendall(header)
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        else:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.do_handshake()
            raw.sendall(header + outgoing.read())
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    assert data, "closed during the handshake"
                    incoming.write(data)
            raw.sendall(outgoing.read())
            tls.write(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw.sendall(outgoing.read())
            answer = b""
            while True:
                try:
                    piece = tls.read(65536)
                except ssl.SSLWantReadError:
                    data = raw.recv(65536)
                    if not data:
                        break
                    incoming.write(data)
                    continue
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
                if not piece:
                    break
                answer += piece
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            result: dict[str, str] = json.loads(body)
            return result
        with sock:
            sock.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    result = json.loads(body)
    return result


def test_proxy_protocol_header_before_the_tls_handshake(tmp_path: Path) -> None:
    """A TCP balancer's PROXY header (v1, v2) comes before the ClientHello: read exactly,
    then TLS; the app sees the client it names, over https. From an untrusted peer, or
    without a header, the connection is closed."""
    cert, key = make_pair(tmp_path, "site")
    proxy = ("--proxy-protocol", "--trusted-proxies", "127.0.0.1")
    with serving(STUB, *tls_args(cert, key), *proxy) as server:
        for number, header in enumerate((_proxy_v1, _proxy_v2)):
            for one_packet in (False, True):
                port = 40000 + number * 10 + one_packet
                environ = _environ_through_tls(
                    server.port, header("203.0.113.9", port), cert, one_packet=one_packet
                )
                assert environ["REMOTE_ADDR"] == "203.0.113.9"
                assert environ["REMOTE_PORT"] == str(port)
                assert environ["wsgi.url_scheme"] == "https"
        # No header: the ClientHello is not a PROXY header.
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            pytest.raises((ssl.SSLError, OSError)),
        ):
            verifying(cert).wrap_socket(raw, server_hostname="127.0.0.1")
        server.wait_for_log(r"Refused a connection from 127\.0\.0\.1: the connection does not")
    with serving(
        STUB, *tls_args(cert, key), "--proxy-protocol", "--trusted-proxies", "10.0.0.0/8"
    ) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(_proxy_v1("203.0.113.9", 1))
            with contextlib.suppress(ConnectionResetError):  # closed unread: maybe a reset
                assert raw.recv(100) == b""
        server.wait_for_log(r"Refused a connection from 127\.0\.0\.1: it is not in trusted_proxies")
