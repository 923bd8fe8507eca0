"""Session: the right to send one request to one process, given back exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .effects import Effect
    from .group import Group
    from .process import Process


class Session:
    """One request's hold on a unit of a process's capacity.

    ``close()`` returns the capacity to the group. It is idempotent, so every
    path (success, error, cancellation) may call it: only the first call counts.
    """

    __slots__ = ("_open", "group", "process")

    def __init__(self, group: Group, process: Process) -> None:
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
