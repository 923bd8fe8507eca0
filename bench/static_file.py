#!/usr/bin/env python3
"""Static file throughput: a 100 MB file from Ferryman's core, and from nginx, over loopback.

    python bench/static_file.py               # 5 downloads each, the median kept
    python bench/static_file.py --runs 9 --size-mb 200

A temporary app (the WSGI stub app with ``public/`` and a ``--static-dir``) holds
a file of random bytes. Ferryman (``ferryman start --static-dir``) and, if it is
installed, Debian's nginx (``sendfile on``, one worker) serve it on 127.0.0.1,
one at a time; a Python socket client downloads it with ``recv_into`` a 4 MiB
buffer (no copy of the body), checks its length, and the median rate of
``--runs`` downloads is printed in GB/s with the Ferryman/nginx ratio, and the
core's RSS before and after. Every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "tests" / "apps" / "wsgi_stub" / "passenger_wsgi.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


def download(port: int, path: str, size: int) -> float:
    """Seconds to download ``path`` (checked to be ``size`` bytes of body)."""
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.perf_counter()
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        total = 0
        head = b""
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            if not head:
                head = bytes(view[: min(n, 1024)])
            total += n
        elapsed = time.perf_counter() - started
    end = head.find(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or end < 0 or total - end - 4 != size:
        raise SystemExit(f"bad download from port {port}: {head[:200]!r}, {total} bytes")
    return elapsed


def measure(name: str, port: int, path: str, size: int, runs: int) -> float:
    download(port, path, size)  # warm: the page cache, the connection path
    rates = [size / download(port, path, size) / 1e9 for _ in range(runs)]
    rate = statistics.median(rates)
    print(f"{name:10s} {rate:6.2f} GB/s  (runs: {', '.join(f'{r:.2f}' for r in rates)})")
    return rate


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def core_pid(watchdog: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
                if int(stat[stat.rfind(b")") + 2 :].split()[1]) == watchdog:
                    with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                        if b"ferryman" in cmd.read():
                            return int(entry)
        time.sleep(0.05)
    raise SystemExit("the core did not start")


@contextlib.contextmanager
def started(
    argv: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()
    size = args.size_mb * 1000 * 1000
    with tempfile.TemporaryDirectory(prefix="fm-bench-static-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # nginx's workers run as another user when started as root
        app = base / "app"
        (app / "staticfiles").mkdir(parents=True)
        shutil.copy(STUB, app / "passenger_wsgi.py")
        with (app / "staticfiles" / "big.bin").open("wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(1000 * 1000))
        print(f"{args.size_mb} MB file, {args.runs} downloads each over 127.0.0.1, median:")

        port = free_port()
        env = dict(os.environ, TMPDIR=tmp)
        argv = [
            sys.executable, "-m", "ferryman", "start", str(app), "--address", "127.0.0.1",
            "--port", str(port), "--static-dir", "/static=staticfiles", "--no-access-log",
        ]  # fmt: skip
        with started(argv, env) as proc:
            wait_for_port(port)
            core = core_pid(proc.pid)
            before = rss_kb(core)
            ferryman = measure("ferryman", port, "/static/big.bin", size, args.runs)
            after = rss_kb(core)
        print(f"           core RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after")

        nginx = 0.0
        if os.path.exists(NGINX):
            port = free_port()
            conf = base / "nginx.conf"
            temp = " ".join(
                f"{kind}_temp_path {base / kind};"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            conf.write_text(
                f"worker_processes 1; daemon off; pid {base / 'nginx.pid'};\n"
                f"error_log {base / 'nginx-error.log'};\n"
                "events { worker_connections 64; }\n"
                f"http {{ access_log off; sendfile on; {temp}\n"
                f"  server {{ listen 127.0.0.1:{port};\n"
                f"    location /static/ {{ alias {app / 'staticfiles'}/; }} }} }}\n"
            )
            with started([NGINX, "-c", str(conf), "-p", str(base)]):
                wait_for_port(port)
                nginx = measure("nginx", port, "/static/big.bin", size, args.runs)
        else:
            print("nginx      not installed (apt-get install nginx-light): skipped")
        if nginx:
            print(f"ratio      ferryman/nginx = {ferryman / nginx:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
