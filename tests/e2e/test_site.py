"""Several apps in one server: routing by host and prefix, SCRIPT_NAME / root_path /
X-Forwarded-Prefix, one pool shared, per-app status and error pages."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
from pathlib import Path

import pytest

from .harness import (
    APPS,
    GATE_APP,
    STUB,
    Gates,
    Request,
    Server,
    ferryman,
    refused_start,
    serving,
    wait_until,
)

NODE = APPS / "node_http"
STARLETTE = APPS / "asgi_starlette"
RACK = APPS / "rack_stub"


def get(server: Server, path: str, host: str = "localhost") -> tuple[int, bytes]:
    conn = server.connection()
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def status_json(server: Server) -> dict[str, object]:
    result: dict[str, object] = json.loads(ferryman(server, "status", "--show=json").stdout)
    return result


def test_three_apps_by_prefix_and_host_each_see_their_own_paths() -> None:
    """A WSGI app at /, a Node app at /api, an ASGI app at admin.example.com/panel."""
    with serving(
        STUB,
        "--app", f"/api={NODE}",
        "--app", f"admin.example.com/panel={STARLETTE}",
        "--max-pool-size", "3",
        wait_ready=3,
    ) as server:  # fmt: skip
        # WSGI at /: no SCRIPT_NAME, PATH_INFO whole.
        status, body = get(server, "/environ/x?q=1")
        assert status == 200
        environ = json.loads(body)
        assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/environ/x")
        # /apix is not below /api: the app at / takes it (the stub's 404 page).
        status, body = get(server, "/apix")
        assert (status, body) == (404, b"not found\n")  # the stub's, not the core's
        # Node at /api: the full path, and the prefix in X-Forwarded-Prefix.
        for path in ("/api/url?a=b", "/api/url"):
            status, body = get(server, path)
            assert status == 200, body
            seen = json.loads(body)
            assert seen["url"] == path
            assert seen["prefix"] == "/api"
        # A client's own X-Forwarded-Prefix (not a trusted proxy's) is not joined to it.
        conn = server.connection()
        conn.request("GET", "/api/url", headers={"X-Forwarded-Prefix": "/evil"})
        assert json.loads(conn.getresponse().read())["prefix"] == "/api"
        conn.close()
        status, body = get(server, "/api")
        assert status == 200 and body.startswith(b"Hello from Node")
        # ASGI at admin.example.com/panel: root_path, and a path that includes it.
        for host in ("admin.example.com", "ADMIN.example.com:8080"):
            status, body = get(server, "/panel/headers/x?z=1", host)
            assert status == 200, body
            seen = json.loads(body)
            assert seen["root_path"] == "/panel"
            assert seen["path"] == "/panel/headers/x"
        # The host's other paths, and unknown hosts, go to the app at / of any host.
        status, body = get(server, "/environ/y", "admin.example.com")
        assert status == 200 and json.loads(body)["PATH_INFO"] == "/environ/y"
        status, body = get(server, "/panel/headers/x", "other.example.com")
        assert (status, body) == (404, b"not found\n")  # the stub's, not the core's
        # Three groups in the status, each with where it is mounted.
        state = status_json(server)
        apps = {app["mount"]: app for app in state["apps"]}  # type: ignore[attr-defined]
        assert set(apps) == {"/", "/api", "admin.example.com/panel"}
        assert apps["/api"]["app_root"] == str(NODE)
        assert apps["/api"]["app_type"] == "node"
        text = ferryman(server, "status").stdout
        assert "Mounted at: /api" in text and "Mounted at: admin.example.com/panel" in text
        log = server.log_text()
        assert f"serving /api from {NODE}" in log


def test_the_pool_is_shared_and_an_idle_app_yields_its_process(tmp_path: Path) -> None:
    """max_pool_size 3 for three apps: a busy app gets a process of an idle one, and the
    processes never number more than 3."""
    gates = Gates(tmp_path)
    with serving(
        GATE_APP,
        "--app", f"/b={STUB}",
        "--app", f"/c={NODE}",
        "--max-pool-size", "3",
        wait_ready=3,
    ) as server:  # fmt: skip
        assert len(server.children()) == 3
        mark = server.mark()
        busy = [Request(server, f"/wait?gate={gates.path('g')}") for _ in range(2)]
        # The second request needs a second process: the gate app takes an idle app's.
        assert wait_until(
            lambda: sum("output: waiting g" in line for line in server.lines[mark:]) >= 2,
            timeout=20,
        ), server.log_text()
        server.wait_for_log(r"Stopping app \d+ of \w+: capacity for another app", start=mark)
        apps = status_json(server)["apps"]
        counts = {app["mount"]: len(app["processes"]) for app in apps}  # type: ignore[attr-defined]
        assert counts["/"] >= 2, counts
        assert sum(counts.values()) <= 3, counts
        gates.open("g")
        for request in busy:
            request.join(30)
            assert request.status == 200
        # The apps that gave up their process start one again when asked (a process that
        # is still exiting is not counted: the pool counts live and starting processes).
        assert get(server, "/b/pid")[0] == 200
        assert get(server, "/c/pid")[0] == 200
        apps = status_json(server)["apps"]
        live = sum(len(app["processes"]) + app["spawning"] for app in apps)  # type: ignore[attr-defined]
        assert live <= 3


def test_ferrymanfile_app_tables_with_their_own_settings(tmp_path: Path) -> None:
    """[[app]] tables: root, prefix, hosts, and per-app settings (thread_count, envvar)."""
    site = tmp_path / "site"
    shutil.copytree(STUB, site)
    (site / "Ferrymanfile.toml").write_text(
        "min_instances = 1\n"
        "[[app]]\n"
        f'root = "{STUB}"\n'
        'prefix = "/two"\n'
        "thread_count = 3\n"
        'envvar = { WHO = "two" }\n'
        "[[app]]\n"
        f'root = "{STUB}"\n'
        'hosts = ["*.example.org"]\n'
        'envvar = { WHO = "wild" }\n'
    )
    with serving(site, wait_ready=3) as server:
        status, body = get(server, "/two/environ")
        assert status == 200
        environ = json.loads(body)
        assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/two", "/environ")
        assert environ["wsgi.multithread"] is True  # thread_count 3
        assert get(server, "/two/osenv?names=WHO")[1].find(b"two") >= 0
        assert get(server, "/osenv?names=WHO", "a.example.org")[1].find(b"wild") >= 0
        assert get(server, "/osenv?names=WHO", "example.org")[1].find(b"wild") < 0
        environ = json.loads(get(server, "/environ")[1])
        assert environ["wsgi.multithread"] is False


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--app", "api=./x"], ["app", "[HOST]/PREFIX=DIR"]),
        (["--app", "/api"], ["app", "[HOST]/PREFIX=DIR"]),
        (["--app", "/a/../b=."], ["app", "'/a/../b=.'"]),
        (["--app", "/api=./no-such-dir"], ["app", "does not exist"]),
        (["--app", "/api=.", "--app", "/api=."], ["app", "/api is served by"]),
        (["--app", "bad_host!/=."], ["app", "bad_host!/=."]),
    ],
)
def test_invalid_app_mounts_are_refused_naming_the_setting(
    args: list[str], words: list[str]
) -> None:
    line = refused_start(*args)
    for word in words:
        assert word in line, line


def test_an_app_table_with_a_server_setting_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(STUB, site)
    (site / "Ferrymanfile.toml").write_text(
        f'[[app]]\nroot = "{STUB}"\nprefix = "/x"\nmax_pool_size = 9\n'
    )
    line = refused_start(app_dir=site)  # exit code 2, one line
    assert "max_pool_size" in line and "whole server" in line


def test_an_app_that_fails_to_start_leaves_the_others_serving() -> None:
    """A broken app at /broken: its requests get its error page, / keeps serving."""
    with serving(
        STUB, "--app", f"/broken={APPS / 'wsgi_broken'}", "--spawn-backoff", "30", wait_ready=1
    ) as server:
        server.wait_for_log("Could not start a process", timeout=20)
        status, body = get(server, "/broken/x")
        assert status == 500
        assert b"wsgi_broken" in body
        assert get(server, "/")[0] == 200


def test_a_rack_app_at_a_prefix_gets_script_name() -> None:
    from .test_rack import _need

    _need("rack")  # skips only outside CI, as the other Ruby tests
    with serving(STUB, "--app", f"/rb={RACK}", wait_ready=2) as server:
        for path in ("/rb/env?x=1", "/%72b/env"):  # the prefix as sent or encoded
            status, body = get(server, path)
            assert status == 200, (path, body)
            env = dict(line.split("=", 1) for line in body.decode().splitlines())
            assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/rb", "/env"), path
        # An encoded "/" is no boundary: /rb%2Fenv is not below /rb (the app at / has it).
        assert get(server, "/rb%2Fenv") == (404, b"not found\n")


def test_each_app_gets_its_own_sticky_cookie_and_forwarded_prefix() -> None:
    """Sticky cookies are scoped to the app's prefix (two apps on one host keep theirs);
    a trusted proxy's X-Forwarded-Prefix comes before the app's own prefix."""
    with serving(
        STUB,
        "--app", f"/api={NODE}",
        "--sticky-sessions",
        "--trusted-proxies", "127.0.0.1",
        wait_ready=2,
    ) as server:  # fmt: skip
        conn = server.connection()
        conn.request("GET", "/api/url", headers={"X-Forwarded-Prefix": "/outer/"})
        response = conn.getresponse()
        seen = json.loads(response.read())
        assert seen["prefix"] == "/outer/api"
        assert "Path=/api;" in response.headers["Set-Cookie"]
        conn.request("GET", "/environ")
        response = conn.getresponse()
        response.read()
        assert "Path=/;" in response.headers["Set-Cookie"]
        conn.close()


def test_one_app_still_needs_no_routing_and_health_covers_every_app() -> None:
    with serving(
        STUB, "--app", f"/api={NODE}", "--health-check-path", "/healthz", wait_ready=2
    ) as server:
        conn = server.connection()
        conn.request("GET", "/healthz")
        response: http.client.HTTPResponse = conn.getresponse()
        assert (response.status, response.read()) == (200, b"OK: 2 ready process(es)\n")
        conn.close()


def test_static_files_of_an_app_at_a_prefix_are_below_its_prefix(tmp_path: Path) -> None:
    """public/ and static_dir of the app at /api are served at /api/..., not at /."""
    api = tmp_path / "api"
    shutil.copytree(STUB, api)
    (api / "public").mkdir()
    (api / "public" / "app.css").write_text("body{}\n")
    (api / "collected").mkdir()
    (api / "collected" / "x.js").write_text("let x;\n")
    site = tmp_path / "web"
    shutil.copytree(STUB, site)
    (site / "Ferrymanfile.toml").write_text(
        f'[[app]]\nroot = "{api}"\nprefix = "/api"\nstatic_dir = {{ "/static" = "collected" }}\n'
    )
    with serving(site, wait_ready=2) as server:
        conn = server.connection()
        conn.request("GET", "/api/app.css")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"body{}\n")
        assert response.headers["Content-Type"] == "text/css; charset=utf-8"
        conn.close()
        assert get(server, "/api/static/x.js") == (200, b"let x;\n")
        assert get(server, "/api/static/missing.js")[0] == 404  # the core's: authoritative
        # The prefixes percent-encoded: the same app, the same static directory.
        assert get(server, "/%61pi/st%61tic/x.js") == (200, b"let x;\n")
        assert get(server, "/%61pi/st%61tic/missing.js")[0] == 404
        assert get(server, "/%61pi/app.css") == (200, b"body{}\n")
        # At / they are the app's at / (the stub's own 404 page).
        assert get(server, "/app.css") == (404, b"not found\n")
        assert get(server, "/static/x.js") == (404, b"not found\n")
        # A miss in public/ goes to the app at /api, with its prefix split off.
        status, body = get(server, "/api/environ")
        assert status == 200 and json.loads(body)["SCRIPT_NAME"] == "/api"


def test_several_apps_leave_no_trace(tmp_path: Path) -> None:
    """Requests to every app, static files of each, 404s of the core and clients that
    leave: the core's fds, its children and its temp files return to where they were."""
    api = tmp_path / "api"
    shutil.copytree(STUB, api)
    (api / "public").mkdir()
    (api / "public" / "big.bin").write_bytes(b"x" * (4 * 1024 * 1024))
    with serving(
        STUB,
        "--app", f"/api={api}",
        "--app", f"node.example.com/={NODE}",
        "--max-pool-size", "3",
        "--no-access-log",
        wait_ready=3,
    ) as server:  # fmt: skip
        for path, host in (("/", "x"), ("/api/pid", "x"), ("/pid", "node.example.com")):
            assert get(server, path, host)[0] == 200  # every connection to every app made
        before = server.settled_resources()
        conn = server.connection()
        for i in range(600):
            path, host, expected = [
                ("/", "example.com", 200),
                ("/api/environ", "example.com", 200),
                ("/api/big.bin", "example.com", 200),
                ("/pid", "node.example.com", 200),
                ("/api/missing", "example.com", 404),
            ][i % 5]
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            response.read()
            assert response.status == expected, (path, response.status)
        conn.close()
        for _ in range(50):  # leaving in the middle of a static file
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"GET /api/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.recv(1024)
        assert wait_until(lambda: server.settled_resources() == before, timeout=15), (
            before,
            server.settled_resources(),
        )


