"""The pool's rules, stated in plain words and checked without processes or an event loop."""

from __future__ import annotations

from typing import Any

import pytest

from ferryman.pool import (
    Grant,
    Group,
    GroupOptions,
    Kill,
    Pool,
    Process,
    Reason,
    Reject,
    Rejected,
    RetireReason,
    Session,
    Spawn,
    SpawnReason,
    Stop,
    Waiter,
    Wake,
)
from ferryman.pool.effects import Effect

BOOM = RuntimeError("boom")
CRASHED = RuntimeError("it crashed")


class Req:
    """A request as the pool sees it (a Requester): only its identity matters here."""

    def __init__(self, name: object = None) -> None:
        self.name = name

    def granted(self, session: Session) -> None:
        pass

    def rejected(self, rejected: Rejected) -> None:
        pass


def make_process(
    concurrency: int, sessions: int, limit: int | None = None, seq: int = 1
) -> Process:
    return Process(
        pid=1000 + seq,
        concurrency=concurrency,
        limit=concurrency if limit is None else limit,
        seq=seq,
        spawned_at=0.0,
        last_used=0.0,
        sessions=sessions,
    )


# -- busyness ------------------------------------------------------------------------

BUSYNESS_CASES = [
    # (concurrency, soft limit, sessions, busyness, totally busy)
    (1, None, 0, 0.0, False),
    (1, None, 1, 1.0, True),
    (4, None, 0, 0.0, False),
    (4, None, 1, 0.25, False),
    (4, None, 2, 0.5, False),
    (4, None, 4, 1.0, True),
    # Unlimited concurrency: busyness is the number of open sessions, never 0/1.
    (0, None, 0, 0.0, False),
    (0, None, 1, 1.0, False),
    (0, None, 2, 2.0, False),
    (0, None, 16, 16.0, False),
    # Unlimited with an operator's soft cap: totally busy at the cap.
    (0, 8, 7, 7 / 8, False),
    (0, 8, 8, 1.0, True),
]


@pytest.mark.parametrize(("concurrency", "soft", "sessions", "busyness", "full"), BUSYNESS_CASES)
def test_busyness_table(
    concurrency: int, soft: int | None, sessions: int, busyness: float, full: bool
) -> None:
    """Busyness is utilisation for limited processes and open sessions for unlimited ones."""
    p = make_process(concurrency, sessions, limit=soft if soft is not None else concurrency)
    assert p.busyness() == pytest.approx(busyness)
    assert p.totally_busy() is full


def test_unlimited_busyness_grows_with_each_session() -> None:
    """Regression guard for Passenger's old '0 if idle else 1' scoring of unlimited processes."""
    one = make_process(0, 1)
    two = make_process(0, 2)
    assert one.busyness() < two.busyness()


# -- helpers -----------------------------------------------------------------------------


def pool_with(*, max_size: int = 6, **options: Any) -> tuple[Pool, Group]:
    pool = Pool(max_size)
    group = pool.add_group("app", GroupOptions(**options))
    return pool, group


def bring_up(group: Group, concurrency: int, count: int, now: float = 0.0) -> list[Process]:
    """Spawn ``count`` processes into ``group`` as the driver would."""
    made = []
    for _ in range(count):
        if not group.spawning:
            group.spawning = True
        process, _ = group.spawn_done(
            pid=100 + len(group.processes), concurrency=concurrency, now=now
        )
        made.append(process)
    return made


def sessions_of(outcome: Session | Waiter | Rejected) -> Session:
    assert isinstance(outcome, Session), outcome
    return outcome


# -- routing -----------------------------------------------------------------------------

ROUTING_CASES = [
    # (concurrency, sessions per process, index chosen)
    (1, [1, 0, 0], 1),  # first idle process
    (1, [0, 0, 0], 0),  # ties → spawned first
    (4, [2, 1, 3], 1),  # lowest utilisation
    (4, [1, 1, 0], 2),
    (4, [4, 3, 4], 1),  # totally busy processes are skipped
    (0, [3, 1, 2], 1),  # unlimited: fewest open sessions
    (0, [2, 2, 1], 2),  # the 0/1 scoring would pick index 0 here
    (0, [1, 1, 1], 0),  # ties → spawned first
]


@pytest.mark.parametrize(("concurrency", "sessions", "chosen"), ROUTING_CASES)
def test_routing_table(concurrency: int, sessions: list[int], chosen: int) -> None:
    """A request goes to the least-busy process with room; ties go to the process spawned first."""
    pool, group = pool_with(min_instances=len(sessions), max_queue_size=0)
    processes = bring_up(group, concurrency, len(sessions))
    for process, n in zip(processes, sessions, strict=True):
        process.sessions = n
    outcome, _ = group.checkout(token=Req(), now=1.0)
    assert sessions_of(outcome).process is processes[chosen]
    pool.verify(1.0)


def test_sessions_spread_evenly_over_unlimited_processes() -> None:
    """64 concurrent requests over 4 unlimited processes give each exactly 16 sessions."""
    pool, group = pool_with(min_instances=4)
    processes = bring_up(group, 0, 4)
    for _ in range(64):
        sessions_of(group.checkout(Req(), 1.0)[0])
    assert [p.sessions for p in processes] == [16, 16, 16, 16]


# -- queue ---------------------------------------------------------------------------------


def test_full_queue_rejects_at_once() -> None:
    """With all processes busy and the queue at its bound, the next request is rejected (503)."""
    pool, group = pool_with(min_instances=4, max_instances=4, max_queue_size=2)
    bring_up(group, 1, 4)
    outcomes = [group.checkout(Req(i), 1.0)[0] for i in range(7)]
    assert all(isinstance(o, Session) for o in outcomes[:4])
    assert all(isinstance(o, Waiter) for o in outcomes[4:6])
    assert outcomes[6] == Rejected(Reason.QUEUE_FULL)
    pool.verify(1.0)


def test_unbounded_queue_never_rejects() -> None:
    pool, group = pool_with(min_instances=1, max_instances=1, max_queue_size=0)
    bring_up(group, 1, 1)
    outcomes = [group.checkout(Req(i), 1.0)[0] for i in range(500)]
    assert sum(isinstance(o, Waiter) for o in outcomes) == 499


