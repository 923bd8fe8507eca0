"""Static files served by the core: public/ (misses go to the app) and --static-dir
(authoritative), with real servers, raw sockets and real files on disk."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import STUB, Server, serving, wait_until
from .wire import Response, Wire, req

SECRET = b"TOP-SECRET-" + os.urandom(8).hex().encode()
CSS = b"body { color: #123456; }\n" * 40
CSS_BR = b"pretend-brotli:" + os.urandom(64)
CSS_GZ = b"pretend-gzip:" + os.urandom(64)
DATA = os.urandom(1000)
BIG_SIZE = 100 * 1000 * 1000


def _tree(base: Path) -> Path:
    """An app directory with public/ and staticfiles/, a secret next to and outside it,
    and the traps: symlinks out, a FIFO, hidden files, a directory."""
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret2.txt").write_bytes(SECRET)
    app = base / "app"
    app.mkdir()
    shutil.copy(STUB / "passenger_wsgi.py", app / "passenger_wsgi.py")
    (app / "secret.txt").write_bytes(SECRET)
    public = app / "public"
    (public / "css").mkdir(parents=True)
    (public / "robots.txt").write_bytes(b"User-agent: *\n")
    (public / "css" / "site.css").write_bytes(CSS)
    (public / ".env").write_bytes(SECRET)
    (public / "link-to-secret").symlink_to(base / "secret.txt")
    os.mkfifo(public / "fifo")
    static = app / "staticfiles"
    (static / "sub").mkdir(parents=True)
    (static / "sub" / "inner.txt").write_bytes(b"inner\n")
    (static / ".git").mkdir()
    (static / ".git" / "config").write_bytes(SECRET)
    (static / "base.css").write_bytes(CSS)
    (static / "base.css.br").write_bytes(CSS_BR)
    (static / "base.css.gz").write_bytes(CSS_GZ)
    (static / "app.3f2a9c1b.css").write_bytes(CSS)
    (static / "base.6b517d0d5813.css").write_bytes(CSS)
    (static / "data.bin").write_bytes(DATA)
    (static / "evil-file").symlink_to(base / "secret.txt")
    (static / "evil").symlink_to(base / "outside")
    (static / "inside-link.css").symlink_to(static / "base.css")
    return app


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("static"))


@pytest.fixture(scope="module")
def server(tree: Path) -> Iterator[Server]:
    with serving(tree, "--static-dir", "/static=staticfiles") as running:
        yield running


def _get(server: Server, target: str, *headers: str, method: str = "GET") -> Response:
    with Wire(server.port) as wire:
        wire.send(req(method, target, *headers))
        return wire.read_response(method)


def test_a_file_is_served_with_its_type_length_and_validators(server: Server) -> None:
    resp = _get(server, "/static/base.css")
    assert resp.status == 200
    assert resp.body == CSS
    assert resp.header("Content-Type") == "text/css; charset=utf-8"
    assert resp.header("Content-Length") == str(len(CSS))
    assert resp.header("Accept-Ranges") == "bytes"
    assert resp.header("ETag") is not None
    assert resp.header("Last-Modified") is not None
    assert resp.header("Vary") == "Accept-Encoding"  # it has .br and .gz variants
    assert resp.header("Content-Encoding") is None
    assert resp.header("Cache-Control") == "public, max-age=0, must-revalidate"
    binary = _get(server, "/static/data.bin?v=3")  # a query does not change the file
    assert binary.status == 200
    assert binary.body == DATA
    assert binary.header("Content-Type") == "application/octet-stream"
    assert binary.header("Vary") is None
    # A symlink that stays inside the directory is followed.
    assert _get(server, "/static/inside-link.css").body == CSS
    assert _get(server, "/static/sub/inner.txt").body == b"inner\n"


def test_conditional_requests_get_304(server: Server) -> None:
    first = _get(server, "/static/base.css")
    etag = first.header("ETag")
    modified = first.header("Last-Modified")
    again = _get(server, "/static/base.css", f"If-None-Match: {etag}")
    assert again.status == 304
    assert again.body == b""
    assert again.header("ETag") == etag
    assert again.header("Content-Length") is None
    listed = _get(server, "/static/base.css", f'If-None-Match: "other", W/{etag}')
    assert listed.status == 304
    assert _get(server, "/static/base.css", 'If-None-Match: "other"').status == 200
    assert _get(server, "/static/base.css", f"If-Modified-Since: {modified}").status == 304
    old = "If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT"
    assert _get(server, "/static/base.css", old).status == 200
    assert _get(server, "/static/base.css", "If-Modified-Since: garbage").status == 200


def test_ranges(server: Server) -> None:
    resp = _get(server, "/static/data.bin", "Range: bytes=0-99")
    assert resp.status == 206
    assert resp.body == DATA[:100]
    assert resp.header("Content-Range") == "bytes 0-99/1000"
    assert resp.header("Content-Length") == "100"
    tail = _get(server, "/static/data.bin", "Range: bytes=-10")
    assert (tail.status, tail.body) == (206, DATA[-10:])
    assert tail.header("Content-Range") == "bytes 990-999/1000"
    rest = _get(server, "/static/data.bin", "Range: bytes=990-")
    assert (rest.status, rest.body) == (206, DATA[990:])
    past = _get(server, "/static/data.bin", "Range: bytes=900-5000")
    assert (past.status, past.body) == (206, DATA[900:])
    for unsatisfiable in ("bytes=1000-", "bytes=5000-6000", "bytes=-0"):
        bad = _get(server, "/static/data.bin", f"Range: {unsatisfiable}")
        assert bad.status == 416, unsatisfiable
        assert bad.header("Content-Range") == "bytes */1000"
    several = _get(server, "/static/data.bin", "Range: bytes=0-1, 5-6")
    assert (several.status, several.body) == (200, DATA)
    etag = several.header("ETag")
    same = _get(server, "/static/data.bin", "Range: bytes=0-9", f"If-Range: {etag}")
    assert (same.status, same.body) == (206, DATA[:10])
    other = _get(server, "/static/data.bin", "Range: bytes=0-9", 'If-Range: "old"')
    assert (other.status, other.body) == (200, DATA)


def test_head_sends_the_headers_only(server: Server) -> None:
    with Wire(server.port) as wire:
        wire.send(req("HEAD", "/static/base.css") + req("GET", "/static/sub/inner.txt"))
        head = wire.read_response("HEAD")
        assert head.status == 200
        assert head.header("Content-Length") == str(len(CSS))
        assert head.body == b""
        after = wire.read_response()  # the next response follows at once: no body came
        assert (after.status, after.body) == (200, b"inner\n")


@pytest.mark.parametrize(
    ("accept", "body", "encoding"),
    [
        ("br", CSS_BR, "br"),
        ("gzip, deflate, br", CSS_BR, "br"),
        ("gzip", CSS_GZ, "gzip"),
        ("br;q=0, gzip;q=0.5", CSS_GZ, "gzip"),
        ("*", CSS_BR, "br"),
        ("identity", CSS, None),
        ("br;q=0, gzip;q=0", CSS, None),
    ],
)
def test_precompressed_variants(
    server: Server, accept: str, body: bytes, encoding: str | None
) -> None:
    resp = _get(server, "/static/base.css", f"Accept-Encoding: {accept}")
    assert resp.status == 200
    assert resp.body == body
    assert resp.header("Content-Encoding") == encoding
    assert resp.header("Content-Type") == "text/css; charset=utf-8"
    assert resp.header("Vary") == "Accept-Encoding"
    plain = _get(server, "/static/base.css")
    if encoding is not None:
        assert resp.header("ETag") != plain.header("ETag")  # one ETag per representation
        again = _get(
            server,
            "/static/base.css",
            f"Accept-Encoding: {accept}",
            f"If-None-Match: {resp.header('ETag')}",
        )
        assert again.status == 304


def test_fingerprinted_names_are_immutable(server: Server) -> None:
    for name in ("app.3f2a9c1b.css", "base.6b517d0d5813.css"):
        resp = _get(server, f"/static/{name}")
        assert resp.status == 200
        assert resp.header("Cache-Control") == "public, max-age=31536000, immutable"


def test_public_files_and_what_goes_to_the_app(server: Server) -> None:
    robots = _get(server, "/robots.txt")
    assert (robots.status, robots.body) == (200, b"User-agent: *\n")
    assert robots.header("Content-Type") == "text/plain; charset=utf-8"
    assert _get(server, "/css/site.css").body == CSS
    # A miss in public/ is the app's (the stub answers "not found\n" itself).
    home = _get(server, "/")
    assert (home.status, home.body) == (200, b"Hello from Ferryman's stub app\n")
    assert _get(server, "/pid").status == 200
    assert _get(server, "/css/missing.css").body == b"not found\n"
    assert _get(server, "/css").body == b"not found\n"  # a directory
    # Other methods on a public file go to the app too.
    assert _get(server, "/robots.txt", method="POST").body == b"not found\n"
    # A FIFO in public/ does not hang the core: not a regular file, the app's turn.
    fifo = _get(server, "/fifo")
    assert (fifo.status, fifo.body) == (404, b"not found\n")


def test_static_dir_is_authoritative(server: Server) -> None:
    missing = _get(server, "/static/missing.css")
    assert (missing.status, missing.body) == (404, b"Not Found\n")
    for directory in ("/static", "/static/", "/static/sub", "/static/sub/"):
        assert _get(server, directory).body == b"Not Found\n", directory
    post = _get(server, "/static/base.css", method="POST")
    assert post.status == 405
    assert post.header("Allow") == "GET, HEAD"
    # Only under the prefix itself: /staticfoo is not /static/foo.
    assert _get(server, "/staticdata.bin").body == b"not found\n"


#: (raw request target, expected status): traversal attempts, none may reach a file
#: outside the roots. A 404 from the core ("Not Found") under /static, from the app
#: ("not found") for public/, or a 400 from the parser for targets it refuses.
TRAVERSALS = [
    ("/../secret.txt", 404),
    ("/static/../../secret.txt", 404),
    ("/static/%2e%2e/%2e%2e/secret.txt", 404),
    ("/static/%2e%2e%2f%2e%2e%2fsecret.txt", 404),
    ("/static/..%2f..%2fsecret.txt", 404),
    ("/static/sub%2F..%2F..%2F..%2Fsecret.txt", 404),
    ("/static/..\\..\\secret.txt", 404),
    ("/static/%2e%2e%5c%2e%2e%5csecret.txt", 404),
    ("/static/evil-file%00.css", 404),
    ("/static/sub/inner.txt%00", 404),
    ("/static/evil-file", 404),
    ("/static/evil/secret2.txt", 404),
    ("/link-to-secret", 404),
    ("//secret.txt", 404),
    ("/static//../../secret.txt", 404),
    ("/static/./../../secret.txt", 404),
    ("/static/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt", 404),
    ("/static/%252e%252e/secret.txt", 404),
    ("/static/.git/config", 404),
    ("/.env", 404),
    ("/static/%", 404),
    ("http://x/../../secret.txt", 404),
    ("http://x/static/../../secret.txt", 404),
]


@pytest.mark.parametrize(("target", "status"), TRAVERSALS)
def test_no_path_escapes(server: Server, tree: Path, target: str, status: int) -> None:
    base = tree.parent
    with Wire(server.port) as wire:
        wire.send(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = wire.read_to_eof()
    assert SECRET not in raw, target
    assert raw.startswith(b"HTTP/1.1 %d " % status), (target, raw[:300])
    # The absolute path of the secret, as a target, does not serve it either.
    if target == "//secret.txt":
        with Wire(server.port) as wire:
            wire.send(req("GET", "/" + str(base / "secret.txt"), "Connection: close"))
            assert SECRET not in wire.read_to_eof()


def test_pipelined_static_and_app_responses_keep_their_order(server: Server) -> None:
    targets = [
        ("GET", "/static/data.bin"),
        ("GET", "/"),
        ("GET", "/css/site.css"),
        ("GET", "/slow?t=0.2"),
        ("HEAD", "/static/base.css"),
        ("GET", "/static/missing"),
        ("GET", "/static/data.bin"),
        ("GET", "/missing-in-app"),
        ("GET", "/robots.txt"),
    ]
    with Wire(server.port, timeout=20) as wire:
        wire.send(b"".join(req(method, target) for method, target in targets))
        got = [wire.read_response(method) for method, _ in targets]
        # And the keep-alive connection goes on serving afterwards.
        wire.send(req("GET", "/static/sub/inner.txt"))
        last = wire.read_response()
    assert [(r.status, r.body) for r in got] == [
        (200, DATA),
        (200, b"Hello from Ferryman's stub app\n"),
        (200, CSS),
        (200, got[3].body),
        (200, b""),
        (404, b"Not Found\n"),
        (200, DATA),
        (404, b"not found\n"),
        (200, b"User-agent: *\n"),
    ]
    assert got[3].body.isdigit()
    assert last.body == b"inner\n"


def test_static_responses_are_in_the_access_log(server: Server) -> None:
    mark = server.mark()
    _get(server, "/static/data.bin", "Range: bytes=0-99")
    server.wait_for_log(r'"GET /static/data\.bin HTTP/1\.1" 206 100 ', 5, mark)


def _write_big(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(BIG_SIZE // 1_000_000):
            chunk = os.urandom(1_000_000)
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def test_a_100mb_file_arrives_whole_and_the_core_stays_small(server: Server, tree: Path) -> None:
    expected = _write_big(tree / "staticfiles" / "big.bin")
    try:
        _get(server, "/static/data.bin")
        before = server.rss_kb()
        peak = before
        for _ in range(2):
            digest = hashlib.sha256()
            got = 0
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(req("GET", "/static/big.bin", "Connection: close"))
                head = b""
                while b"\r\n\r\n" not in head:
                    data = sock.recv(65536)
                    assert data
                    head += data
                head, _, body = head.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert b"\r\nContent-Length: %d\r\n" % BIG_SIZE in head
                digest.update(body)
                got += len(body)
                while True:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    digest.update(data)
                    got += len(data)
                    if got % (16 << 20) < len(data):
                        peak = max(peak, server.rss_kb())
            assert got == BIG_SIZE
            assert digest.hexdigest() == expected
        after = server.rss_kb()
        # The file is never read whole, nor buffered: a few MB of slack at most.
        assert max(peak, after) - before < 8 * 1024, (before, peak, after)
    finally:
        (tree / "staticfiles" / "big.bin").unlink()


def test_slow_and_vanishing_clients_leave_no_fd_behind(tmp_path: Path) -> None:
    """A client that takes nothing is closed after send_timeout (logged 499); clients that
    leave mid-file, and many ordinary static requests, leave the fd count where it was."""
    app = _tree(tmp_path)
    big = app / "staticfiles" / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(50 * 1000 * 1000)  # sparse: bytes enough to fill every buffer
    with serving(app, "--static-dir", "/static=staticfiles", "--send-timeout", "2") as server:
        _get(server, "/static/data.bin")
        fds = server.settled_resources()[0]
        mark = server.mark()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", server.port))
        try:
            sock.sendall(req("GET", "/static/big.bin"))
            started = time.monotonic()
            server.wait_for_log(r"499: 127\.0\.0\.1 took no bytes of a response", 15, mark)
            assert 1.5 < time.monotonic() - started < 10
            server.wait_for_log(r'"GET /static/big\.bin HTTP/1\.1" 499', 5, mark)
        finally:
            sock.close()
        assert wait_until(lambda: server.fd_count() == fds, 10), (fds, server.fd_count())

        for i in range(300):
            if i % 10 == 0:  # leaves mid-file
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                    client.sendall(req("GET", "/static/big.bin"))
                    client.recv(65536)
                continue
            with Wire(server.port) as wire:
                wire.send(
                    req("GET", "/static/data.bin", "Range: bytes=0-9")
                    + req("HEAD", "/static/big.bin")
                    + req("GET", "/static/base.css", "Accept-Encoding: br")
                    + req("GET", "/static/missing")
                    + req("GET", "/css/site.css")
                )
                statuses = [wire.read_response(m).status for m in ("GET", "HEAD", "GET")]
                statuses += [wire.read_response().status for _ in range(2)]
                assert statuses == [206, 200, 200, 404, 200]
        assert wait_until(lambda: server.fd_count() == fds, 10), (fds, server.fd_count())


def test_a_big_file_read_late_then_pipelined_requests(server: Server, tree: Path) -> None:
    """The client reads nothing for a while (the core's writes pause mid-file), then all:
    the file arrives whole, and the requests pipelined behind it (app, static) follow."""
    big = tree / "staticfiles" / "late.bin"
    content = os.urandom(1_000_000) * 20
    big.write_bytes(content)
    try:
        with Wire(server.port, timeout=30) as wire:
            wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            wire.send(
                req("GET", "/static/late.bin")
                + req("GET", "/")
                + req("GET", "/static/late.bin", "Range: bytes=-5")
                + req("GET", "/static/data.bin")
            )
            time.sleep(1.0)
            first = wire.read_response()
            assert first.status == 200
            assert hashlib.sha256(first.body).digest() == hashlib.sha256(content).digest()
            assert wire.read_response().body == b"Hello from Ferryman's stub app\n"
            assert wire.read_response().body == content[-5:]
            assert wire.read_response().body == DATA
    finally:
        big.unlink()


def test_a_static_dir_made_or_switched_after_the_start_is_served(tmp_path: Path) -> None:
    """collectstatic may run after the server started, and a deploy may switch a symlink
    to a new release: the missing directory is logged, its URL answers 404, then the
    files of whatever the directory is at each request are served."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(STUB / "passenger_wsgi.py", app / "passenger_wsgi.py")
    for release in ("r1", "r2"):
        (app / release / "assets").mkdir(parents=True)
        (app / release / "assets" / "app.js").write_bytes(b"console.log('%s')\n" % release.encode())
    with serving(app, "--static-dir", "/assets/=current/assets") as server:
        assert "--static-dir /assets/=current/assets: " in server.log_text()
        assert _get(server, "/assets/app.js").body == b"Not Found\n"
        (app / "current").symlink_to("r1")
        resp = _get(server, "/assets/app.js")
        assert (resp.status, resp.body) == (200, b"console.log('r1')\n")
        assert resp.header("Content-Type") in (
            "text/javascript; charset=utf-8",
            "application/javascript; charset=utf-8",
        )
        (app / "next").symlink_to("r2")
        (app / "next").rename(app / "current")  # atomic, as deploy tools do
        assert _get(server, "/assets/app.js").body == b"console.log('r2')\n"
        assert _get(server, "/").body == b"Hello from Ferryman's stub app\n"  # no public/


def test_static_files_need_no_app_process(tmp_path: Path) -> None:
    """The core serves them alone: they come even while the app cannot start."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(STUB.parent / "wsgi_syntax_error" / "passenger_wsgi.py", app)
    (app / "public").mkdir()
    (app / "public" / "robots.txt").write_bytes(b"User-agent: *\n")
    (app / "static").mkdir()
    (app / "static" / "app.css").write_bytes(CSS)
    with serving(app, "--static-dir", "/static=static", wait_ready=0) as server:
        assert _get(server, "/robots.txt").body == b"User-agent: *\n"
        assert _get(server, "/static/app.css").body == CSS
        assert _get(server, "/").status >= 500  # the app's own page: its start fails
        assert _get(server, "/static/app.css").body == CSS  # and still, after the failure


def test_a_directorys_url_serves_its_index_html(tmp_path: Path) -> None:
    """/ and /docs/ are served from public/index.html and public/docs/index.html (as
    nginx's index, and Passenger's public/ did for Rails' index.html); /docs redirects to
    /docs/ (its page's relative links need the slash); a directory without index.html is
    the app's (public/) or a 404 (--static-dir)."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(STUB / "passenger_wsgi.py", app / "passenger_wsgi.py")
    (app / "public" / "docs").mkdir(parents=True)
    (app / "public" / "empty").mkdir()
    (app / "public" / "index.html").write_bytes(b"<h1>home</h1>\n")
    (app / "public" / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (app / "staticfiles" / "guide").mkdir(parents=True)
    (app / "staticfiles" / "guide" / "index.html").write_bytes(b"<h1>guide</h1>\n")
    (app / "staticfiles" / "bare").mkdir()
    with serving(app, "--static-dir", "/static=staticfiles") as running:
        for target, body in (
            ("/", b"<h1>home</h1>\n"),
            ("/docs/", b"<h1>docs</h1>\n"),
            ("/docs/?q=1", b"<h1>docs</h1>\n"),
            ("/static/guide/", b"<h1>guide</h1>\n"),
        ):
            resp = _get(running, target)
            assert (resp.status, resp.body) == (200, body), target
            assert resp.header("Content-Type") == "text/html; charset=utf-8"
        assert _get(running, "/docs/", method="HEAD").status == 200
        for target, location in (
            ("/docs", "/docs/"),
            ("/docs?q=1", "/docs/?q=1"),
            ("/static/guide", "/static/guide/"),
        ):
            resp = _get(running, target)
            assert (resp.status, resp.header("Location")) == (301, location), target
        # No index.html: public/'s directory is the app's; --static-dir's a 404.
        assert _get(running, "/empty/").body == b"not found\n"  # the stub app's 404
        assert _get(running, "/empty").body == b"not found\n"
        assert _get(running, "/static/bare/").status == 404
        assert _get(running, "/static/bare").status == 404
        # Other methods on public/ are the app's, as for files.
        assert _get(running, "/docs/", method="DELETE").body == b"not found\n"