def test_operator_commands_name_apps_as_status_shows_them(tmp_path: Path) -> None:
    """A directory mounted twice: its second group's name (no spaces) and its mount both
    pick it for restart-app; a wrong name lists the apps; --instance takes the pid
    `ferryman start` runs as."""
    with serving(STUB, "--app", f"/two={STUB}", wait_ready=2) as server:
        names = [app["name"] for app in status_json(server)["apps"]]  # type: ignore[attr-defined]
        assert names == ["wsgi_stub", "wsgi_stub@/two"]
        for which in ("wsgi_stub@/two", "/two"):
            mark = server.mark()
            ferryman(server, "restart-app", "--app", which)
            server.wait_for_log(
                r"Restarting wsgi_stub@/two: asked through the admin API", start=mark
            )
        result = ferryman(server, "restart-app", "--app", "nope", check=False)
        assert result.returncode != 0
        assert "wsgi_stub (at /)" in result.stderr and "wsgi_stub@/two (at /two)" in result.stderr
        assert (
            "Mounted at"
            in ferryman(server, "status", "--instance", str(server.watchdog_pid)).stdout
        )


def test_a_site_directory_with_only_a_ferrymanfile(tmp_path: Path) -> None:
    """[[app]] takes / for every host: the directory is the site's settings, the log says
    so, and a --static-dir for it is refused with a warning (it would serve nothing)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "Ferrymanfile.toml").write_text(f'[[app]]\nroot = "{STUB}"\n')
    with serving(site, "--static-dir", "/static=staticfiles") as server:
        assert get(server, "/pid")[0] == 200
        log = server.log_text()
        assert f"serving the apps of {site}" in log
        assert f"settings read from {site / 'Ferrymanfile.toml'}" in log
        assert "ignoring static_dir (from --static-dir)" in log


def test_operator_commands_pick_a_server_by_port() -> None:
    """Two servers: --port picks one for status and restart-app, as it does for stop."""
    with serving(STUB) as first:
        shared = {"TMPDIR": str(first.tmpdir)}  # where the tools look for servers
        with serving(STUB, "--app", f"/api={NODE}", env=shared, wait_ready=2) as second:
            assert (
                "2 Ferryman instances are running" in ferryman(first, "status", check=False).stderr
            )
            assert (
                "Mounted at: /api"
                not in ferryman(first, "status", "--port", str(first.port)).stdout
            )
            assert (
                "Mounted at: /api" in ferryman(first, "status", "--port", str(second.port)).stdout
            )
            mark = second.mark()
            ferryman(first, "restart-app", "--port", str(second.port), "--app", "/api")
            second.wait_for_log(r"Restarting node_http: asked through the admin", start=mark)