def test_closing_a_session_serves_the_queue_in_order() -> None:
    """Freed capacity goes to the request that has waited longest."""
    pool, group = pool_with(min_instances=1, max_instances=1)
    bring_up(group, 1, 1)
    first = sessions_of(group.checkout(Req("a"), 1.0)[0])
    w1 = group.checkout(Req("b"), 1.0)[0]
    w2 = group.checkout(Req("c"), 1.0)[0]
    effects = first.close(2.0)
    grants = [e for e in effects if isinstance(e, Grant)]
    assert [g.waiter for g in grants] == [w1]
    assert list(group.queue) == [w2]
    pool.verify(2.0)


def test_a_new_request_never_overtakes_a_queued_one() -> None:
    """Even if a process has room by the time it arrives, a queued request goes first."""
    pool, group = pool_with(min_instances=1, max_instances=1)
    bring_up(group, 1, 1)
    busy = sessions_of(group.checkout(Req("a"), 1.0)[0])
    waiter = group.checkout(Req("b"), 1.0)[0]
    assert isinstance(waiter, Waiter)
    effects = busy.close(2.0)
    assert any(isinstance(e, Grant) and e.waiter is waiter for e in effects)
    late = group.checkout(Req("c"), 2.0)[0]
    assert isinstance(late, Waiter)


def test_session_gives_capacity_back_exactly_once() -> None:
    pool, group = pool_with(min_instances=1)
    (process,) = bring_up(group, 2, 1)
    session = sessions_of(group.checkout(Req(), 1.0)[0])
    session.close(2.0)
    session.close(3.0)
    assert process.sessions == 0
    assert process.processed == 1


def test_cancelled_waiter_leaves_the_queue() -> None:
    pool, group = pool_with(min_instances=1, max_instances=1)
    bring_up(group, 1, 1)
    busy = sessions_of(group.checkout(Req("a"), 1.0)[0])
    waiter = group.checkout(Req("b"), 1.0)[0]
    assert isinstance(waiter, Waiter)
    group.cancel(waiter)
    group.cancel(waiter)  # twice is harmless
    assert not group.queue
    assert not [e for e in busy.close(2.0) if isinstance(e, Grant)]
    pool.verify(2.0)


# -- spawning ------------------------------------------------------------------------------


def test_checkout_on_an_empty_group_queues_and_spawns() -> None:
    pool, group = pool_with(min_instances=0)
    waiter, effects = group.checkout(Req("a"), 0.0)
    assert isinstance(waiter, Waiter)
    assert effects == [Spawn(group.name)]
    _, effects = group.spawn_done(pid=7, concurrency=1, now=1.0)
    # The waiter gets the new process, which is then totally busy: spawn one more.
    assert [type(e) for e in effects] == [Grant, Spawn]
    pool.verify(1.0)


def test_spawns_more_when_all_processes_are_totally_busy() -> None:
    pool, group = pool_with(min_instances=1, max_instances=3)
    bring_up(group, 1, 1)
    _, effects = group.checkout(Req("a"), 0.0)
    assert Spawn(group.name) in effects


def test_only_one_spawn_in_flight_per_group() -> None:
    pool, group = pool_with(min_instances=0)
    _, first = group.checkout(Req("a"), 0.0)
    _, second = group.checkout(Req("b"), 0.0)
    assert first == [Spawn(group.name)]
    assert second == []


def test_max_instances_caps_the_group() -> None:
    pool, group = pool_with(min_instances=2, max_instances=2)
    bring_up(group, 1, 2)
    group.checkout(Req("a"), 0.0)
    _, effects = group.checkout(Req("b"), 0.0)
    assert not any(isinstance(e, Spawn) for e in effects)


def test_unlimited_processes_do_not_scale_without_a_soft_limit() -> None:
    pool, group = pool_with(min_instances=1)
    bring_up(group, 0, 1)
    for i in range(50):
        _, effects = group.checkout(Req(i), 0.0)
        assert not effects


def test_soft_limit_makes_unlimited_processes_scale() -> None:
    pool, group = pool_with(min_instances=1, soft_limit=8, max_instances=4)
    bring_up(group, 0, 1)
    spawned = 0
    for i in range(32):
        outcome, effects = group.checkout(Req(i), 0.0)
        for e in effects:
            if isinstance(e, Spawn):
                spawned += 1
                group.spawn_done(pid=500 + spawned, concurrency=0, now=0.0)
    assert len(group.processes) == 4
    assert [p.sessions for p in group.processes] == [8, 8, 8, 8]
    pool.verify(0.0)


def test_failed_spawn_rejects_waiters_and_backs_off() -> None:
    """A failed spawn tells every waiter why; requests during the back-off fail at once."""
    pool, group = pool_with(min_instances=1, spawn_backoff=2.0)
    w1, effects = group.checkout(Req("a"), 0.0)
    w2, _ = group.checkout(Req("b"), 0.0)
    assert effects == [Spawn(group.name)]
    effects = group.spawn_failed(BOOM, 1.0)
    rejects = [e for e in effects if isinstance(e, Reject)]
    assert [r.waiter for r in rejects] == [w1, w2]
    assert all(r.rejected == Rejected(Reason.SPAWN_FAILED, BOOM) for r in rejects)
    assert Wake(3.0) in effects
    outcome, effects = group.checkout(Req("c"), 2.0)
    assert outcome == Rejected(Reason.SPAWN_FAILED, BOOM)
    assert not effects
    # When the back-off is over, the wake-up spawns again.
    assert pool.tick(3.0) == [Spawn(group.name)]
    pool.verify(3.0)


def test_backoff_doubles_and_is_capped() -> None:
    pool, group = pool_with(min_instances=1, spawn_backoff=1.0, spawn_backoff_cap=5.0)
    waits = []
    now = 0.0
    for _ in range(5):
        group.spawning = True
        effects = group.spawn_failed(BOOM, now)
        (wake,) = [e for e in effects if isinstance(e, Wake)]
        waits.append(wake.at - now)
        now = wake.at
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_zero_backoff_never_respawns_by_itself() -> None:
    """With no back-off a broken app is retried per request, not in a loop."""
    pool, group = pool_with(min_instances=1, spawn_backoff=0.0)
    group.spawning = True
    effects = group.spawn_failed(BOOM, 0.0)
    assert not any(isinstance(e, Spawn | Wake) for e in effects)
    _, effects = group.checkout(Req("a"), 0.0)
    assert effects == [Spawn(group.name)]


