"""What the pool hands out and what it asks for.

A request that asks its group for capacity (``Group.checkout``) gets a ``Session``
(the right to send one request to one process, given back exactly once), a
``Waiter`` (its place in the queue) or ``Rejected``. Transitions never call out
mid-change (Passenger's "post-lock actions"): they return *effects*, and the
asyncio driver carries them out in order once the transition is over.

This module sits below ``group`` and ``pool``: what it needs of them is written
as Protocols (``SessionOwner``), so that the package's imports form no cycle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from .process import Process


class Reason(enum.Enum):
    """Why a request could not get a session."""

    QUEUE_FULL = "queue full"  # 503
    SPAWN_FAILED = "spawn failed"  # the app could not start: error page
    SHUTTING_DOWN = "shutting down"  # 503
    QUEUE_TIMEOUT = "queue timeout"  # 504: waited longer than max_queue_time


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    #: For SPAWN_FAILED: the driver's error (e.g. a SpawnError), when there is one.
    error: Exception | None = None


class Requester(Protocol):
    """The driver's side of a request that may wait: told once whether it got a session."""

    def granted(self, session: Session) -> None: ...

    def rejected(self, rejected: Rejected) -> None: ...


class SessionOwner(Protocol):
    """What a session needs of its group: to be given back."""

    def _session_closed(self, session: Session, now: float) -> list[Effect]: ...


class Session:
    """One request's hold on a unit of a process's capacity.

    ``close()`` returns the capacity to the group. It is idempotent, so every
    path (success, error, cancellation) may call it: only the first call counts.
    """

    __slots__ = ("_open", "group", "process")

    def __init__(self, group: SessionOwner, process: Process) -> None:
        self.group = group
        self.process = process
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def close(self, now: float) -> list[Effect]:
        if not self._open:
            return []
        self._open = False
        return self.group._session_closed(self, now)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Session pid={self.process.pid} {state}>"


class Waiter:
    """A request waiting in a group's queue (or for one process: ``sticky``)."""

    __slots__ = ("enqueued_at", "sticky", "token", "waiting")

    def __init__(self, token: Requester, now: float, sticky: int = 0) -> None:
        self.token = token
        self.enqueued_at = now
        #: True while in the queue; False once granted, rejected or cancelled.
        self.waiting = True
        #: The sticky id (Process.seq) of the process it waits for; 0: any process.
        self.sticky = sticky


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start one process for the group named ``group``; report back to that group with
    spawn_done or spawn_failed."""

    group: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the OS process behind ``process`` (already detached from its group)."""

    process: Process


@dataclass(frozen=True, slots=True)
class Kill:
    """Kill the OS process behind ``process`` now, busy or not (already detached): it
    hung (--max-request-time). The driver first asks it for its threads' stacks, so the
    log shows where it hung; its open sessions end with it."""

    process: Process


@dataclass(frozen=True, slots=True)
class Grant:
    """Hand ``session`` to the request waiting as ``waiter``."""

    waiter: Waiter
    session: Session


@dataclass(frozen=True, slots=True)
class Reject:
    """Tell the request waiting as ``waiter`` that it will not get a session."""

    waiter: Waiter
    rejected: Rejected


@dataclass(frozen=True, slots=True)
class Wake:
    """Call ``Pool.tick(now)`` at time ``at`` (e.g. when a spawn back-off ends)."""

    at: float


Effect = Spawn | Stop | Kill | Grant | Reject | Wake
