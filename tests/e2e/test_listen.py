"""Where Ferryman listens: TCP on loopback by default, or a Unix socket."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from .harness import STUB, serving


def test_serves_on_a_unix_socket(tmp_path: Path) -> None:
    """--socket PATH serves HTTP on a Unix socket; with --trusted-proxies unix its peers
    count as trusted proxies."""
    path = tmp_path / "front.sock"
    with serving(STUB, "--socket", str(path), "--trusted-proxies", "unix") as server:
        assert server.unix_socket == str(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(
                b"GET /environ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n"
                b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b'"REMOTE_ADDR": "203.0.113.9"' in body
        assert b'"wsgi.url_scheme": "https"' in body
        assert b'"SERVER_NAME": "example.com"' in body
        assert server.stop() == 0
    assert not path.exists()


def test_port_in_use_is_reported() -> None:
    """A port already taken: a clear error and exit code 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ferryman", "start", str(STUB), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