def test_a_dead_process_is_detached_and_replaced() -> None:
    pool, group = pool_with(min_instances=2)
    a, b = bring_up(group, 1, 2)
    session = sessions_of(group.checkout(Req("x"), 0.0)[0])
    assert session.process is a
    effects = group.process_died(a, 10.0)
    assert a not in group.processes
    assert Spawn(group.name) in effects
    session.close(11.0)  # closing a session of a dead process changes nothing else
    assert b.sessions == 0
    pool.verify(11.0)


def test_a_process_dying_right_after_it_started_is_a_crash_loop() -> None:
    """A death within early_death of becoming ready backs off like a failed spawn."""
    pool, group = pool_with(min_instances=1, spawn_backoff=3.0, early_death=2.0)
    (a,) = bring_up(group, 1, 1, now=100.0)
    effects = group.process_died(a, 101.0, CRASHED)
    assert effects == [Wake(104.0)]
    assert group.last_error == CRASHED
    # Requests meanwhile get the error at once; no spawn until the back-off is over.
    assert group.checkout(Req("r"), 102.0)[0] == Rejected(Reason.SPAWN_FAILED, CRASHED)
    assert pool.tick(104.0) == [Spawn(group.name)]
    pool.verify(104.0)


def test_a_young_process_that_stopped_in_order_is_replaced_at_once() -> None:
    """A loader stops in order on its own SIGTERM (systemd's control-group kill, an
    operator's kill): however young, that is no failed start: no back-off, no failure."""
    pool, group = pool_with(min_instances=1, spawn_backoff=3.0, early_death=2.0)
    (a,) = bring_up(group, 1, 1, now=100.0)
    effects = group.process_died(a, 100.5, orderly=True)
    assert effects == [Spawn(group.name)]
    assert (group.failures, group.backoff_until) == (0, 0.0)
    assert isinstance(group.checkout(Req("r"), 100.6)[0], Waiter)  # waits, not rejected
    pool.verify(100.6)


def test_a_crash_loop_backs_off_longer_each_time() -> None:
    """Ready, dead before serving, again and again: 1 s, 2 s, 4 s... between starts (a
    process becoming ready does not end the streak; it dies again at once)."""
    pool, group = pool_with(min_instances=1, spawn_backoff=1.0, early_death=2.0)
    now = 100.0
    waits = []
    for _ in range(4):
        group.spawning = True
        process, _ = group.spawn_done(pid=1000 + int(now), concurrency=1, now=now)
        now += 0.3
        effects = group.process_died(process, now, CRASHED)
        wake = next(e for e in effects if isinstance(e, Wake))
        waits.append(wake.at - now)
        now = wake.at
        assert pool.tick(now) == [Spawn(group.name)]
    assert waits == [1.0, 2.0, 4.0, 8.0]


def test_a_healthy_process_ends_the_streak() -> None:
    """After a crash loop, a process that serves a request (or lives past early_death)
    makes the next failure start from the first back-off again."""
    for healthy_by in ("serving", "living"):
        pool, group = pool_with(min_instances=1, spawn_backoff=1.0, early_death=2.0)
        group.failures = 5  # a long streak before
        (a,) = bring_up(group, 2, 1, now=100.0)
        if healthy_by == "serving":
            sessions_of(group.checkout(Req(), 100.1)[0]).close(100.2)
        else:
            pool.tick(103.0)
        assert group.failures == 0
        group.process_died(a, 110.0, CRASHED)
        group.spawning = True
        (b, _) = group.spawn_done(pid=2, concurrency=1, now=120.0)
        effects = group.process_died(b, 120.5, CRASHED)
        assert Wake(121.5) in effects


@pytest.mark.parametrize("how", ["while serving", "after serving"])
def test_a_process_dying_after_it_served_is_a_crash_not_a_failed_start(how: str) -> None:
    """A request killed it, the app is fine: replaced at once, no back-off, no error for
    the requests that follow."""
    pool, group = pool_with(min_instances=1, spawn_backoff=3.0, early_death=2.0)
    (a,) = bring_up(group, 2, 1, now=100.0)  # room for two: one request spawns nothing
    session = sessions_of(group.checkout(Req(), 100.5)[0])
    if how == "after serving":
        session.close(100.6)
    assert group.died_starting(a, 101.0) is False
    effects = group.process_died(a, 101.0, None)
    assert effects == [Spawn(group.name)]
    assert group.backoff_until == 0.0
    assert group.last_error is None
    session.close(101.5)  # its session ends later (the request got 502): changes nothing
    pool.verify(101.5)


# -- capacity across groups -------------------------------------------------------------------


def two_groups(max_size: int = 2) -> tuple[Pool, Group, Group]:
    pool = Pool(max_size)
    a = pool.add_group("a", GroupOptions(min_instances=1))
    b = pool.add_group("b", GroupOptions(min_instances=0))
    return pool, a, b


def test_a_full_pool_retires_the_oldest_idle_process_of_another_group() -> None:
    pool, a, b = two_groups(max_size=2)
    old, new = bring_up(a, 1, 2)
    a.processes[0].last_used = 1.0
    a.processes[1].last_used = 5.0
    waiter, effects = b.checkout(Req("req"), 10.0)
    assert isinstance(waiter, Waiter)
    assert effects == [Stop(old), Spawn(b.name)]
    assert a.processes == [new]
    pool.verify(10.0)


def test_topping_up_to_min_instances_never_evicts_another_group() -> None:
    pool = Pool(2)
    a = pool.add_group("a", GroupOptions(min_instances=2))
    bring_up(a, 1, 2)
    pool.add_group("b", GroupOptions(min_instances=1))
    assert pool.tick(0.0) == []
    assert len(a.processes) == 2


def test_a_busy_group_does_not_take_another_groups_process_for_a_spare() -> None:
    """A group whose processes are all busy starts a spare only if the pool has room:
    it takes another group's idle process only for a request that waits. Regression:
    three apps on a full pool, requests taking turns: each request evicted another app's
    only process (a spawn per request)."""
    pool, a, b = two_groups(max_size=2)
    bring_up(a, 1, 1)
    (other,) = bring_up(b, 1, 1)
    other.pid = 200  # bring_up numbers per group
    session = sessions_of(a.checkout(Req("1"), 0.0)[0])  # a's one process: totally busy
    assert a.wants_process(0.0)
    assert pool.tick(0.0) == []  # no spare at b's cost
    assert len(b.processes) == 1
    session.close(0.1)
    sessions_of(b.checkout(Req("2"), 0.2)[0]).close(0.3)
    assert pool.tick(0.3) == []
    pool.verify(0.3)


