"""The smallest end-to-end story: start the server, get a page, stop it cleanly."""

from __future__ import annotations

import signal

from .harness import STUB, serving


def test_start_serve_and_stop() -> None:
    with serving(STUB) as server:
        status, body = server.get("/")
        assert status == 200
        assert body == b"Hello from Ferryman's stub app\n"
        assert server.stop(signal.SIGTERM) == 0
        assert server.instance_dirs() == []
