"""Process: one app process as the pool sees it — its states, its counters, its busyness.

Pure data and arithmetic: no I/O, no clock reads. The OS-level side of a process
(the child, its pipes, the connections to it) is kept by the driver, keyed by the
``Process`` (identity: ``eq=False``); the pool never sees it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Life(enum.Enum):
    """Whether the OS process exists."""

    ALIVE = "alive"
    SHUTTING_DOWN = "shutting down"  # told to stop; its OS process has not exited yet
    DEAD = "dead"  # exited and reaped


class Enablement(enum.Enum):
    """Whether the router may send new sessions to the process."""

    ENABLED = "enabled"  # routable
    DETACHED = "detached"  # removed from its group for good (retired, stopped or died)


class SpawnReason:
    """Why a process is started (shown by ``ferryman status``, counted in metrics)."""

    MIN_INSTANCES: Final = "min_instances"  # topping up to the minimum
    QUEUE: Final = "queued requests"  # requests wait for capacity
    BUSY: Final = "all processes busy"  # every process is totally busy
    RESTART: Final = "restart"  # replacing the processes of a restart
    RECYCLE: Final = "recycling"  # replacing a process that reached a limit


class RetireReason:
    """Why a process leaves routing (its OS process is stopped once idle)."""

    IDLE: Final = "idle"  # above min_instances and unused for pool_idle_time
    RESTART: Final = "restart"
    DETACHED: Final = "detached"  # by an operator (ferryman detach-process)
    UNREACHABLE: Final = "unreachable"  # its socket refused connections
    LENT: Final = "capacity for another app"  # the pool was full and another app needed room
    DIED: Final = "died"  # exited on its own (crashed, killed)
    MAX_REQUESTS: Final = "max_requests"  # served its --max-requests (recycled)
    MEMORY_LIMIT: Final = "memory_limit"  # grew above --memory-limit (recycled)
    MAX_REQUEST_TIME: Final = "max_request_time"  # a request hung: killed and replaced


@dataclass(eq=False, slots=True)
class Process:
    """An app process in a group.

    Invariants (checked by ``Group.verify``):
    * ``sessions >= 0`` and ``processed >= 0``.
    * An enabled process is alive, and when ``limit > 0`` it has ``sessions <= limit``.
    """

    pid: int
    #: Concurrency declared by the loader: a positive limit, or 0 for unlimited.
    concurrency: int
    #: Sessions at which the process counts as totally busy: ``concurrency``, or the
    #: operator's soft cap for unlimited apps, or 0 (never totally busy).
    limit: int
    #: Spawn order within the pool; the routing tie-break prefers the lowest.
    seq: int
    spawned_at: float
    last_used: float
    life: Life = Life.ALIVE
    enablement: Enablement = Enablement.ENABLED
    #: Sessions open now.
    sessions: int = 0
    #: Sessions closed so far (requests done).
    processed: int = 0
    #: Why it was started (a SpawnReason value), and why it left routing, once it has.
    spawn_reason: str = ""
    retire_reason: str = ""
    #: Requests after which it is replaced (--max-requests, with its jitter); 0 = never.
    request_limit: int = 0

    def busyness(self) -> float:
        """Lower is less busy: utilisation for limited processes, open sessions otherwise.

        Never "0 if idle else 1": that scoring ties every busy unlimited process
        and makes requests stick to the first one while the others idle.
        """
        if self.limit:
            return self.sessions / self.limit
        return float(self.sessions)

    def totally_busy(self) -> bool:
        return self.limit > 0 and self.sessions >= self.limit

    def is_idle(self) -> bool:
        return self.sessions == 0
