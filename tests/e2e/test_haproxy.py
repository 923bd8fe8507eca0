"""Behind HAProxy, with the configurations docs/examples/haproxy-*.cfg show.

Real HAProxy (Debian's package; .ci/run installs it) runs the very configuration the
docs show, with only its listen address, the instances' addresses and the health
check interval changed for the test, in front of two real Ferryman instances. The
test's client connects from 127.0.0.2 while HAProxy connects from 127.0.0.1 (the
trusted proxy), so what reaches the app tells which address Ferryman took; the
client's port (in the PROXY header) tells it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import STUB, Server, serving, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CLIENT_ADDR = "127.0.0.2"

needs_haproxy = pytest.mark.skipif(
    not os.path.exists(HAPROXY) and not os.environ.get("CI"),
    reason="haproxy is not installed (.ci/run installs it: apt-get install haproxy)",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def configured(example: str, port: int, servers: list[Server]) -> str:
    """The example with the test's addresses, and health checks every 200 ms."""
    text = (EXAMPLES / example).read_text()
    text = text.replace("bind :80", f"bind 127.0.0.1:{port}").replace("inter 2s", "inter 200ms")
    for i, server in enumerate(servers, 1):
        text = text.replace(f"10.0.0.1{i}:3000", f"127.0.0.1:{server.port}")
    assert "10.0.0.1" not in text, "an instance of the example was not given an address"
    return text


@contextlib.contextmanager
def haproxy(config: str, tmp_path: Path, port: int) -> Iterator[Path]:
    """HAProxy in the foreground on ``config``; yields its stats socket; stopped by PID."""
    stats = tmp_path / "stats.sock"
    path = tmp_path / "haproxy.cfg"
    path.write_text(f"global\n    stats socket {stats} mode 600 level admin\n\n{config}")
    log = (tmp_path / "haproxy.log").open("wb")
    with log:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=log, stderr=log)
        try:
            assert wait_until(lambda: _accepts(port) or proc.poll() is not None, timeout=10)
            assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
            yield stats
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def server_states(stats: Path) -> dict[str, tuple[str, str]]:
    """{server name: (status, check status)} of the backend, from HAProxy's stats socket
    (empty while the socket is not there yet: HAProxy may accept before it makes it)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        try:
            sock.connect(str(stats))
        except (FileNotFoundError, ConnectionRefusedError):
            return {}
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    columns = lines[0].lstrip("# ").split(",")
    status, check = columns.index("status"), columns.index("check_status")
    states = {}
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > check and fields[1] not in ("FRONTEND", "BACKEND"):
            states[fields[1]] = (fields[status], fields[check])
    return states


def wait_for_states(stats: Path, wanted: dict[str, tuple[str, str]]) -> None:
    assert wait_until(lambda: server_states(stats) == wanted, timeout=15), server_states(stats)


def get_from_client(port: int, path: str, *headers: str) -> tuple[dict[str, str], int]:
    """GET ``path`` through HAProxy from 127.0.0.2: (the app's JSON, the client's port)."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((CLIENT_ADDR, 0))
        sock.connect(("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", "Host: example.com", "Connection: close", *headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        client_port: int = sock.getsockname()[1]
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return json.loads(body), client_port


LIES = (
    "X-Forwarded-For: 203.0.113.99",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example",
    "X-Real-IP: 203.0.113.98",
)


@needs_haproxy
@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_haproxy_tcp_mode_with_the_proxy_protocol(tmp_path: Path, send_proxy: str) -> None:
    """Two instances behind HAProxy in TCP mode: the client's address and port arrive
    through the PROXY header, the client's own forwarded headers do not; when one
    instance stops, its health check fails and the other serves."""
    args = ("--proxy-protocol", "--trusted-proxies", "127.0.0.1", "--health-check-path", "/healthz")
    port = free_port()
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serving(STUB, *args)) for _ in range(2)]
        config = configured("haproxy-tcp.cfg", port, servers).replace("send-proxy-v2", send_proxy)
        stats = stack.enter_context(haproxy(config, tmp_path, port))
        wait_for_states(stats, {"app1": ("UP", "L7OK"), "app2": ("UP", "L7OK")})
        for _ in range(4):
            env, client_port = get_from_client(port, "/environ", *LIES)
            assert env["REMOTE_ADDR"] == CLIENT_ADDR
            assert env["REMOTE_PORT"] == str(client_port)
            assert env["wsgi.url_scheme"] == "http"
            assert env["HTTP_HOST"] == "example.com"
            for name in ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_REAL_IP"):
                assert name not in env, env
        for server in servers:  # leastconn spread the connections over both
            server.wait_for_log(r'^127\.0\.0\.2 - - .*"GET /environ HTTP/1\.1" 200')
            assert "Refused a connection" not in server.log_text(), server.log_text()

        assert servers[0].stop() == 0
        wait_for_states(stats, {"app1": ("DOWN", "L4CON"), "app2": ("UP", "L7OK")})
        for _ in range(3):
            env, _ = get_from_client(port, "/environ")
            assert env["REMOTE_ADDR"] == CLIENT_ADDR


@needs_haproxy
def test_haproxy_http_mode_with_forwardfor(tmp_path: Path) -> None:
    """HAProxy in HTTP mode names the client in X-Forwarded-For, and sets the headers it
    owns: what the client claimed itself is not believed."""
    args = ("--trusted-proxies", "127.0.0.1", "--health-check-path", "/healthz")
    port = free_port()
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serving(STUB, *args)) for _ in range(2)]
        config = configured("haproxy-http.cfg", port, servers)
        stats = stack.enter_context(haproxy(config, tmp_path, port))
        wait_for_states(stats, {"app1": ("UP", "L7OK"), "app2": ("UP", "L7OK")})
        for _ in range(4):
            env, _ = get_from_client(port, "/environ", *LIES)
            assert env["REMOTE_ADDR"] == CLIENT_ADDR
            assert env["HTTP_X_FORWARDED_FOR"] == f"203.0.113.99, {CLIENT_ADDR}"
            assert env["wsgi.url_scheme"] == "http"
            assert env["HTTP_HOST"] == "example.com"
            assert "HTTP_X_REAL_IP" not in env
        for server in servers:
            server.wait_for_log(r'^127\.0\.0\.2 - - .*"GET /environ HTTP/1\.1" 200')


def test_the_docs_show_the_tested_configurations() -> None:
    """Every line of the HAProxy snippets in docs/load-balancers.md is in the example file
    the tests run (the snippets may leave lines out, not change them)."""
    text = (EXAMPLES.parent / "load-balancers.md").read_text()
    snippets = re.findall(r"```haproxy\n(.*?)```", text, re.DOTALL)
    assert len(snippets) == 2
    for snippet, example in zip(snippets, ["haproxy-http.cfg", "haproxy-tcp.cfg"], strict=True):
        lines = {line.strip() for line in (EXAMPLES / example).read_text().splitlines()}
        for line in snippet.splitlines():
            assert line.strip() in lines, (example, line)
