"""WebSockets through the front: a real client (the websockets library), real ASGI apps,
the upgrade routed to the least-busy process and held as a session for its whole life."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .harness import APPS, Server, alive, serving, wait_until

FASTAPI = APPS / "asgi_fastapi"


def _url(server: Server, path: str = "/ws/echo") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def _sessions(server: Server) -> dict[int, int]:
    """Open sessions per app process, as `ferryman status --show json` reports them."""
    out = subprocess.run(
        [sys.executable, "-m", "ferryman", "status", "--show=json"],
        env=server.env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    state: dict[str, Any] = json.loads(out)
    return {p["pid"]: p["sessions"] for app in state["apps"] for p in app["processes"]}


def test_echo_text_binary_and_a_megabyte_and_close_codes_both_ways() -> None:
    with serving(FASTAPI, "--min-instances", "1") as server:
        (pid,) = server.app_pids
        with connect(_url(server), max_size=2**21) as ws:
            assert ws.recv() == str(pid)  # routed to the app process, through the tunnel
            ws.send("héllo")
            assert ws.recv() == "héllo"
            ws.send(b"\x00\x01\xff")
            assert ws.recv() == b"\x00\x01\xff"
            big = os.urandom(1024 * 1024)
            ws.send(big)
            assert ws.recv() == big
            assert _sessions(server) == {pid: 1}  # the WebSocket holds a session
            ws.send("close:4001")  # the server closes, with its code
            with pytest.raises(ConnectionClosed):
                ws.recv()
            assert (ws.close_code, ws.close_reason) == (4001, "asked to")
        with connect(_url(server)) as ws:
            ws.recv()
            ws.close(4002, "bye")  # the client closes, with its code
        server.wait_for_log(r'"GET /ws/echo HTTP/1.1" 101 ')
        assert wait_until(lambda: _sessions(server) == {pid: 0}, timeout=10)


def test_a_websocket_the_app_refuses_gets_403() -> None:
    with serving(FASTAPI, "--min-instances", "1") as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(_url(server, "/ws/refuse")).close()
        assert refused.value.response.status_code == 403
        # No route: FastAPI refuses the handshake too; the server serves on.
        with pytest.raises(InvalidStatus):
            connect(_url(server, "/ws/nowhere")).close()
        assert server.get("/pid")[0] == 200


def test_an_accept_with_an_invalid_header_gets_502_not_the_header() -> None:
    with serving(FASTAPI, "--min-instances", "1") as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(_url(server, "/ws/bad-header")).close()
        assert refused.value.response.status_code == 502
        server.wait_for_log(r"502 for GET /ws/bad-header .*invalid header")
        assert server.get("/pid")[0] == 200


def test_a_thousand_websockets_spread_evenly_over_two_processes() -> None:
    with serving(FASTAPI, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        before = server.settled_resources()
        pids = sorted(server.app_pids)

        async def scenario() -> tuple[dict[int, int], list[str]]:
            sockets = []
            try:
                for _ in range(1000):
                    sockets.append(await connect_async(_url(server), open_timeout=30))
                firsts = await asyncio.gather(*(ws.recv() for ws in sockets))
                counts = await asyncio.to_thread(_sessions, server)
                await asyncio.gather(*(ws.send(f"m{i}") for i, ws in enumerate(sockets)))
                echoes = await asyncio.gather(*(ws.recv() for ws in sockets))
                assert echoes == [f"m{i}" for i in range(1000)]
                assert sorted({int(p) for p in firsts}) == pids
                return counts, [str(first) for first in firsts]
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

        counts, firsts = asyncio.run(asyncio.wait_for(scenario(), 120))
        assert sorted(counts) == pids and sum(counts.values()) == 1000, counts
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        assert {firsts.count(str(pid)) for pid in pids} == set(counts.values())
        # Every tunnel closed: its session given back, its fds closed.
        assert wait_until(lambda: set(_sessions(server).values()) == {0}, timeout=30)
        assert wait_until(lambda: server.resources() == before, timeout=30), (
            before,
            server.resources(),
        )


def test_killing_a_process_ends_its_websockets_and_new_ones_succeed() -> None:
    with serving(FASTAPI, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        sockets = [connect(_url(server)) for _ in range(6)]
        try:
            owners = [int(ws.recv()) for ws in sockets]
            victim = owners[0]
            os.kill(victim, signal.SIGKILL)
            for ws, owner in zip(sockets, owners, strict=True):
                if owner == victim:
                    with pytest.raises(ConnectionClosed):
                        ws.recv(timeout=10)
                else:
                    ws.send("still here")
                    assert ws.recv(timeout=10) == "still here"
            assert wait_until(lambda: not alive(victim), timeout=10)
            with connect(_url(server)) as fresh:
                assert int(fresh.recv(timeout=10)) != victim
                fresh.send("new")
                assert fresh.recv(timeout=10) == "new"
        finally:
            for ws in sockets:
                ws.close()


@pytest.mark.parametrize("kind", ["asgi", "node"])
def test_a_graceful_stop_closes_websockets_with_going_away(kind: str) -> None:
    """ASGI: the loader closes them itself; Node.js: the app does, on ferryman:stopping."""
    if kind == "node":
        from .node import EXPRESS, ensure_express_installed

        ensure_express_installed()
        app, path = EXPRESS, "/ws"
    else:
        app, path = FASTAPI, "/ws/echo"
    with serving(app, "--min-instances", "1", "--graceful-timeout", "10") as server:
        ws = connect(_url(server, path))
        try:
            ws.recv()
            server.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
            assert ws.close_code == 1001
        finally:
            ws.close()
        assert server.proc.wait(30) == 0


# -- raw bytes over a real socket ---------------------------------------------------------------

_HANDSHAKE = (
    b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def _read_until(sock: Any, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_handshake_and_a_frame_sent_in_one_packet_both_arrive() -> None:
    """The client's first frame in the same packet as its handshake (before the 101):
    held, then passed on once the app accepted."""
    import socket

    with (
        serving(FASTAPI, "--min-instances", "1") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(_HANDSHAKE + _masked(0x1, b"early bird"))
        data = _read_until(sock, b"early bird")
        head, _, frames = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        assert b"\r\nUpgrade: websocket" in head and b"\r\nConnection: Upgrade" in head
        assert frames.endswith(b"\x81\x0aearly bird")


def test_an_upgrade_the_app_does_not_take_is_an_ordinary_response_then_a_close() -> None:
    """A WSGI app cannot take a WebSocket: it answers as to any GET, and the connection
    closes after (what follows the upgrade request is not HTTP any more)."""
    import socket

    with serving(APPS / "wsgi_stub", "--min-instances", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            request = _HANDSHAKE.replace(b"/ws/echo", b"/pid")
            sock.sendall(request + b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.count(b"HTTP/1.1 ") == 1  # the bytes after it were not a request
        assert b"\r\nConnection: close\r\n" in data


def test_an_upgrade_with_a_body_is_served_as_plain_http() -> None:
    with serving(APPS / "wsgi_stub", "--min-instances", "1") as server:
        request = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        reply = server.raw(request + b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\nhello" in reply
        assert reply.count(b"HTTP/1.1 200 OK") == 2


def test_a_client_that_floods_before_the_101_is_bounded_and_ends() -> None:
    """256 KiB of garbage right after the handshake: the core reads no further than a
    bound (reading pauses until the app answers; more than the bound at once is cut off),
    and if the app accepts, the garbage is a protocol error it closes on. The connection
    ends either way, and the server serves on."""
    import socket

    with serving(FASTAPI, "--min-instances", "1") as server:
        flood = _HANDSHAKE.replace(b"/ws/echo", b"/ws/slow-accept") + b"x" * (256 * 1024)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        try:
            try:
                sock.sendall(flood)
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        finally:
            sock.close()
        assert server.get("/pid")[0] == 200


# -- Node.js (the ws library) -----------------------------------------------------------------


def test_node_websockets_through_the_front() -> None:
    from .node import EXPRESS, ensure_express_installed

    ensure_express_installed()
    with serving(EXPRESS, "--min-instances", "2", "--max-pool-size", "2", wait_ready=2) as server:
        url = _url(server, "/ws")
        sockets = [connect(url, max_size=2**21) for _ in range(4)]
        try:
            owners = sorted(int(ws.recv()) for ws in sockets)
            assert owners == sorted(sorted(server.app_pids) * 2)  # spread: two per process
            ws = sockets[0]
            ws.send("hi node")
            assert ws.recv() == "hi node"
            big = os.urandom(1024 * 1024)
            ws.send(big)
            assert ws.recv() == big
            ws.send("close:4003")
            with pytest.raises(ConnectionClosed):
                ws.recv()
            assert ws.close_code == 4003
        finally:
            for ws in sockets:
                ws.close()
        assert server.get("/")[0] == 200


# -- any-language apps (a program serving HTTP and WebSockets on $PORT) -----------------------


def test_generic_app_websockets_through_the_front() -> None:
    """A generic app (here the websockets library's own server, started by command): the
    upgrade goes to the least-busy process and holds a session there, messages and close
    codes pass both ways, and killing a process ends its WebSockets only."""
    command = f"{sys.executable} server.py"
    with serving(
        APPS / "generic_ws", "--app-start-command", command,
        "--min-instances", "2", "--max-pool-size", "2", wait_ready=2,
    ) as server:  # fmt: skip
        assert server.get("/") == (200, b"ok\n")  # plain HTTP to the same app
        pids = sorted(server.app_pids)
        sockets = [connect(_url(server, "/"), max_size=2**21) for _ in range(4)]
        try:
            owners = [int(ws.recv(timeout=10)) for ws in sockets]
            assert sorted(owners) == sorted(pids * 2)  # spread: two per process
            assert _sessions(server) == dict.fromkeys(pids, 2)  # each one a session
            ws = sockets[0]
            ws.send("héllo")
            assert ws.recv(timeout=10) == "héllo"
            big = os.urandom(1024 * 1024)
            ws.send(big)
            assert ws.recv(timeout=10) == big
            ws.send("close:4003")  # the server closes, with its code and reason
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert (ws.close_code, ws.close_reason) == (4003, "asked to")
            sockets[1].close(4002, "bye")  # the client closes, with its code
            assert sockets[1].close_code == 4002
            survivors = sockets[2:]
            assert wait_until(
                lambda: (
                    sorted(_sessions(server).values())
                    == sorted([owners[2:].count(pid) for pid in pids])
                ),
                timeout=10,
            ), _sessions(server)
            victim = owners[2]
            os.kill(victim, signal.SIGKILL)
            for ws, owner in zip(survivors, owners[2:], strict=True):
                if owner == victim:
                    with pytest.raises(ConnectionClosed):
                        ws.recv(timeout=10)
                else:
                    ws.send("still here")
                    assert ws.recv(timeout=10) == "still here"
            assert wait_until(lambda: not alive(victim), timeout=10)
            with connect(_url(server, "/")) as fresh:
                assert int(fresh.recv(timeout=10)) != victim
                fresh.send(b"new")
                assert fresh.recv(timeout=10) == b"new"
        finally:
            for ws in sockets:
                ws.close()
        assert wait_until(lambda: set(_sessions(server).values()) == {0}, timeout=10)


def test_a_tunnel_holds_each_side_back_instead_of_buffering() -> None:
    """Back-pressure both ways. The app offers 64 MiB to a client that reads nothing: its
    sends wait once the buffers on the way are full (a bound far below 64 MiB), the core
    keeps none of it, and when the client reads, every byte arrives. A client sends 128
    MiB to an app that reads nothing: the client is held back the same way."""
    import socket
    import struct
    import time

    mib = 1024 * 1024
    with serving(FASTAPI, "--min-instances", "1") as server:
        server.get("/flow")
        rss_before = server.rss_kb()
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(_HANDSHAKE.replace(b"/ws/echo", b"/ws/flood?n=64"))
            data = _read_until(sock, b"\r\n\r\n")
            head, _, frames = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
            time.sleep(1.5)  # reading nothing
            sent = json.loads(server.get("/flow")[1])["sent"]
            assert 1 <= sent <= 24, sent  # held back: the buffers on the way are full
            assert server.rss_kb() - rss_before < 24 * 1024, (rss_before, server.rss_kb())
            # 64 binary frames (10-byte heads), then the app's close frame (code 1000).
            expected = 64 * (mib + 10) + 4
            received, last = len(frames), frames[-4:]
            while received < expected and (chunk := sock.recv(1 << 20)):
                received, last = received + len(chunk), (last + chunk)[-4:]
            assert (received, last) == (expected, b"\x88\x02\x03\xe8")
            sock.sendall(b"\x88\x82\0\0\0\0\x03\xe8")  # the client's close, answering
            assert sock.recv(1) == b""  # then the end
        assert json.loads(server.get("/flow")[1])["sent"] == 64

        piece = 256 * 1024
        # A binary frame masked with the key 0 (a valid key: the payload goes as it is).
        frame = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", piece) + b"\0" * 4 + b"x" * piece
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(_HANDSHAKE.replace(b"/ws/echo", b"/ws/deaf?seconds=2"))
            head = _read_until(sock, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
            sock.settimeout(0.5)
            pushed = 0
            deadline = time.monotonic() + 10
            try:
                while pushed < 512 and time.monotonic() < deadline:
                    sock.sendall(frame)
                    pushed += 1
            except TimeoutError:
                pass  # held back
            assert pushed < 256, pushed  # less than 64 MiB of the 128 went anywhere
            assert server.rss_kb() - rss_before < 24 * 1024, (rss_before, server.rss_kb())
