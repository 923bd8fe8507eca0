"""Group: the processes of one app, the queue of requests waiting for them, and routing.

Theory of operation
-------------------
A request asks its group for a session (``checkout``). The group routes it to
the enabled process with the lowest busyness (see ``Process.busyness``); ties go
to the process spawned first, so spare processes stay idle and can be retired.
When every process is totally busy the request waits in a FIFO queue, bounded by
``max_queue_size``; a full queue rejects at once. Closing a session hands the
freed capacity to the head of the queue.

Rules the code keeps:
1. A request never overtakes one already queued (FIFO).
2. At most one spawn per group is in flight; spawn when the group is below
   ``min_instances``, or when every process is totally busy or requests wait,
   within ``max_instances`` and the pool's capacity.
3. A failed spawn rejects every waiter with the error and backs off
   exponentially; while backing off with no process, requests fail at once.
4. A process that dies is detached; its sessions may still be closed later and
   then change nothing but its own counters.
5. A retired process gets no new sessions and is stopped once its last session
   closes, so retiring (restarts, eviction) never cuts a request short. The one
   exception is a hung process (``abandon``): it is killed with its sessions open.
6. A request with a sticky id (its cookie names a process) goes to that process while
   it is enabled, waiting for it (in its own FIFO) when it is totally busy; when the
   process leaves, those requests join the group's queue. Requests for a process
   that is gone are routed as any other.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

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
from .process import Enablement, Life, Process, RetireReason, SpawnReason


@dataclass(frozen=True, slots=True)
class GroupOptions:
    min_instances: int = 1
    #: 0 = bounded only by the pool's ``max_size``.
    max_instances: int = 0
    #: 0 = unbounded.
    max_queue_size: int = 100
    #: Soft cap on sessions for unlimited-concurrency processes (0 = none).
    soft_limit: int = 0
    #: First back-off after a failed spawn; doubles per consecutive failure.
    spawn_backoff: float = 1.0
    spawn_backoff_cap: float = 60.0
    #: A process that dies sooner than this after it became ready, having served nothing,
    #: counts as a failed spawn (for the back-off): it is crash-looping.
    early_death: float = 2.0
    #: Processes above min_instances that served nothing for this long are retired
    #: (0 = never).
    idle_time: float = 300.0
    #: Restarts replace processes a batch at a time, each old one only once its
    #: replacement is ready (False: all at once, requests wait for the new ones).
    rolling_restarts: bool = True
    #: Processes replaced at a time in a rolling restart; the pool may hold this many
    #: more than max_size meanwhile (the new ones start before the old ones go).
    rolling_batch: int = 1
    #: A rolling restart whose new version cannot start leaves the old processes serving.
    resist_deployment_errors: bool = True
    #: A process that served this many requests is replaced (0 = never); the driver adds
    #: a random 0..max_requests_jitter per process, so that they do not all go at once.
    max_requests: int = 0
    max_requests_jitter: int = 0
    #: A request that waited this long in the queue is rejected (0 = it waits on).
    max_queue_time: float = 0.0


class PoolCapacity(Protocol):
    """What a group needs of its pool: the capacity all groups share (``pool.Pool``)."""

    max_size: int

    def capacity_used(self) -> int: ...

    def is_full(self) -> bool: ...

    def allowed_capacity(self) -> int: ...

    def _next_seq(self) -> int: ...

    def _make_room(self, group: Group, now: float, effects: list[Effect]) -> bool: ...

    def _lend_idle_process(
        self, group: Group, process: Process, now: float, effects: list[Effect]
    ) -> None: ...

    def _after_capacity_change(
        self, now: float, effects: list[Effect], exclude: Group | None = None
    ) -> None: ...


class Group:
    """One app's processes and queue.

    Invariants (``verify``):
    1. Every process in ``processes`` is enabled and alive; ``processes`` is in spawn order.
    2. A non-empty queue means every process is totally busy (no capacity sits idle
       while a request waits).
    3. A non-empty queue means progress is coming: a spawn is in flight, a process
       exists whose session will close, or the pool is full and waits for capacity
       (not while draining: then nothing is started).
    4. Every queued waiter has ``waiting`` set; the queue is no longer than ``max_queue_size``
       (when bounded).
    5. Every process in ``retiring`` is detached, shutting down, and still has sessions.
    6. A non-empty sticky queue belongs to a listed process that is totally busy; the
       queues together are no longer than ``max_queue_size`` (when bounded).
    """

    def __init__(self, name: str, pool: PoolCapacity, options: GroupOptions) -> None:
        self.name = name
        self.pool = pool
        self.options = options
        self.processes: list[Process] = []
        #: Detached processes that still serve sessions; each is stopped when its last closes.
        self.retiring: list[Process] = []
        self.queue: deque[Waiter] = deque()
        #: Requests waiting for one process (sticky sessions), by its sticky id (its seq).
        self.sticky_queues: dict[int, deque[Waiter]] = {}
        #: A spawn is in flight (counts against the pool's capacity).
        self.spawning = False
        #: Consecutive failed starts, and when the back-off after the last one ends. A
        #: process becoming ready does not end the streak (it may die at once, a crash
        #: loop): a healthy one does — one that served a request, or outlived early_death.
        self.failures = 0
        self.backoff_until = 0.0
        #: The last failed spawn's error, for requests during the back-off.
        self.last_error: Exception | None = None
        self.shutting_down = False
        #: The server is stopping (its requests in flight finish): nothing new is started.
        self.draining = False
        #: Why the spawn in flight was asked for (a SpawnReason value).
        self.spawn_reason = ""
        #: A restart's spawns are for the restart until its first new process is ready
        #: (blocking), or until its last old process is retired (rolling).
        self._restarting = False
        #: A rolling restart in progress: the old processes still to replace, in the order
        #: they go. They serve until then (they stay in ``processes``).
        self.outdated: list[Process] = []
        #: New processes of the current batch, ready, whose old ones are still serving.
        self._batch_ready = 0
        #: The new version's start error when a rolling restart gave up (the old processes
        #: kept serving); cleared by the next restart.
        self.restart_error: Exception | None = None
        # Counters for status and metrics: only ever incremented, never on the request path.
        #: Processes that became ready; spawns that failed; restarts asked for.
        self.spawns = 0
        self.spawn_failures = 0
        self.restarts = 0
        #: Sessions handed out (requests that got a process), at once or from the queue.
        self.sessions_opened = 0
        #: Processes that left routing, by RetireReason.
        self.retired: dict[str, int] = {}

    # -- requests ---------------------------------------------------------------

    def checkout(
        self, token: Requester, now: float, sticky: int = 0
    ) -> tuple[Session | Waiter | Rejected, list[Effect]]:
        """Ask for a session: one now, a place in the queue, or a rejection. ``sticky``:
        the sticky id of the process the request asks for (0: any)."""
        effects: list[Effect] = []
        if self.shutting_down:
            return Rejected(Reason.SHUTTING_DOWN), effects
        if sticky:
            target = self._sticky_target(sticky)
            if target is not None:
                if not target.totally_busy():  # then no one waits for it (invariant 6)
                    session = self._open_session(target, now)
                    if target.totally_busy():
                        self._maybe_spawn(now, effects)
                    return session, effects
                if self._queue_full():
                    return Rejected(Reason.QUEUE_FULL), effects
                waiter = Waiter(token, now, sticky)
                self.sticky_queues.setdefault(sticky, deque()).append(waiter)
                if self.options.max_queue_time:
                    effects.append(Wake(now + self.options.max_queue_time))
                return waiter, effects
        if not self.queue:
            process = self._route()
            if process is not None:
                session = self._open_session(process, now)
                # Only a process that is now full can have made every process full.
                if process.totally_busy() or len(self.processes) < self.options.min_instances:
                    self._maybe_spawn(now, effects)
                return session, effects
        if not self.processes and not self.spawning:
            if self.draining:
                # Nothing starts while the server stops: a request that would wait here
                # (its process stopped by itself, on its own SIGTERM) would wait for
                # nothing until the graceful timeout cut it.
                return Rejected(Reason.SHUTTING_DOWN), effects
            if now < self.backoff_until:
                return Rejected(Reason.SPAWN_FAILED, self.last_error), effects
        if self._queue_full():
            return Rejected(Reason.QUEUE_FULL), effects
        waiter = Waiter(token, now)
        self.queue.append(waiter)
        if self.options.max_queue_time:
            effects.append(Wake(now + self.options.max_queue_time))  # to expire it
        self._maybe_spawn(now, effects)
        return waiter, effects

    def waiting(self) -> int:
        """Requests waiting: in the queue and for a process of their own."""
        return len(self.queue) + sum(len(q) for q in self.sticky_queues.values())

    def oldest_wait_since(self) -> float | None:
        """When the longest-waiting request started waiting (None: none waits)."""
        heads = [q[0].enqueued_at for q in self.sticky_queues.values()]
        if self.queue:
            heads.append(self.queue[0].enqueued_at)
        return min(heads) if heads else None

    def _queue_full(self) -> bool:
        limit = self.options.max_queue_size
        return bool(limit) and self.waiting() >= limit

    def _sticky_target(self, sticky: int) -> Process | None:
        for process in self.processes:
            if process.seq == sticky:
                return process
        return None

    def expire_waiters(self, now: float, effects: list[Effect]) -> None:
        """Reject the requests that waited max_queue_time or longer (each queue is in
        arrival order: they are at its head)."""
        limit = self.options.max_queue_time
        if not limit:
            return
        for queue in [self.queue, *self.sticky_queues.values()]:
            while queue and queue[0].enqueued_at + limit <= now:
                waiter = queue.popleft()
                waiter.waiting = False
                effects.append(Reject(waiter, Rejected(Reason.QUEUE_TIMEOUT)))
        self._drop_empty_sticky_queues()

    def cancel(self, waiter: Waiter) -> None:
        """The request behind ``waiter`` went away before it got a session."""
        if waiter.waiting:
            waiter.waiting = False
            if waiter.sticky:
                self.sticky_queues[waiter.sticky].remove(waiter)
                self._drop_empty_sticky_queues()
            else:
                self.queue.remove(waiter)

    def _drop_empty_sticky_queues(self) -> None:
        for sticky in [k for k, q in self.sticky_queues.items() if not q]:
            del self.sticky_queues[sticky]

    def _serve_sticky(self, process: Process, now: float, effects: list[Effect]) -> None:
        """``process`` has room: the requests waiting for it go first."""
        queue = self.sticky_queues.get(process.seq)
        if queue is None:
            return
        while queue and not process.totally_busy():
            waiter = queue.popleft()
            waiter.waiting = False
            effects.append(Grant(waiter, self._open_session(process, now)))
        if not queue:
            del self.sticky_queues[process.seq]

    def _unstick(self, process: Process, now: float, effects: list[Effect]) -> None:
        """``process`` leaves routing: the requests waiting for it wait for any process."""
        queue = self.sticky_queues.pop(process.seq, None)
        if not queue:
            return
        for waiter in queue:
            waiter.sticky = 0
        self.queue.extend(queue)
        self._serve_queue(now, effects)

    def _route(self) -> Process | None:
        """The enabled process with the lowest busyness that has room; ties → spawned first."""
        best: Process | None = None
        best_busyness = 0.0
        for process in self.processes:
            if process.totally_busy():
                continue
            busyness = process.busyness()
            if best is None or busyness < best_busyness:
                best = process
                best_busyness = busyness
        return best

    def _open_session(self, process: Process, now: float) -> Session:
        self.sessions_opened += 1
        process.sessions += 1
        process.last_used = now
        return Session(self, process)

    def _session_closed(self, session: Session, now: float) -> list[Effect]:
        process = session.process
        process.sessions -= 1
        process.processed += 1
        process.last_used = now
        self.failures = 0  # the app served a request: whatever failed before is over
        effects: list[Effect] = []
        if process.enablement is Enablement.ENABLED:
            limit = process.request_limit
            if limit and process.processed >= limit and process not in self.outdated:
                self._recycle(process, now, effects, RetireReason.MAX_REQUESTS)
            if self.sticky_queues:
                self._serve_sticky(process, now, effects)
            self._serve_queue(now, effects)
            if process.sessions == 0 and not self.queue:
                self.pool._lend_idle_process(self, process, now, effects)
        elif process.sessions == 0 and process in self.retiring:
            self.retiring.remove(process)
            effects.append(Stop(process))
        return effects

    def _serve_queue(self, now: float, effects: list[Effect]) -> None:
        while self.queue:
            process = self._route()
            if process is None:
                return
            waiter = self.queue.popleft()
            waiter.waiting = False
            effects.append(Grant(waiter, self._open_session(process, now)))

    def _reject_all(self, rejected: Rejected, effects: list[Effect]) -> None:
        for queue in [self.queue, *self.sticky_queues.values()]:
            while queue:
                waiter = queue.popleft()
                waiter.waiting = False
                effects.append(Reject(waiter, rejected))
        self.sticky_queues.clear()

    # -- spawning ---------------------------------------------------------------

    def wants_process(self, now: float) -> bool:
        """Whether this group should get one more process, pool capacity aside."""
        if self.spawning or self.shutting_down or self.draining or now < self.backoff_until:
            return False
        count = len(self.processes)
        if count < self.options.min_instances:
            return True
        if self.options.max_instances and count >= self.options.max_instances:
            return False
        if self.queue:
            return True
        return count > 0 and all(p.totally_busy() for p in self.processes)

    def _maybe_spawn(self, now: float, effects: list[Effect]) -> None:
        if self.wants_process(now) and self.pool._make_room(self, now, effects):
            self.spawning = True
            self.spawn_reason = self._why_spawn()
            effects.append(Spawn(self.name))

    def _why_spawn(self) -> str:
        if self._restarting:
            return SpawnReason.RESTART
        if len(self.processes) < self.options.min_instances:
            return SpawnReason.MIN_INSTANCES
        return SpawnReason.QUEUE if self.queue else SpawnReason.BUSY

    def spawn_done(
        self, pid: int, concurrency: int, now: float, request_limit: int = 0
    ) -> tuple[Process, list[Effect]]:
        """The spawn in flight produced a ready process (``request_limit``: requests after
        which it is replaced, as the driver drew it from max_requests and its jitter)."""
        assert self.spawning, "spawn_done without a spawn in flight"
        self.spawning = False
        self.backoff_until = 0.0
        self.last_error = None
        limit = concurrency if concurrency > 0 else self.options.soft_limit
        process = Process(
            pid=pid,
            concurrency=concurrency,
            limit=limit,
            seq=self.pool._next_seq(),
            spawned_at=now,
            last_used=now,
            spawn_reason=self.spawn_reason,
            request_limit=request_limit,
        )
        self.spawns += 1
        self._restarting = False
        effects: list[Effect] = []
        if self.shutting_down:
            self._detach(process, now, effects, RetireReason.RESTART)
            return process, effects
        self.processes.append(process)
        self._serve_queue(now, effects)
        if self.outdated:
            self._rolling_step(now, effects)
        self._maybe_spawn(now, effects)
        self.pool._after_capacity_change(now, effects)
        return process, effects

    def _note_failure(self, error: Exception | None, now: float, effects: list[Effect]) -> None:
        """One more failure in a row: back off exponentially before the next spawn."""
        self.failures += 1
        self.last_error = error
        delay = min(
            self.options.spawn_backoff_cap,
            self.options.spawn_backoff * 2 ** (self.failures - 1),
        )
        self.backoff_until = now + delay
        if delay > 0:
            effects.append(Wake(self.backoff_until))

    def spawn_failed(self, error: Exception | None, now: float) -> list[Effect]:
        """The spawn in flight failed: every waiter learns why; retry after a back-off."""
        assert self.spawning, "spawn_failed without a spawn in flight"
        self.spawning = False
        self.spawn_failures += 1
        effects: list[Effect] = []
        if self.outdated:
            self._rolling_failed(error, now, effects)
        self._note_failure(error, now, effects)
        if not self.processes:
            # With live processes the queue is still served; only the scale-up failed.
            self._reject_all(Rejected(Reason.SPAWN_FAILED, error), effects)
        # With no back-off the next request spawns again; never respawn from here,
        # or a broken app would spawn in a tight loop.
        self.pool._after_capacity_change(now, effects, exclude=self)
        return effects

    # -- process loss and retirement -----------------------------------------------

    def process_died(
        self, process: Process, now: float, error: Exception | None = None, orderly: bool = False
    ) -> list[Effect]:
        """The OS process behind ``process`` exited (expectedly or not) and was reaped.

        ``error`` (the driver's) explains an early death, for requests during the back-off.
        ``orderly``: it stopped in order by itself (a loader told to stop by its own
        SIGTERM): however young, not a failed start; it is replaced at once.
        """
        effects: list[Effect] = []
        was_enabled = process.enablement is Enablement.ENABLED
        process.life = Life.DEAD
        if process in self.retiring:
            self.retiring.remove(process)
        if was_enabled:
            process.enablement = Enablement.DETACHED
            process.retire_reason = RetireReason.DIED
            self._count_retired(RetireReason.DIED)
            self.processes.remove(process)
            self._unstick(process, now, effects)
            if process in self.outdated:
                self.outdated.remove(process)  # nothing to wait for: it is gone
            if not orderly and self.died_starting(process, now):
                # It died right after starting: a crash loop, not bad luck. Back off as
                # after a failed spawn, or it would be replaced in a tight loop.
                self._note_failure(error if error is not None else self.last_error, now, effects)
            self._after_loss(now, effects)
        return effects

    def died_starting(self, process: Process, now: float) -> bool:
        """Whether a death of ``process`` now is a failed start (a crash loop): it dies
        within ``early_death`` of becoming ready *without having served anything*. A
        process that dies while serving, or after it served, crashed: a request killed
        it, and the app is fine for the others; it is replaced at once, no back-off."""
        return (
            now - process.spawned_at < self.options.early_death
            and process.processed == 0
            and process.sessions == 0
        )

    def _after_loss(self, now: float, effects: list[Effect]) -> None:
        """A process left the group: replace it if wanted; never strand the queue."""
        self._maybe_spawn(now, effects)
        if self.queue and not self.processes and not self.spawning:
            if self.draining:
                # The server stops and starts nothing (a full pool frees nothing for us).
                self._reject_all(Rejected(Reason.SHUTTING_DOWN), effects)
            elif not self.pool.is_full():
                # Only a back-off stops a spawn here: the waiters get the last error now.
                self._reject_all(Rejected(Reason.SPAWN_FAILED, self.last_error), effects)
        self.pool._after_capacity_change(now, effects)

    def _count_retired(self, reason: str) -> None:
        self.retired[reason] = self.retired.get(reason, 0) + 1

    def _detach(self, process: Process, now: float, effects: list[Effect], reason: str) -> None:
        """Take an enabled process out of routing for good; stop it once it is idle."""
        if process in self.processes:
            self.processes.remove(process)
            self._unstick(process, now, effects)
        if process in self.outdated:
            self.outdated.remove(process)
        process.retire_reason = reason
        self._count_retired(reason)
        process.enablement = Enablement.DETACHED
        process.life = Life.SHUTTING_DOWN
        if process.sessions:
            self.retiring.append(process)
        else:
            effects.append(Stop(process))

    def detach(self, process: Process, now: float, reason: str) -> list[Effect]:
        """Retire ``process``: no new sessions; it is stopped once its sessions are over,
        and replaced if the group wants as many processes as before."""
        effects: list[Effect] = []
        if process.enablement is Enablement.ENABLED:
            self._detach(process, now, effects, reason)
            self._after_loss(now, effects)
        return effects

    def abandon(self, process: Process, now: float, reason: str) -> list[Effect]:
        """``process`` hung (a request ran past --max-request-time): kill it now, with
        whatever sessions it has (they end with it; closing them later changes only its
        counters), and replace it if the group wants as many processes as before."""
        effects: list[Effect] = []
        if process.life is not Life.ALIVE and process not in self.retiring:
            return effects  # dead, or already being stopped with nothing in flight
        if process in self.retiring:
            self.retiring.remove(process)  # it would be stopped when idle: it never is
            process.retire_reason = reason
            self._count_retired(reason)
        elif process.enablement is Enablement.ENABLED:
            self.processes.remove(process)
            self._unstick(process, now, effects)
            if process in self.outdated:
                self.outdated.remove(process)  # the restart goes on without it
            process.enablement = Enablement.DETACHED
            process.retire_reason = reason
            self._count_retired(reason)
        process.life = Life.SHUTTING_DOWN
        effects.append(Kill(process))
        self._after_loss(now, effects)
        return effects

    def note_healthy(self, now: float) -> None:
        """Forget past failures once a process has outlived ``early_death`` (called on
        every tick): a later death is bad luck again, not part of a crash loop."""
        if self.failures and any(
            now - p.spawned_at >= self.options.early_death for p in self.processes
        ):
            self.failures = 0

    def retire_idle(self, now: float, effects: list[Effect]) -> None:
        """Retire processes above min_instances that have been idle for ``idle_time``.

        The least recently used go first; one process at a time is enough per call,
        as the driver calls this periodically.
        """
        idle_time = self.options.idle_time
        if not idle_time or len(self.processes) <= self.options.min_instances:
            return
        idle = [p for p in self.processes if p.sessions == 0 and now - p.last_used >= idle_time]
        if not idle or self.queue:
            return
        victim = min(idle, key=lambda p: p.last_used)
        # Not if every other process is full right now: a spawn would replace it at once.
        if any(not p.totally_busy() for p in self.processes if p is not victim):
            self._detach(victim, now, effects, RetireReason.IDLE)

    def restart(self, now: float, rolling: bool | None = None) -> list[Effect]:
        """Replace every process (the new version of the app); forget past failures.

        Rolling (``options.rolling_restarts``, unless ``rolling`` says otherwise): a new
        process starts while the old ones serve, and only once it is ready does an old
        one stop taking requests (it finishes those it has); one batch after another.
        Requests never wait for a spawn because of the restart. A group without processes
        or with ``min_instances = 0`` restarts blocking: every process is retired at once
        and requests wait in the queue for the new ones.
        """
        effects: list[Effect] = []
        self.failures = 0
        self.backoff_until = 0.0
        self.restarts += 1
        self.restart_error = None
        self._restarting = True
        if rolling is None:
            rolling = self.options.rolling_restarts
        if rolling and self.processes and self.options.min_instances > 0:
            self.outdated = list(self.processes)  # a restart during one starts over
            for process in self.outdated:
                process.retire_reason = RetireReason.RESTART
            self._batch_ready = 0
            self._rolling_spawn(effects, SpawnReason.RESTART)
            return effects
        for process in list(self.processes):
            self._detach(process, now, effects, RetireReason.RESTART)
        self.outdated = []
        self._maybe_spawn(now, effects)
        self.pool._after_capacity_change(now, effects)
        return effects

    def surge(self) -> int:
        """Processes this group may have above the pool's max_size right now: a rolling
        restart's batch (the new ones start before the old ones go)."""
        return self.options.rolling_batch if self.outdated else 0

    def _rolling_spawn(self, effects: list[Effect], reason: str) -> None:
        """The next new process of a rolling restart, within the pool's size plus the surge."""
        if self.spawning or self.shutting_down or self.draining:
            return  # its spawn_done goes on with the restart
        if self.pool.capacity_used() >= self.pool.max_size + self.surge():
            return
        self.spawning = True
        self.spawn_reason = reason
        effects.append(Spawn(self.name))

    def recycle(self, process: Process, now: float, reason: str) -> list[Effect]:
        """Replace ``process``, which reached a limit (e.g. RetireReason.MEMORY_LIMIT):
        its replacement first, then it finishes its requests and stops."""
        effects: list[Effect] = []
        if process.enablement is Enablement.ENABLED and process not in self.outdated:
            self._recycle(process, now, effects, reason)
        return effects

    def _recycle(self, process: Process, now: float, effects: list[Effect], reason: str) -> None:
        """``process`` reached a limit: replaced as in a rolling restart (its replacement
        first, then it drains), unless new processes fail to start now (back-off)."""
        if now < self.backoff_until:
            return  # tried again later (the next request, the next check), after it
        process.retire_reason = reason  # while it still serves: status shows what is coming
        self.outdated.append(process)
        self._rolling_spawn(effects, SpawnReason.RECYCLE)

    def _rolling_step(self, now: float, effects: list[Effect]) -> None:
        """A new process is ready: once the batch is, as many old ones stop taking requests
        (each finishes what it has, then stops); then the next batch starts."""
        self._batch_ready += 1
        if self._batch_ready >= min(self.options.rolling_batch, len(self.outdated)):
            for old in self.outdated[: self._batch_ready]:
                self._detach(old, now, effects, old.retire_reason or RetireReason.RESTART)
            self._batch_ready = 0
        if self.outdated:
            self._restarting = self.spawn_reason == SpawnReason.RESTART
            self._rolling_spawn(effects, self.spawn_reason or SpawnReason.RESTART)

    def _rolling_failed(self, error: Exception | None, now: float, effects: list[Effect]) -> None:
        """The new version did not start during a rolling restart."""
        self._batch_ready = 0
        self._restarting = False
        if self.options.resist_deployment_errors or self.spawn_reason == SpawnReason.RECYCLE:
            # The old processes keep serving; the next restart tries again (a process to
            # recycle: on a later request, after the back-off).
            if self.spawn_reason == SpawnReason.RESTART:
                self.restart_error = error
            for old in self.outdated:
                old.retire_reason = ""  # it stays; a later retirement says its own reason
            self.outdated = []
            # Without the surge the pool must fit its size again: processes the restart
            # started go, newest first (an unfinished batch's, whose old ones still
            # serve; a restart's restarted over). Found by the stateful test.
            excess = self.pool.capacity_used() - self.pool.allowed_capacity()
            for new in self.processes[len(self.processes) - excess :] if excess > 0 else ():
                self._detach(new, now, effects, RetireReason.RESTART)
            return
        # As a blocking restart would have: the old version goes, the error shows.
        for old in list(self.outdated):
            self._detach(old, now, effects, RetireReason.RESTART)
        self.outdated = []

    def shutdown(self) -> list[Effect]:
        """Stop all processes now, busy or not: the front has already waited for requests."""
        self.shutting_down = True
        effects: list[Effect] = []
        self._reject_all(Rejected(Reason.SHUTTING_DOWN), effects)
        for process in [*self.processes, *self.retiring]:
            process.enablement = Enablement.DETACHED
            process.life = Life.SHUTTING_DOWN
            effects.append(Stop(process))
        self.processes.clear()
        self.retiring.clear()
        self.outdated.clear()  # a rolling restart in progress ends with everything else
        self._batch_ready = 0
        return effects

    # -- introspection ------------------------------------------------------------

    def capacity_used(self) -> int:
        """Processes that count against the pool's ``max_size``: live ones and a spawn in flight."""
        return len(self.processes) + (1 if self.spawning else 0)

    def verify(self, now: float) -> None:
        """Check the invariants in the class docstring; raise AssertionError if one fails."""
        seqs = [p.seq for p in self.processes]
        assert seqs == sorted(seqs), f"{self.name}: processes out of spawn order"
        for p in self.processes:
            assert p.enablement is Enablement.ENABLED, f"{p}: listed but not enabled"
            assert p.life is Life.ALIVE, f"{p}: listed but not alive"
            assert p.sessions >= 0 and p.processed >= 0, f"{p}: negative counter"
            if p.limit:
                assert p.sessions <= p.limit, f"{p}: more sessions than its limit"
        if self.queue:
            assert all(p.totally_busy() for p in self.processes), (
                f"{self.name}: a request waits while a process has room"
            )
            assert self.spawning or self.processes or (self.pool.is_full() and not self.draining), (
                f"{self.name}: requests wait but nothing will serve them"
            )
        assert all(w.waiting for w in self.queue), f"{self.name}: a queued waiter is not waiting"
        for p in self.retiring:
            assert p.enablement is Enablement.DETACHED, f"{p}: retiring but not detached"
            assert p.life is Life.SHUTTING_DOWN, f"{p}: retiring but not shutting down"
            assert p.sessions > 0, f"{p}: retiring without sessions (should be stopped)"
        if self.options.max_queue_size:
            assert self.waiting() <= self.options.max_queue_size, f"{self.name}: queue overflow"
        for sticky, queue in self.sticky_queues.items():
            target = self._sticky_target(sticky)
            assert queue, f"{self.name}: an empty sticky queue is kept"
            assert target is not None, f"{self.name}: requests wait for a process not listed"
            assert target.totally_busy(), f"{self.name}: requests wait for {target}, which has room"
            assert all(w.waiting and w.sticky == sticky for w in queue), (
                f"{self.name}: a sticky waiter is not waiting for its process"
            )
        if self.options.max_instances:
            assert len(self.processes) <= self.options.max_instances + self.surge(), (
                f"{self.name}: more processes than max_instances"
            )
        assert all(p in self.processes for p in self.outdated), (
            f"{self.name}: an outdated process is not serving"
        )
        assert 0 <= self._batch_ready < max(1, self.options.rolling_batch), (
            f"{self.name}: a finished batch kept its old processes"
        )

    def __repr__(self) -> str:
        return (
            f"<Group {self.name} processes={len(self.processes)} queue={len(self.queue)}"
            f" spawning={self.spawning}>"
        )
