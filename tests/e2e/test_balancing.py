"""Load balancing across processes: least-busy routing, the queue and its bound."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from .harness import GATE_APP, Gates, Request, serving, wait_until


def test_slow_requests_spread_queue_and_overflow(tmp_path: Path) -> None:
    """Four single-threaded processes take four requests; two more wait; the next gets 503."""
    gates = Gates(tmp_path)
    Request.finished = []
    with serving(
        GATE_APP,
        "--min-instances", "4",
        "--max-pool-size", "4",
        "--thread-count", "1",
        "--max-request-queue-size", "2",
        wait_ready=4,
    ) as server:  # fmt: skip
        mark = server.mark()
        slow = [Request(server, f"/wait?gate={gates.path(f'g{i}')}") for i in range(4)]
        pids = {}
        for _ in range(4):
            match = server.wait_for_log(r"waiting (g\d) (\d+)", start=mark)
            pids[match.group(1)] = int(match.group(2))
            mark = server.lines.index(match.string) + 1
        # Four requests in flight land on four different processes.
        assert len(set(pids.values())) == 4, pids

        # Three more arrive while all four processes are busy: two wait, one is refused.
        extra = {name: Request(server, f"/wait?gate={gates.path(name)}") for name in "xyz"}
        assert wait_until(lambda: any(r.done for r in extra.values()), timeout=10)
        refused = [r for r in extra.values() if r.done]
        assert [r.status for r in refused] == [503]
        assert b"queue" in refused[0].body
        server.wait_for_log(r"request queue of \S+ is full \(max_request_queue_size 2\)")
        # ... at once: no slow request has finished, and nothing was served from the queue.
        assert not any(r.done for r in slow)
        queued = [name for name, r in extra.items() if not r.done]
        assert len(queued) == 2
        assert not any(re.search(r"waiting [xyz]", line) for line in server.lines)

        # When one process frees up, the request at the head of the queue gets it.
        mark = server.mark()
        gates.open("g0")
        match = server.wait_for_log(r"waiting ([xyz]) (\d+)", start=mark)
        assert match.group(1) in queued
        assert int(match.group(2)) == pids["g0"]
        assert not any(r.done for r in slow[1:])

        for name in ["g1", "g2", "g3", *queued]:
            gates.open(name)
        for r in slow + [extra[name] for name in queued]:
            r.join(30)
            assert r.status == 200


def test_a_process_stays_busy_until_the_app_finishes_an_abandoned_request(
    tmp_path: Path,
) -> None:
    """When a client leaves mid-request, its process counts as busy until the app is done."""
    gates = Gates(tmp_path)
    with serving(
        GATE_APP, "--min-instances", "2", "--max-pool-size", "2", "--thread-count", "1",
        wait_ready=2,
    ) as server:  # fmt: skip
        mark = server.mark()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET /wait?gate={gates.path('g')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            busy = int(server.wait_for_log(r"waiting g (\d+)", start=mark).group(1))
        # The client is gone but the app still works on the request: the next request must
        # go to the other process, not queue behind the abandoned one.
        status, body = server.get("/pid", timeout=10)
        assert status == 200
        assert int(body) != busy
        gates.open("g")
        # Once the app answers, the abandoned request is logged as 499 (client closed).
        server.wait_for_log(r'"GET /wait\?gate=\S+ HTTP/1.1" 499 ')
        status, body = server.get("/pid", timeout=10)
        assert status == 200


def test_the_pool_shrinks_back_after_a_burst(tmp_path: Path) -> None:
    """Processes started for a burst stop after pool_idle_time; min_instances stay."""
    gates = Gates(tmp_path)
    with serving(
        GATE_APP, "--min-instances", "1", "--max-pool-size", "3", "--thread-count", "1",
        "--pool-idle-time", "1",
    ) as server:  # fmt: skip
        burst = [Request(server, f"/wait?gate={gates.path('g')}") for _ in range(3)]
        assert wait_until(lambda: len(server.children()) == 3, timeout=20)
        gates.open("g")
        for r in burst:
            r.join(30)
        assert [r.status for r in burst] == [200] * 3
        assert wait_until(lambda: len(server.children()) == 1, timeout=15)
        server.wait_for_log(r"App \d+ stopped")
        assert server.get("/pid")[0] == 200
