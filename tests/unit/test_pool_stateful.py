"""Random sequences of pool events keep every invariant and never lose or double capacity."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ferryman.pool import (
    Enablement,
    Grant,
    Group,
    GroupOptions,
    Kill,
    Life,
    Pool,
    Process,
    Reason,
    Reject,
    Rejected,
    RetireReason,
    Session,
    Spawn,
    Stop,
    Waiter,
    Wake,
)
from ferryman.pool.effects import Effect


class Req:
    def granted(self, session: Session) -> None:
        pass

    def rejected(self, rejected: Rejected) -> None:
        pass


class PoolMachine(RuleBasedStateMachine):
    """Plays the driver: carries out effects exactly as the asyncio driver does."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.pool = Pool(max_size=3)
        self.groups = [
            self.pool.add_group(
                "a",
                GroupOptions(
                    min_instances=1,
                    max_queue_size=4,
                    spawn_backoff=1.0,
                    idle_time=3.0,
                    rolling_batch=2,
                ),
            ),
            self.pool.add_group(
                "b",
                GroupOptions(
                    min_instances=0,
                    max_instances=2,
                    soft_limit=2,
                    spawn_backoff=0.0,
                    idle_time=2.0,  # short: idle retirement happens within a run
                ),
            ),
        ]
        self.pending_spawns: set[str] = set()
        self.open: list[Session] = []
        self.closed: list[Session] = []
        self.waiting: list[tuple[Group, Waiter]] = []
        self.stopping: list[tuple[Group, Process]] = []
        self.next_pid = 100
        self.owner: dict[int, Group] = {}
        self.shut_down = False
        self.draining = False
        self.apply(self.pool.tick(self.now))

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Spawn(group=name):
                    assert name not in self.pending_spawns, "two spawns in flight"
                    self.pending_spawns.add(name)
                case Grant(waiter=waiter, session=session):
                    entry = next(e for e in self.waiting if e[1] is waiter)
                    self.waiting.remove(entry)
                    self.open.append(session)
                case Reject(waiter=waiter):
                    entry = next(e for e in self.waiting if e[1] is waiter)
                    self.waiting.remove(entry)
                case Stop(process=process):
                    assert process.enablement is Enablement.DETACHED
                    # Only shutdown stops busy processes (the front has waited for them).
                    assert self.shut_down or process.sessions == 0, "a busy process was stopped"
                    assert all(p is not process for _, p in self.stopping), "stopped twice"
                    self.stopping.append((self.owner[process.pid], process))
                case Kill(process=process):
                    # A hung process is killed busy or not, but once, and never after a Stop.
                    assert process.enablement is Enablement.DETACHED
                    assert all(p is not process for _, p in self.stopping), "killed twice"
                    self.stopping.append((self.owner[process.pid], process))
                case Wake():
                    pass

    def take(self, group: Group, outcome: Session | Waiter | Rejected) -> None:
        if isinstance(outcome, Session):
            self.open.append(outcome)
        elif isinstance(outcome, Waiter):
            self.waiting.append((group, outcome))

    @rule(g=st.integers(0, 1), sticky=st.integers(0, 12))
    def checkout(self, g: int, sticky: int) -> None:
        """sticky: 0 (any process), or a sticky id — of a live process, a dead one, or
        one never seen (ids are spawn order numbers)."""
        group = self.groups[g]
        outcome, effects = group.checkout(token=Req(), now=self.now, sticky=sticky)
        self.take(group, outcome)
        self.apply(effects)
        if isinstance(outcome, Session) and sticky:
            live = [p for p in group.processes if p.seq == sticky]
            assert not live or outcome.process is live[0], "a sticky request went elsewhere"

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 100), twice=st.booleans())
    def close_session(self, i: int, twice: bool) -> None:
        session = self.open.pop(i % len(self.open))
        self.apply(session.close(self.now))
        if twice:
            assert session.close(self.now) == []
        self.closed.append(session)

    @precondition(lambda self: self.closed)
    @rule(i=st.integers(0, 100))
    def close_again(self, i: int) -> None:
        assert self.closed[i % len(self.closed)].close(self.now) == []

    @precondition(lambda self: self.pending_spawns)
    @rule(
        data=st.data(),
        concurrency=st.sampled_from([0, 1, 2]),
        request_limit=st.sampled_from([0, 0, 1, 3]),
    )
    def spawn_done(self, data: Any, concurrency: int, request_limit: int) -> None:
        name = data.draw(st.sampled_from(sorted(self.pending_spawns)))
        self.pending_spawns.discard(name)
        group = self.pool.groups[name]
        self.next_pid += 1
        self.owner[self.next_pid] = group
        _, effects = group.spawn_done(self.next_pid, concurrency, self.now, request_limit)
        self.apply(effects)

    @precondition(lambda self: self.pending_spawns)
    @rule(data=st.data())
    def spawn_failed(self, data: Any) -> None:
        name = data.draw(st.sampled_from(sorted(self.pending_spawns)))
        self.pending_spawns.discard(name)
        self.apply(self.pool.groups[name].spawn_failed(RuntimeError("boom"), self.now))

    @precondition(lambda self: any(g.processes for g in self.groups))
    @rule(data=st.data())
    def process_dies(self, data: Any) -> None:
        live = [(g, p) for g in self.groups for p in g.processes]
        group, process = data.draw(st.sampled_from(live))
        self.apply(group.process_died(process, self.now))

    @precondition(lambda self: self.stopping)
    @rule(i=st.integers(0, 100))
    def stopped_process_exits(self, i: int) -> None:
        group, process = self.stopping.pop(i % len(self.stopping))
        assert process.life is Life.SHUTTING_DOWN
        self.apply(group.process_died(process, self.now))
        assert process.life.value == Life.DEAD.value

    @precondition(lambda self: any(g.processes for g in self.groups))
    @rule(data=st.data())
    def retire(self, data: Any) -> None:
        live = [(g, p) for g in self.groups for p in g.processes]
        group, process = data.draw(st.sampled_from(live))
        self.apply(group.detach(process, self.now, RetireReason.DETACHED))

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 100))
    def request_hangs(self, i: int) -> None:
        """A request ran past --max-request-time: its process is killed and replaced."""
        session = self.open[i % len(self.open)]
        group = self.owner[session.process.pid]
        self.apply(group.abandon(session.process, self.now, RetireReason.MAX_REQUEST_TIME))

    @rule(g=st.integers(0, 1), rolling=st.sampled_from([None, True, False]))
    def restart(self, g: int, rolling: bool | None) -> None:
        self.apply(self.groups[g].restart(self.now, rolling))

    @precondition(lambda self: self.waiting)
    @rule(i=st.integers(0, 100))
    def client_goes_away(self, i: int) -> None:
        group, waiter = self.waiting.pop(i % len(self.waiting))
        group.cancel(waiter)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 5.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.apply(self.pool.tick(self.now))

    @precondition(lambda self: not self.shut_down and not self.draining)
    @rule()
    def drain(self) -> None:
        """The server begins to stop: requests in flight finish, nothing new starts (its
        processes may still stop by themselves, e.g. on their own SIGTERM, or die)."""
        self.draining = True
        self.pool.drain()

    @precondition(lambda self: not self.shut_down)
    @rule()
    def shutdown(self) -> None:
        """Shutdown stops every process, busy or not, and rejects every waiter; later
        requests are rejected, later spawns report back harmlessly."""
        self.shut_down = True
        self.apply(self.pool.shutdown())
        assert not self.waiting
        assert all(not g.processes and not g.retiring and not g.queue for g in self.groups)
        for group in self.groups:
            outcome, effects = group.checkout(Req(), self.now)
            assert outcome == Rejected(Reason.SHUTTING_DOWN)
            assert effects == []

    @invariant()
    def pool_invariants_hold(self) -> None:
        self.pool.verify(self.now)

    @invariant()
    def sessions_match_the_open_ones(self) -> None:
        """Each process's session count equals the sessions the driver holds on it."""
        for group in self.groups:
            for process in group.processes:
                held = sum(1 for s in self.open if s.process is process)
                assert process.sessions == held, (process, held)

    @invariant()
    def spawns_in_flight_match(self) -> None:
        assert {g.name for g in self.groups if g.spawning} == self.pending_spawns

    @invariant()
    def waiters_match_the_queues(self) -> None:
        queued = {id(w) for g in self.groups for w in g.queue}
        queued |= {id(w) for g in self.groups for q in g.sticky_queues.values() for w in q}
        assert queued == {id(w) for _, w in self.waiting}


PoolMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestPoolMachine = PoolMachine.TestCase
