"""Pool: all groups, and the one limit they share (``max_size`` processes in all).

Sans-IO like the rest of ``pool/``: transitions take ``now`` and return effects.
When the pool is full and a group has demand, the idle process that was used
least recently in another group is retired to make room (Passenger's rule).
"""

from __future__ import annotations

from .effects import Effect
from .group import Group, GroupOptions
from .process import Process, RetireReason


class Pool:
    """Invariant: ``capacity_used() <= max_size`` (live processes plus spawns in flight),
    plus the batch of each group in a rolling restart (``Group.surge``)."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size
        self.groups: dict[str, Group] = {}
        self._seq = 0

    def add_group(self, name: str, options: GroupOptions) -> Group:
        if name in self.groups:
            raise ValueError(f"group {name!r} exists")
        group = Group(name, self, options)
        self.groups[name] = group
        return group

    def capacity_used(self) -> int:
        return sum(g.capacity_used() for g in self.groups.values())

    def is_full(self) -> bool:
        return self.capacity_used() >= self.max_size

    def allowed_capacity(self) -> int:
        """max_size, plus the surge of groups in a rolling restart (Pool.verify's bound)."""
        return self.max_size + sum(g.surge() for g in self.groups.values())

    def tick(self, now: float) -> list[Effect]:
        """Periodic/awaited check: retire idle processes, spawn what groups want now."""
        effects: list[Effect] = []
        for group in self.groups.values():
            group.expire_waiters(now, effects)
            group.note_healthy(now)
            group.retire_idle(now, effects)
            group._maybe_spawn(now, effects)
        return effects

    def drain(self) -> None:
        """The server begins to stop: requests in flight finish, no process is started
        any more (one that exits meanwhile, e.g. on its own SIGTERM, is not replaced, and
        requests that would wait for one are rejected at once)."""
        for group in self.groups.values():
            group.draining = True

    def shutdown(self) -> list[Effect]:
        effects: list[Effect] = []
        for group in self.groups.values():
            effects += group.shutdown()
        return effects

    def verify(self, now: float) -> None:
        used = self.capacity_used()
        # A rolling restart may hold its batch above max_size (the new ones start first).
        allowed = self.allowed_capacity()
        assert used <= allowed, f"pool over capacity: {used} > {allowed}"
        for group in self.groups.values():
            group.verify(now)
        pids = [p.pid for g in self.groups.values() for p in g.processes]
        assert len(pids) == len(set(pids)), "a pid is listed twice"

    # -- called by groups -----------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _make_room(self, group: Group, now: float, effects: list[Effect]) -> bool:
        """Whether ``group`` may spawn now; retires an idle process elsewhere if needed."""
        if not self.is_full():
            return True
        if len(self.groups) == 1 or not group.queue:
            # Only a request that waits takes another app's process. Topping up to
            # min_instances never does, nor does the spare process a group starts when
            # its processes are all busy: with several apps taking turns, that spare
            # would evict another app's only process, whose next request evicts back (a
            # spawn per request).
            return False
        victim = self._oldest_idle_process(exclude=group)
        if victim is None:
            return False
        victim_group = victim[0]
        victim_group._detach(victim[1], now, effects, RetireReason.LENT)
        return True

    def _oldest_idle_process(self, exclude: Group) -> tuple[Group, Process] | None:
        best: tuple[Group, Process] | None = None
        for group in self.groups.values():
            if group is exclude:
                continue
            for process in group.processes:
                if process.is_idle() and (best is None or process.last_used < best[1].last_used):
                    best = (group, process)
        return best

    def _lend_idle_process(
        self, group: Group, process: Process, now: float, effects: list[Effect]
    ) -> None:
        """``process`` just went idle; if another group starves for capacity, give it up."""
        if len(self.groups) == 1 or not self.is_full():
            return
        for other in self.groups.values():
            if other is not group and other.queue and other.wants_process(now):
                group._detach(process, now, effects, RetireReason.LENT)
                other._maybe_spawn(now, effects)
                return

    def _after_capacity_change(
        self, now: float, effects: list[Effect], exclude: Group | None = None
    ) -> None:
        """Capacity was freed: groups that wanted a process may spawn now."""
        for group in self.groups.values():
            if group is not exclude:
                group._maybe_spawn(now, effects)
