"""Behind nginx on a Unix socket, with the configuration docs/examples/nginx.conf shows.

The test runs a real nginx (Debian's package; .ci/run installs it) as root with workers
as www-data, like a distribution's nginx, from the very server block the docs show,
with only its listen address and the socket path changed for the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import STUB, serving, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A directory nginx's www-data workers may enter (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="fm-nginx-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def nginx(config: str, run_dir: Path, port: int) -> Iterator[None]:
    conf = run_dir / "nginx.conf"
    conf.write_text(
        f"user www-data;\nworker_processes 1;\npid {run_dir}/nginx.pid;\n"
        f"error_log {run_dir}/error.log;\nevents {{ worker_connections 64; }}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {run_dir}/body;\n"
        f"proxy_temp_path {run_dir}/proxy;\n{config}\n}}\n"
    )
    started = subprocess.run(
        [NGINX, "-c", str(conf), "-p", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    pid = int((run_dir / "nginx.pid").read_text())
    try:
        assert wait_until(lambda: _accepts(port), timeout=10)
        yield
    finally:
        os.kill(pid, 15)  # the master stops its workers
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not os.path.exists(NGINX) and not os.environ.get("CI"),
    reason="nginx is not installed (.ci/run installs it: apt-get install nginx-light)",
)
def test_nginx_on_a_unix_socket_as_the_docs_show(run_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs nginx as root with www-data workers, as distributions do")
    sock = run_dir / "app.sock"
    port = free_port()
    config = (
        EXAMPLE.read_text()
        .replace("unix:/run/ferryman/app.sock", f"unix:{sock}")
        .replace("listen 80;", f"listen 127.0.0.1:{port};")
    )
    args = ("--socket", str(sock), "--socket-owner", "root:www-data", "--trusted-proxies", "unix")
    with serving(STUB, *args) as server, nginx(config, run_dir, port):
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"GET /environ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n"
                b"X-Forwarded-For: 203.0.113.99\r\n\r\n"  # the client lies: nginx appends
            )
            data = b""
            while chunk := client.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (head, (run_dir / "error.log").read_text())
        env = json.loads(body)
        # nginx appended the real client (127.0.0.1); Ferryman believes nginx (unix peer)
        # and takes the rightmost address that is not a trusted proxy: nginx's view.
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.99, 127.0.0.1"
        assert env["wsgi.url_scheme"] == "http"
        assert env["HTTP_HOST"] == "example.com"
        server.wait_for_log(r'"GET /environ HTTP/1\.1" 200')


def test_unix_socket_peers_are_believed_only_when_trusted(tmp_path: Path) -> None:
    """Without --trusted-proxies unix, forwarded headers from the socket are dropped."""
    sock = tmp_path / "s.sock"
    with serving(STUB, "--socket", str(sock)) as server:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(sock))
            client.sendall(
                b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n"
            )
            data = b""
            while chunk := client.recv(65536):
                data += chunk
        env = json.loads(data.partition(b"\r\n\r\n")[2])
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert "HTTP_X_FORWARDED_FOR" not in env
        assert env["wsgi.url_scheme"] == "http"
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
        assert server.stop() == 0
