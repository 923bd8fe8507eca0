"""The sans-IO pool: Pool → Group → Process → Session, and the effects transitions return."""

from .effects import (
    Effect,
    Grant,
    Kill,
    Reason,
    Reject,
    Rejected,
    Requester,
    Session,
    Spawn,
    Stop,
    Waiter,
    Wake,
)
from .group import Group, GroupOptions
from .pool import Pool
from .process import Enablement, Life, Process, RetireReason, SpawnReason

__all__ = [
    "Effect",
    "Enablement",
    "Grant",
    "Group",
    "GroupOptions",
    "Kill",
    "Life",
    "Pool",
    "Process",
    "Reason",
    "Reject",
    "Rejected",
    "Requester",
    "RetireReason",
    "Session",
    "Spawn",
    "SpawnReason",
    "Stop",
    "Waiter",
    "Wake",
]
