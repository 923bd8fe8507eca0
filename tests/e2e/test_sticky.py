"""Sticky sessions: a cookie sends a client back to the process that served it."""

from __future__ import annotations

import os
import signal
import threading

from .harness import APPS, STUB, Server, alive, serving, wait_until

FASTAPI = APPS / "asgi_fastapi"
COOKIE = "_ferryman_route"


def _get(server: Server, path: str, cookie: str | None = None) -> tuple[int, str, str | None]:
    """(status, body, Set-Cookie) of one request, with the sticky cookie if given."""
    headers = {"Cookie": f"theme=dark; {COOKIE}={cookie}; other=1"} if cookie else {}
    status, got, body = server.request("GET", path, headers=headers)
    return status, body.decode(), got.get("set-cookie")


def _route_of(set_cookie: str | None) -> str:
    """The process a Set-Cookie header names."""
    assert set_cookie is not None
    return set_cookie.split(";")[0].partition("=")[2]


def _in_threads(count: int, work: object) -> list[tuple[int, str, str | None]]:
    results: list[tuple[int, str, str | None]] = []
    lock = threading.Lock()

    def run() -> None:
        result = work()  # type: ignore[operator]
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_a_cookie_sends_every_request_to_one_process_and_without_it_they_spread() -> None:
    with serving(
        FASTAPI, "--min-instances", "2", "--max-pool-size", "2", "--sticky-sessions",
        wait_ready=2,
    ) as server:  # fmt: skip
        status, pid, set_cookie = _get(server, "/pid")
        assert status == 200 and set_cookie is not None
        name_value, *attributes = [part.strip() for part in set_cookie.split(";")]
        assert attributes == ["Path=/", "SameSite=Lax", "HttpOnly"]
        name, _, route = name_value.partition("=")
        assert name == COOKIE and route.isdigit()
        # 100 requests with the cookie, 10 at a time: all on the same process, and the
        # cookie is not sent again (the client has it right).
        sticky = [
            result
            for _ in range(10)
            for result in _in_threads(10, lambda: _get(server, "/sleep?seconds=0.05", route))
        ]
        assert len(sticky) == 100
        assert {(status, body, cookie) for status, body, cookie in sticky} == {(200, pid, None)}
        # Without the cookie, concurrent requests spread over both processes.
        spread = _in_threads(20, lambda: _get(server, "/sleep?seconds=0.3"))
        assert {status for status, _, _ in spread} == {200}
        assert len({body for _, body, _ in spread}) == 2, spread


def test_a_sticky_request_waits_for_its_busy_process() -> None:
    """Single-threaded processes: concurrent requests with one cookie queue for their
    process rather than going to the idle one."""
    with serving(
        STUB, "--min-instances", "2", "--max-pool-size", "2", "--sticky-sessions",
        wait_ready=2,
    ) as server:  # fmt: skip
        _, _, set_cookie = _get(server, "/pid")
        route = _route_of(set_cookie)
        results = _in_threads(6, lambda: _get(server, "/slow?t=0.2", route))
        assert len({body for _, body, _ in results}) == 1, results
        assert {status for status, _, _ in results} == {200}


def test_a_cookie_for_a_process_that_is_gone_gets_a_new_one() -> None:
    with serving(
        STUB, "--min-instances", "2", "--max-pool-size", "2", "--sticky-sessions",
        wait_ready=2,
    ) as server:  # fmt: skip
        _, pid, set_cookie = _get(server, "/pid")
        route = _route_of(set_cookie)
        os.kill(int(pid), signal.SIGKILL)
        assert wait_until(lambda: not alive(int(pid)), timeout=10)
        status, other, renewed = _get(server, "/pid", route)
        assert status == 200 and other != pid
        assert renewed is not None and renewed.split(";")[0] != f"{COOKIE}={route}"
        # A cookie that is not a number is no cookie.
        assert _get(server, "/pid", "not-a-number")[0] == 200


def test_without_sticky_sessions_no_cookie_is_set() -> None:
    with serving(STUB, "--min-instances", "1") as server:
        assert _get(server, "/pid")[2] is None


def test_the_cookie_name_and_attributes_are_the_operators() -> None:
    """--sticky-sessions-cookie-name and -attributes: the cookie set is that one, and only a
    cookie of that name routes (one of the default name is any other cookie)."""
    with serving(
        STUB, "--min-instances", "2", "--max-pool-size", "2", "--sticky-sessions",
        "--sticky-sessions-cookie-name", "route_id",
        "--sticky-sessions-cookie-attributes", "SameSite=Strict; Secure",
        wait_ready=2,
    ) as server:  # fmt: skip
        status, got, body = server.request("GET", "/pid")
        assert status == 200
        name_value, *attributes = [part.strip() for part in got["set-cookie"].split(";")]
        assert attributes == ["Path=/", "SameSite=Strict", "Secure"]
        name, _, route = name_value.partition("=")
        assert name == "route_id" and route.isdigit()

        def with_cookie(cookie: str) -> tuple[int, str, str | None]:
            headers = {"Cookie": f"{cookie}={route}"}
            status, got, body = server.request("GET", "/slow?t=0.3", headers=headers)
            return status, body.decode(), got.get("set-cookie")

        sticky = _in_threads(6, lambda: with_cookie("route_id"))
        assert {(status, pid) for status, pid, _ in sticky} == {(200, body.decode())}, sticky
        other = _in_threads(6, lambda: with_cookie(COOKIE))
        assert {status for status, _, _ in other} == {200}
        assert len({pid for _, pid, _ in other}) == 2, other  # not routed by it


def test_a_websocket_upgrade_with_the_cookie_goes_to_its_process() -> None:
    """socket.io's way: long-polling sets the cookie, then the upgrade must reach the same
    process (it holds the session). Four WebSockets with the cookie, held open at once,
    all land there, busy as it gets; four without it go to the least-busy process: the
    other one."""
    from websockets.sync.client import connect

    with serving(
        FASTAPI, "--min-instances", "2", "--max-pool-size", "2", "--sticky-sessions",
        wait_ready=2,
    ) as server:  # fmt: skip
        _, pid, set_cookie = _get(server, "/pid")
        route = _route_of(set_cookie)
        url = f"ws://127.0.0.1:{server.port}/ws/echo"
        sticky = [
            connect(url, additional_headers={"Cookie": f"{COOKIE}={route}"}) for _ in range(4)
        ]
        plain = [connect(url) for _ in range(4)]
        try:
            assert {ws.recv(timeout=10) for ws in sticky} == {pid}
            (other,) = {ws.recv(timeout=10) for ws in plain}
            assert other != pid
        finally:
            for ws in sticky + plain:
                ws.close()
