"""Alert: a warning that may fire many times a second is logged once per interval, with a
count of what it summarises."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ferryman.alerts import Alert


def test_first_occurrence_is_logged_the_rest_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        alert = Alert("it happened %d more time(s)", interval=0.05)
        for n in range(5):
            alert.fire(loop.time(), "it happened (%s)", n)
        await asyncio.sleep(0.15)
        alert.fire(loop.time(), "it happened again (%s)", "late")
        alert.fire(loop.time(), "not logged on its own")
        alert.close()
        assert alert.total == 7
        return [r.getMessage() for r in caplog.records]

    with caplog.at_level(logging.WARNING, logger="ferryman"):
        messages = asyncio.run(scenario())
    assert messages == [
        "it happened (0)",
        "it happened 4 more time(s)",
        "it happened again (late)",
        "it happened 1 more time(s)",
    ]


def test_close_with_nothing_pending_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        alert = Alert("%d more")
        alert.fire(asyncio.get_running_loop().time(), "once")
        alert.close()

    with caplog.at_level(logging.WARNING, logger="ferryman"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == ["once"]