def test_a_full_pool_with_no_idle_process_makes_the_request_wait() -> None:
    """Busy processes are never evicted; the request waits until one goes idle."""
    pool, a, b = two_groups(max_size=2)
    bring_up(a, 1, 2)
    s1 = sessions_of(a.checkout(Req("1"), 0.0)[0])
    sessions_of(a.checkout(Req("2"), 0.0)[0])
    waiter, effects = b.checkout(Req("req"), 0.0)
    assert isinstance(waiter, Waiter)
    assert effects == []
    pool.verify(0.0)
    # When an A process goes idle, it is handed over to B.
    effects = s1.close(1.0)
    assert effects == [Stop(s1.process), Spawn(b.name)]
    pool.verify(1.0)


def test_pool_capacity_counts_spawns_in_flight() -> None:
    pool, a, b = two_groups(max_size=1)
    a.checkout(Req("x"), 0.0)  # spawning for a
    assert pool.is_full()
    _, effects = b.checkout(Req("y"), 0.0)
    assert effects == []  # nothing idle to retire; waits
    pool.verify(0.0)


# -- shutdown ------------------------------------------------------------------------------------


def test_shutdown_rejects_waiters_and_stops_every_process() -> None:
    pool, group = pool_with(min_instances=2, max_instances=2)
    a, b = bring_up(group, 1, 2)
    group.checkout(Req("1"), 0.0)
    group.checkout(Req("2"), 0.0)
    waiter, _ = group.checkout(Req("3"), 0.0)
    effects = pool.shutdown()
    assert Reject(waiter, Rejected(Reason.SHUTTING_DOWN)) in effects  # type: ignore[arg-type]
    assert Stop(a) in effects and Stop(b) in effects
    outcome, _ = group.checkout(Req("4"), 0.0)
    assert outcome == Rejected(Reason.SHUTTING_DOWN)


