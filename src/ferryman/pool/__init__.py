"""The sans-IO pool: Pool → Group → Process → Session, and the effects transitions return."""

from .effects import Effect, Grant, Reason, Reject, Rejected, Spawn, Stop, Wake
from .group import Group, GroupOptions, Waiter
from .pool import Pool
from .process import Enablement, Life, Process
from .session import Session

__all__ = [
    "Effect",
    "Enablement",
    "Grant",
    "Group",
    "GroupOptions",
    "Life",
    "Pool",
    "Process",
    "Reason",
    "Reject",
    "Rejected",
    "Session",
    "Spawn",
    "Stop",
    "Waiter",
    "Wake",
]
