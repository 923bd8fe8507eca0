"""Effects: what a pool transition asks its driver to do once the transition is over.

Transitions never call out mid-change (Passenger's "post-lock actions"): they
return these values, and the asyncio driver carries them out in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .group import Group, Waiter
    from .process import Process
    from .session import Session


class Reason(enum.Enum):
    """Why a request could not get a session."""

    QUEUE_FULL = "queue full"  # 503
    SPAWN_FAILED = "spawn failed"  # the app could not start: error page
    SHUTTING_DOWN = "shutting down"  # 503


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    #: For SPAWN_FAILED: the driver's error object (e.g. a SpawnError).
    error: Any = None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start one process for ``group``; report back with spawn_done or spawn_failed."""

    group: Group


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the OS process behind ``process`` (already detached from its group)."""

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


Effect = Spawn | Stop | Grant | Reject | Wake