def effects_types(effects: list[Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


# -- retiring and restarting ---------------------------------------------------------------------


def test_a_retired_busy_process_is_stopped_only_after_its_last_session() -> None:
    """Retiring never cuts a request short: the Stop comes when the last session closes."""
    pool, group = pool_with(min_instances=1, max_instances=1)
    (process,) = bring_up(group, 2, 1)
    first = sessions_of(group.checkout(Req("a"), 0.0)[0])
    second = sessions_of(group.checkout(Req("b"), 0.0)[0])
    effects = group.detach(process, 1.0, RetireReason.DETACHED)
    assert Stop(process) not in effects
    assert group.retiring == [process]
    pool.verify(1.0)
    assert Stop(process) not in first.close(2.0)
    assert second.close(3.0) == [Stop(process)]
    assert group.retiring == []
    pool.verify(3.0)


def test_a_blocking_restart_retires_every_process_and_spawns_anew() -> None:
    """A blocking restart forgets past failures, retires current processes and starts a
    new one; requests wait for it."""
    pool, group = pool_with(min_instances=1, spawn_backoff=10.0)
    (old,) = bring_up(group, 1, 1)
    busy = sessions_of(group.checkout(Req("a"), 0.0)[0])
    group.spawning = False  # the pre-emptive spawn from that checkout is not under test
    group.failures, group.backoff_until = 3, 50.0
    effects = group.restart(1.0, rolling=False)
    assert effects == [Spawn(group.name)]
    assert group.processes == [] and group.retiring == [old]
    assert (group.failures, group.backoff_until) == (0, 0.0)
    waiter, _ = group.checkout(Req("b"), 1.0)
    assert isinstance(waiter, Waiter)  # requests wait for the new process, not the old one
    _, effects = group.spawn_done(pid=9, concurrency=1, now=2.0)
    assert any(isinstance(e, Grant) and e.waiter is waiter for e in effects)
    assert busy.close(3.0) == [Stop(old)]
    pool.verify(3.0)


def test_shutdown_stops_busy_and_retiring_processes_at_once() -> None:
    """At shutdown the front has already waited for requests: every process is stopped now."""
    pool, group = pool_with(min_instances=2, max_instances=2)
    a, b = bring_up(group, 1, 2)
    sessions_of(group.checkout(Req("1"), 0.0)[0])
    sessions_of(group.checkout(Req("2"), 0.0)[0])
    group.detach(a, 0.0, RetireReason.DETACHED)
    effects = pool.shutdown()
    assert sorted(e.process.pid for e in effects if isinstance(e, Stop)) == sorted([a.pid, b.pid])
    assert group.processes == [] and group.retiring == []


def test_sessions_closing_after_shutdown_change_nothing() -> None:
    """Shutdown stopped every process already: their last sessions closing stop nothing twice."""
    pool, group = pool_with(min_instances=1, max_instances=1)
    (process,) = bring_up(group, 2, 1)
    session = sessions_of(group.checkout(Req("a"), 0.0)[0])
    effects = pool.shutdown()
    assert effects == [Stop(process)]
    assert session.close(1.0) == []


# -- idle processes --------------------------------------------------------------------


def test_idle_processes_above_the_minimum_are_retired_least_recently_used_first() -> None:
    """After pool_idle_time without a request, extra processes stop, one per tick."""
    pool, group = pool_with(min_instances=1, idle_time=60.0)
    a, b, c = bring_up(group, 1, 3)
    a.last_used, b.last_used, c.last_used = 10.0, 5.0, 30.0
    assert pool.tick(66.0) == [Stop(b)]  # b idle 61 s, a 56 s: only b is due
    assert pool.tick(70.0) == [Stop(a)]
    assert pool.tick(200.0) == []  # c is the last one: min_instances stays
    assert group.processes == [c]
    pool.verify(200.0)


def test_busy_processes_are_never_retired() -> None:
    """A process with a session stays, however long ago it was last given one."""
    pool, group = pool_with(min_instances=0, idle_time=1.0)
    a, b, c = bring_up(group, 2, 3)
    sessions_of(group.checkout(Req("x"), 0.0)[0])  # a is busy, with room for one more
    assert pool.tick(100.0) == [Stop(b)]
    assert pool.tick(100.0) == [Stop(c)]
    assert pool.tick(200.0) == []
    assert group.processes == [a]


def test_an_idle_process_stays_if_the_others_are_full() -> None:
    """Retiring it would make every process full and spawn a new one at once: it stays."""
    pool, group = pool_with(min_instances=0, idle_time=1.0)
    a, b = bring_up(group, 1, 2)
    sessions_of(group.checkout(Req("x"), 0.0)[0])  # a is full
    assert pool.tick(100.0) == []
    assert group.processes == [a, b]


def test_an_idle_time_of_zero_never_retires() -> None:
    pool, group = pool_with(min_instances=0, idle_time=0.0)
    bring_up(group, 1, 2)
    assert pool.tick(10_000.0) == []


# -- why processes come and go (status and metrics) -----------------------------------------------


def test_each_process_knows_why_it_was_started() -> None:
    """min_instances, then requests that queue, then a restart: each spawn says which."""
    pool, group = pool_with(min_instances=1, max_instances=3)
    assert pool.tick(0.0) == [Spawn(group.name)]
    first, _ = group.spawn_done(pid=1, concurrency=1, now=0.0)
    assert first.spawn_reason == SpawnReason.MIN_INSTANCES
    sessions_of(group.checkout(Req("a"), 0.0)[0])  # the only process is now totally busy
    assert group.spawning and group.spawn_reason == SpawnReason.BUSY
    group.spawn_done(pid=2, concurrency=1, now=0.5)
    assert group.checkout(Req("b"), 1.0)[0].__class__ is Session
    assert group.spawning  # both processes are busy: one more is on its way
    waiter, _ = group.checkout(Req("c"), 1.0)
    assert isinstance(waiter, Waiter)
    third, _ = group.spawn_done(pid=3, concurrency=1, now=1.5)
    assert third.spawn_reason == SpawnReason.BUSY
    effects = group.restart(2.0, rolling=False)
    assert Spawn(group.name) in effects and group.spawn_reason == SpawnReason.RESTART
    new, _ = group.spawn_done(pid=4, concurrency=1, now=3.0)
    assert new.spawn_reason == SpawnReason.RESTART
    assert (group.spawns, group.restarts) == (4, 1)
    assert {first.retire_reason, third.retire_reason} == {RetireReason.RESTART}
    assert group.retired == {RetireReason.RESTART: 3}
    pool.verify(3.0)


def test_retirements_are_counted_by_reason_and_failures_are_counted() -> None:
    pool, group = pool_with(min_instances=0, max_instances=4, idle_time=10.0, spawn_backoff=0)
    a, b, c, _ = bring_up(group, 1, 4)
    group.detach(a, 1.0, RetireReason.DETACHED)
    group.process_died(b, 100.0)
    effects: list[Effect] = []
    group.retire_idle(100.0, effects)
    assert Stop(c) in effects
    assert (a.retire_reason, b.retire_reason, c.retire_reason) == (
        RetireReason.DETACHED,
        RetireReason.DIED,
        RetireReason.IDLE,
    )
    assert group.retired == {RetireReason.DETACHED: 1, RetireReason.DIED: 1, RetireReason.IDLE: 1}
    group.spawning = True
    group.spawn_failed(BOOM, 101.0)
    assert (group.spawns, group.spawn_failures) == (4, 1)


def test_sessions_opened_counts_every_session_handed_out() -> None:
    """At once or from the queue: the metrics derive the requests that never waited from it."""
    pool, group = pool_with(min_instances=1, max_instances=1)
    (process,) = bring_up(group, 1, 1)
    first = sessions_of(group.checkout(Req("a"), 0.0)[0])
    waiter, _ = group.checkout(Req("b"), 0.0)
    assert isinstance(waiter, Waiter) and group.sessions_opened == 1
    effects = first.close(1.0)
    assert any(isinstance(e, Grant) and e.waiter is waiter for e in effects)
    assert group.sessions_opened == 2
    pool.verify(1.0)


# -- rolling restarts and deployment errors --------------------------------------------------


def rolling_pool(**options: Any) -> tuple[Pool, Group, list[Process]]:
    """Two processes, the pool full: the case where a new process needs the surge."""
    pool, group = pool_with(max_size=2, min_instances=2, **options)
    return pool, group, bring_up(group, 1, 2)


def test_a_rolling_restart_replaces_one_process_at_a_time_and_never_queues() -> None:
    pool, group, (a, b) = rolling_pool()
    busy = sessions_of(group.checkout(Req("busy"), 0.0)[0])  # on a
    effects = group.restart(1.0)
    assert effects == [Spawn(group.name)]  # above max_size by the batch: the surge
    assert group.processes == [a, b] and group.outdated == [a, b]
    assert pool.capacity_used() == 3
    pool.verify(1.0)
    # Requests meanwhile go to the old processes, never to the queue.
    other = sessions_of(group.checkout(Req("meanwhile"), 1.5)[0])
    assert other.process is b
    # The first new process is ready: one old one stops taking requests (finishing its own).
    first, effects = group.spawn_done(pid=10, concurrency=1, now=2.0)
    assert group.processes == [b, first] and a in group.retiring
    assert Stop(a) not in effects and effects == [Spawn(group.name)]
    pool.verify(2.0)
    assert busy.close(2.5) == [Stop(a)]
    # The second: the last old one goes; the restart is over and the surge with it.
    second, effects = group.spawn_done(pid=11, concurrency=1, now=3.0)
    assert group.processes == [first, second] and group.outdated == []
    assert b in group.retiring and not group.spawning
    assert other.close(3.5) == [Stop(b)]
    assert pool.capacity_used() == 2 and group.surge() == 0
    assert group.retired == {RetireReason.RESTART: 2}
    pool.verify(3.5)


def test_a_rolling_restart_in_batches() -> None:
    pool, group = pool_with(max_size=4, min_instances=4, rolling_batch=2)
    old = bring_up(group, 1, 4)
    assert group.restart(0.0) == [Spawn(group.name)]
    group.spawn_done(pid=10, concurrency=1, now=1.0)
    assert group.outdated == old  # half a batch: nobody goes yet
    assert pool.capacity_used() == 6 and group.surge() == 2
    pool.verify(1.0)
    group.spawn_done(pid=11, concurrency=1, now=2.0)
    assert group.outdated == old[2:]  # a whole batch: two old ones go
    group.spawn_done(pid=12, concurrency=1, now=3.0)
    _, effects = group.spawn_done(pid=13, concurrency=1, now=4.0)
    assert [p.pid for p in group.processes] == [10, 11, 12, 13]
    assert [e.process for e in effects if isinstance(e, Stop)] == old[2:]
    pool.verify(4.0)


def test_a_new_version_that_cannot_start_leaves_the_old_one_serving() -> None:
    pool, group, (a, b) = rolling_pool()
    group.restart(1.0)
    effects = group.spawn_failed(BOOM, 2.0)
    assert group.processes == [a, b] and group.outdated == [] and group.retiring == []
    assert group.restart_error is BOOM
    assert not any(isinstance(e, (Stop, Reject)) for e in effects)
    assert isinstance(group.checkout(Req("after"), 2.5)[0], Session)
    pool.verify(2.5)
    # The next restart (a fixed deploy) tries again, and forgets the failure.
    assert group.restart(3.0) == [Spawn(group.name)]
    assert group.restart_error is None and group.failures == 0
    group.spawn_done(pid=10, concurrency=1, now=4.0)
    group.spawn_done(pid=11, concurrency=1, now=5.0)
    assert [p.pid for p in group.processes] == [10, 11]
    pool.verify(5.0)


def test_without_resistance_a_failed_rolling_restart_is_a_failed_restart() -> None:
    pool, group, (a, b) = rolling_pool(resist_deployment_errors=False)
    group.restart(1.0)
    effects = group.spawn_failed(BOOM, 2.0)
    assert group.processes == [] and {Stop(a), Stop(b)} <= set(effects)
    assert group.restart_error is None
    pool.verify(2.0)


@pytest.mark.parametrize("options", [{"min_instances": 0}, {"rolling_restarts": False}])
def test_restarts_that_block(options: dict[str, Any]) -> None:
    """min_instances = 0, or rolling restarts off: every process goes at once."""
    pool, group = pool_with(max_size=2, **options)
    old = bring_up(group, 1, 2)
    group.restart(1.0)
    assert group.processes == [] and group.outdated == []
    assert {p.retire_reason for p in old} == {RetireReason.RESTART}
    pool.verify(1.0)


def test_a_restart_during_a_rolling_restart_starts_over_from_what_serves() -> None:
    pool, group, (a, b) = rolling_pool()
    group.restart(1.0)
    first, _ = group.spawn_done(pid=10, concurrency=1, now=2.0)  # a is gone
    group.restart(2.5)  # another deploy: b and the new one are both outdated now
    assert group.outdated == [b, first] and group.spawning
    group.spawn_done(pid=11, concurrency=1, now=3.0)
    group.spawn_done(pid=12, concurrency=1, now=4.0)
    assert [p.pid for p in group.processes] == [11, 12]
    assert group.restarts == 2
    pool.verify(4.0)


def test_an_old_process_that_dies_during_a_rolling_restart_is_not_waited_for() -> None:
    pool, group, (a, b) = rolling_pool()
    group.restart(1.0)
    group.process_died(a, 1.5)
    assert group.outdated == [b]
    group.spawn_done(pid=10, concurrency=1, now=2.0)
    assert group.outdated == [] and [p.pid for p in group.processes] == [10]
    pool.verify(2.0)


# -- recycling after max_requests -------------------------------------------------------------


def test_a_process_at_its_request_limit_is_replaced_replacement_first() -> None:
    pool, group = pool_with(max_size=2, min_instances=2, max_requests=3)
    group.spawning = True
    a, _ = group.spawn_done(pid=1, concurrency=1, now=0.0, request_limit=3)
    b, _ = group.spawn_done(pid=2, concurrency=1, now=0.0, request_limit=5)
    effects: list[Effect] = []
    for i in range(3):
        session = sessions_of(group.checkout(Req(i), float(i))[0])
        assert session.process is a  # the least busy, and the oldest on ties
        effects = session.close(float(i) + 0.5)
    assert effects == [Spawn(group.name)] and group.outdated == [a]
    assert group.spawn_reason == SpawnReason.RECYCLE
    pool.verify(3.0)
    # Until its replacement is ready, it still serves.
    assert sessions_of(group.checkout(Req("more"), 3.0)[0]).process is a
    new, effects = group.spawn_done(pid=3, concurrency=1, now=4.0, request_limit=3)
    assert a.retire_reason == RetireReason.MAX_REQUESTS and a in group.retiring
    assert group.processes == [b, new] and new.spawn_reason == SpawnReason.RECYCLE
    assert group.retired == {RetireReason.MAX_REQUESTS: 1}
    pool.verify(4.0)


def test_a_replacement_that_cannot_start_leaves_the_process_serving() -> None:
    pool, group = pool_with(max_size=1, min_instances=1, spawn_backoff=5.0)
    group.spawning = True
    a, _ = group.spawn_done(pid=1, concurrency=1, now=0.0, request_limit=1)
    sessions_of(group.checkout(Req("x"), 0.0)[0]).close(0.5)
    assert group.outdated == [a] and group.spawning
    group.spawn_failed(BOOM, 1.0)
    assert group.processes == [a] and group.outdated == [] and group.restart_error is None
    # During the back-off, requests go on being served by it, no new try.
    assert sessions_of(group.checkout(Req("y"), 2.0)[0]).close(2.5) == []
    assert not group.spawning
    pool.verify(2.5)


def test_requests_that_wait_longer_than_max_queue_time_are_rejected() -> None:
    pool, group = pool_with(max_size=1, min_instances=1, max_instances=1, max_queue_time=1.0)
    (process,) = bring_up(group, 1, 1)
    busy = sessions_of(group.checkout(Req("busy"), 0.0)[0])
    first, effects = group.checkout(Req("first"), 0.2)
    assert isinstance(first, Waiter) and Wake(1.2) in effects
    second, _ = group.checkout(Req("second"), 0.7)
    assert isinstance(second, Waiter)
    assert pool.tick(1.1) == []  # nobody has waited a second yet
    effects = pool.tick(1.2)
    assert effects == [Reject(first, Rejected(Reason.QUEUE_TIMEOUT))]
    assert list(group.queue) == [second] and not first.waiting
    pool.verify(1.2)
    # The one still waiting gets the process when it is free, in time.
    assert any(isinstance(e, Grant) and e.waiter is second for e in busy.close(1.5))
    assert pool.tick(5.0) == []


def test_recycling_for_memory_says_why_and_happens_once() -> None:
    pool, group, (a, b) = rolling_pool()
    effects = group.recycle(a, 1.0, RetireReason.MEMORY_LIMIT)
    assert effects == [Spawn(group.name)] and a.retire_reason == RetireReason.MEMORY_LIMIT
    assert group.recycle(a, 1.5, RetireReason.MEMORY_LIMIT) == []  # asked twice: once
    pool.verify(1.5)
    group.spawn_done(pid=10, concurrency=1, now=2.0)
    assert a.enablement.value == "detached" and group.retired == {RetireReason.MEMORY_LIMIT: 1}
    assert [p.pid for p in group.processes] == [b.pid, 10]
    pool.verify(2.0)


def test_shutdown_during_a_rolling_restart_ends_it() -> None:
    """Found by the stateful test: a shutdown left the restart's old processes listed as
    still to replace, though nothing serves any more."""
    pool, group, (a, b) = rolling_pool()
    group.restart(1.0)
    effects = pool.shutdown()
    assert {Stop(a), Stop(b)} <= set(effects)
    assert group.outdated == [] and group.surge() == 0
    pool.verify(1.0)
    # The spawn that was in flight ends in nothing.
    _, effects = group.spawn_done(pid=10, concurrency=1, now=2.0)
    assert group.processes == [] and any(isinstance(e, Stop) for e in effects)
    pool.verify(2.0)


# -- hung processes (--max-request-time) ----------------------------------------------------


def test_a_hung_process_is_killed_with_its_sessions_open_and_replaced() -> None:
    pool, group = pool_with(max_size=2, min_instances=2)
    a, b = bring_up(group, 1, 2)
    hung = sessions_of(group.checkout(Req("hung"), 1.0)[0])
    assert hung.process is a
    effects = group.abandon(a, 5.0, RetireReason.MAX_REQUEST_TIME)
    assert effects == [Kill(a), Spawn(group.name)]
    assert a.enablement.value == "detached" and a.life.value == "shutting down"
    assert group.processes == [b] and group.retiring == []
    assert group.retired == {RetireReason.MAX_REQUEST_TIME: 1}
    pool.verify(5.0)
    # Asked again (a second request timed out on it): nothing more.
    assert group.abandon(a, 5.1, RetireReason.MAX_REQUEST_TIME) == []
    # The timed-out session is closed by the front: counters only, no Stop.
    assert hung.close(5.2) == []
    assert a.sessions == 0
    # It dies (the kill): nothing more to do; the replacement is in flight already.
    assert group.process_died(a, 5.3) == []
    pool.verify(5.3)


def test_a_hung_process_that_was_retiring_is_killed_not_stopped_when_idle() -> None:
    pool, group = pool_with(max_size=2, min_instances=1)
    (a,) = bring_up(group, 1, 1)
    hung = sessions_of(group.checkout(Req("hung"), 1.0)[0])
    group.restart(2.0, rolling=False)  # blocking: a retires and waits for its session
    assert group.retiring == [a]
    effects = group.abandon(a, 6.0, RetireReason.MAX_REQUEST_TIME)
    assert effects[0] == Kill(a) and group.retiring == []
    assert Stop(a) not in hung.close(6.1)  # never stopped twice
    pool.verify(6.1)


def test_a_hung_process_in_a_rolling_restart_leaves_the_restart_going() -> None:
    pool, group, (a, b) = rolling_pool()
    group.restart(1.0)
    assert group.outdated == [a, b]
    effects = group.abandon(a, 2.0, RetireReason.MAX_REQUEST_TIME)
    assert Kill(a) in effects and group.outdated == [b]
    pool.verify(2.0)
    group.spawn_done(pid=10, concurrency=1, now=3.0)
    pool.verify(3.0)
    assert b not in group.processes or b in group.outdated


def test_a_dead_or_stopping_process_is_not_killed_again() -> None:
    pool, group = pool_with(max_size=2, min_instances=0)
    (a,) = bring_up(group, 1, 1)
    effects = group.detach(a, 10.0, RetireReason.DETACHED)
    assert effects == [Stop(a)]
    assert group.abandon(a, 10.5, RetireReason.MAX_REQUEST_TIME) == []
    group.process_died(a, 11.0)
    assert group.abandon(a, 11.5, RetireReason.MAX_REQUEST_TIME) == []


# -- sticky sessions ---------------------------------------------------------------------


def test_a_sticky_request_goes_to_its_process_even_when_another_is_less_busy() -> None:
    pool, group = pool_with(max_size=2, min_instances=2)
    a, b = bring_up(group, 2, 2)
    busy = sessions_of(group.checkout(Req(), 0.0, sticky=b.seq)[0])
    assert busy.process is b
    again = sessions_of(group.checkout(Req(), 0.1, sticky=b.seq)[0])
    assert again.process is b and b.totally_busy() and a.sessions == 0
    pool.verify(0.1)


def test_a_sticky_request_waits_for_its_busy_process_and_is_served_first() -> None:
    pool, group = pool_with(max_size=2, min_instances=2, max_instances=2)
    a, b = bring_up(group, 1, 2)
    on_b = sessions_of(group.checkout(Req(), 0.0, sticky=b.seq)[0])
    waiter, effects = group.checkout(Req("sticky"), 0.1, sticky=b.seq)
    assert isinstance(waiter, Waiter) and effects == []  # no spawn: it wants b
    assert group.waiting() == 1 and not group.queue
    # An ordinary request still finds a, which has room.
    other = sessions_of(group.checkout(Req("any"), 0.2)[0])
    assert other.process is a
    pool.verify(0.2)
    (grant,) = on_b.close(1.0)
    assert isinstance(grant, Grant) and grant.waiter is waiter
    assert grant.session.process is b and group.waiting() == 0
    pool.verify(1.0)


def test_a_sticky_request_for_a_gone_process_goes_to_the_least_busy() -> None:
    pool, group = pool_with(max_size=2, min_instances=1)
    (a,) = bring_up(group, 1, 1)
    session = sessions_of(group.checkout(Req(), 0.0, sticky=999)[0])
    assert session.process is a


def test_requests_waiting_for_a_process_that_dies_wait_for_any() -> None:
    pool, group = pool_with(max_size=2, min_instances=2, max_instances=2)
    a, b = bring_up(group, 1, 2)
    sessions_of(group.checkout(Req(), 0.0, sticky=b.seq)[0])
    on_a = sessions_of(group.checkout(Req(), 0.0)[0])
    w1, _ = group.checkout(Req(1), 0.1, sticky=b.seq)
    w2, _ = group.checkout(Req(2), 0.2, sticky=b.seq)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    effects = group.process_died(b, 1.0)
    assert list(group.queue) == [w1, w2] and not group.sticky_queues
    assert w1.sticky == 0 and Spawn(group.name) in effects
    pool.verify(1.0)
    grants = [e for e in on_a.close(1.5) if isinstance(e, Grant)]
    assert [g.waiter for g in grants] == [w1]  # in their order
    pool.verify(1.5)


def test_sticky_waiters_count_against_the_queue_size_and_time() -> None:
    pool, group = pool_with(max_size=1, min_instances=1, max_queue_size=2, max_queue_time=1.0)
    (a,) = bring_up(group, 1, 1)
    sessions_of(group.checkout(Req(), 0.0)[0])
    w1, _ = group.checkout(Req(1), 0.0, sticky=a.seq)
    w2, _ = group.checkout(Req(2), 0.5)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    assert group.checkout(Req(3), 0.6, sticky=a.seq)[0] == Rejected(Reason.QUEUE_FULL)
    effects = pool.tick(1.0)
    assert effects == [Reject(w1, Rejected(Reason.QUEUE_TIMEOUT))]
    assert group.waiting() == 1
    group.cancel(w2)
    assert group.waiting() == 0
    pool.verify(1.0)


def test_a_restart_sends_sticky_waiters_to_the_new_processes() -> None:
    pool, group = pool_with(max_size=1, min_instances=1)
    (a,) = bring_up(group, 1, 1)
    busy = sessions_of(group.checkout(Req(), 0.0)[0])
    waiter, _ = group.checkout(Req(), 0.1, sticky=a.seq)
    group.restart(1.0, rolling=False)
    assert list(group.queue) == [waiter] and not group.sticky_queues
    pool.verify(1.0)
    _, effects = group.spawn_done(pid=50, concurrency=1, now=2.0)
    assert any(isinstance(e, Grant) and e.waiter is waiter for e in effects)
    busy.close(2.5)
    pool.verify(2.5)


def test_a_failed_batch_of_a_rolling_restart_leaves_the_pool_within_its_size() -> None:
    """Found by the stateful test: batch 2, the first new process ready (its old one still
    serving, waiting for the batch), the second fails to start: the ready new one went on
    serving beside both old ones, one process above max_size once the surge ended."""
    pool, group = pool_with(max_size=2, min_instances=2, rolling_batch=2)
    a, b = bring_up(group, 1, 2)
    group.restart(1.0)
    _, effects = group.spawn_done(pid=10, concurrency=1, now=2.0)
    assert group._batch_ready == 1 and [p.pid for p in group.processes] == [a.pid, b.pid, 10]
    effects = group.spawn_failed(BOOM, 3.0)
    assert [p.pid for p in group.processes] == [a.pid, b.pid]  # the old version, alone
    assert any(isinstance(e, Stop) and e.process.pid == 10 for e in effects)
    assert group.restart_error is BOOM
    pool.verify(3.0)


def test_a_restart_restarted_over_that_fails_leaves_the_pool_within_its_size() -> None:
    pool, group = pool_with(max_size=2, min_instances=2, rolling_batch=2)
    a, b = bring_up(group, 1, 2)
    group.restart(1.0)
    group.spawn_done(pid=10, concurrency=1, now=2.0)
    group.restart(2.5)  # starts over: the new process 10 is outdated too
    assert [p.pid for p in group.outdated] == [a.pid, b.pid, 10]
    group.spawn_failed(BOOM, 3.0)
    assert [p.pid for p in group.processes] == [a.pid, b.pid]
    pool.verify(3.0)


# -- draining (the server stops) ----------------------------------------------------------------


def test_draining_no_process_left_rejects_the_queue_and_new_requests_at_once() -> None:
    """systemd's control-group kill: the server drains, and its processes stop by themselves
    (their own SIGTERM) while requests wait for them. Nothing is started any more, so the
    waiters and the requests after them are told at once, not kept until the graceful
    timeout. Regression: a request that came back after its process refused it waited for
    nothing (invariant 3)."""
    pool, group = pool_with(min_instances=2, max_instances=2)
    a, b = bring_up(group, 1, 2)
    busy = [sessions_of(group.checkout(Req(n), 0.0)[0]) for n in "ab"]
    queued, _ = group.checkout(Req("queued"), 0.1)
    assert isinstance(queued, Waiter)
    pool.drain()
    assert group.process_died(a, 1.0) == []  # the queued one still has b to wait for
    pool.verify(1.0)
    effects = group.process_died(b, 1.1)
    assert effects == [Reject(queued, Rejected(Reason.SHUTTING_DOWN))]
    assert group.checkout(Req("late"), 1.2) == (Rejected(Reason.SHUTTING_DOWN), [])
    pool.verify(1.2)
    for session in busy:
        session.close(1.3)
    pool.verify(1.3)


def test_draining_the_last_process_of_a_group_in_a_shared_pool_rejects_its_waiters() -> None:
    """With several apps in one pool: an app's last process leaves while the server drains
    and requests wait for it: they learn that the server is shutting down, and nothing is
    started for them (nor lent by the other app)."""
    pool, a, b = two_groups(max_size=2)
    (only,) = bring_up(a, 1, 1)
    b.spawning = True
    b.spawn_done(pid=200, concurrency=1, now=0.0)
    sessions_of(a.checkout(Req("busy"), 0.0)[0])
    sessions_of(b.checkout(Req("busy too"), 0.0)[0])
    queued, effects = a.checkout(Req("queued"), 0.1)
    assert isinstance(queued, Waiter) and effects == []  # full, nothing idle to take
    pool.verify(0.1)
    pool.drain()
    effects = a.detach(only, 1.0, RetireReason.UNREACHABLE)
    assert Reject(queued, Rejected(Reason.SHUTTING_DOWN)) in effects
    assert not any(isinstance(e, Spawn) for e in effects)
    pool.verify(1.0)
