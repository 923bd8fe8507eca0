"""Alerts: operator warnings that can fire many times a second, logged without flooding.

A full request queue, a full body spool or a process out of file descriptors can
happen on every request. An ``Alert`` logs the first occurrence at once, counts
the ones that follow, and logs one summary line with their number when the quiet
interval ends — so the log says how often it happened, not only that it did.
``total`` counts every occurrence since start (for status and metrics).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("ferryman")

#: Seconds between two log lines of the same alert.
ALERT_INTERVAL = 10.0


class Alert:
    """One kind of warning. ``fire()`` where it happens; ``close()`` on shutdown."""

    def __init__(self, summary: str, interval: float = ALERT_INTERVAL) -> None:
        #: Logged with the number of occurrences since the last line, e.g.
        #: "answered 503 to %d more request(s) because the queue was full".
        self.summary = summary
        self.interval = interval
        self.total = 0
        self._pending = 0
        self._quiet_until = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def fire(self, now: float, message: str, *args: object) -> None:
        """One occurrence at loop time ``now``: ``message % args`` is logged unless another
        line of this alert was logged less than ``interval`` ago; then it is counted for
        the summary logged when the interval ends."""
        self.total += 1
        if now >= self._quiet_until:
            log.warning(message, *args)
            self._quiet_until = now + self.interval
            return
        self._pending += 1
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(self._quiet_until, self._summarise)

    def _summarise(self) -> None:
        self._timer = None
        if self._pending:
            log.warning(self.summary, self._pending)
            self._pending = 0
            self._quiet_until = asyncio.get_running_loop().time() + self.interval

    def close(self) -> None:
        """Log what is still pending and stop the timer (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            log.warning(self.summary, self._pending)
            self._pending = 0
