"""Supervisor: carries out the pool's effects with real processes and timers.

The pool decides; the supervisor does: it spawns (and reports ``spawn_done`` or
``spawn_failed``), stops and reaps processes, grants and rejects waiting
requests, and wakes the pool when a back-off ends. It owns every background
task it starts and cancels or awaits them all on shutdown.

It builds no HTTP objects: the connections to each process are opened and closed
through ``ProcessConnections``, which ``core`` wires to the HTTP side.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from .daemon import process_children
from .errors import SpawnError
from .pool import (
    Effect,
    Enablement,
    Grant,
    Group,
    GroupOptions,
    Kill,
    Life,
    Pool,
    Process,
    Reject,
    RetireReason,
    Spawn,
    SpawnReason,
    Stop,
    Wake,
)
from .spawning.child import Child
from .spawning.error_report import ErrorReports
from .spawning.spawner import STOP_EOF_GRACE, STOP_TERM_GRACE, Ready, Spawner

log = logging.getLogger("ferryman")

#: Longest pause between two periodic looks at the pool (idle retirement).
MAX_TICK_INTERVAL = 10.0
#: How often --memory-limit is checked (reading /proc for every app process).
MEMORY_CHECK_INTERVAL = 2.0
MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: How long an exited process's last output lines may take to reach the log.
OUTPUT_DRAIN_TIMEOUT = 1.0
#: Written on an app process's owner pipe when the server stops (see going_away).
GOING_AWAY = b"g"
#: How long a hung process gets to write its stacks (SIGQUIT) before SIGKILL.
STACK_DUMP_GRACE = 0.5
#: Exit code when the self-check finds a broken pool invariant (EX_SOFTWARE).
BROKEN_INVARIANT_EXIT = 70


def abort_on_broken_invariant(error: AssertionError) -> None:
    """The self-check's default: say what broke, loudly, and stop the core at once (no
    cleanup that could run on the broken state; app processes exit on their own when
    their owner pipe closes)."""
    log.critical("Self-check: a pool invariant does not hold: %s", error, exc_info=error)
    for handler in log.handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(BROKEN_INVARIANT_EXIT)


class ProcessConnections(Protocol):
    """Where the connections to each app process live (``http.upstream.Upstreams``)."""

    def open(
        self, process: Process, address: str | tuple[str, int], protocol: str, concurrency: int
    ) -> None:
        """``process`` is ready: make room for connections to it."""

    def close(self, process: Process) -> None:
        """``process`` is retired or gone: close its connections, reuse none."""


class ProcessHandle:
    """The driver's side of a pool Process: its child, how it was started, its group."""

    __slots__ = ("child", "group", "process", "ready")

    def __init__(self, child: Child, ready: Ready, group: Group, process: Process) -> None:
        self.child = child
        self.ready = ready
        self.group = group
        self.process = process


class Supervisor:
    def __init__(
        self,
        pool: Pool,
        spawners: dict[str, Spawner],
        reports: ErrorReports,
        connections: ProcessConnections,
        *,
        selfcheck: bool = False,
        on_broken_invariant: Callable[[AssertionError], None] = abort_on_broken_invariant,
    ) -> None:
        self.pool = pool
        #: Verify the pool after every applied batch of effects (--selfcheck).
        self.selfcheck = selfcheck
        self.on_broken_invariant = on_broken_invariant
        self.spawners = spawners
        self.reports = reports
        self.connections = connections
        #: Every process the pool knows that is not reaped yet, with its OS side.
        self.handles: dict[Process, ProcessHandle] = {}
        self.loop = asyncio.get_running_loop()
        self.stopping = False
        #: A second stop signal: app processes get SIGTERM at once, not stdin EOF first.
        self.hurry = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: While shutting down: the most a stopping process waits (stdin EOF, SIGTERM).
        self._stop_limits: tuple[float, float] | None = None
        self._spawns: dict[Group, asyncio.Task[Any]] = {}
        self._wakes: dict[float, asyncio.TimerHandle] = {}
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_interval = MAX_TICK_INTERVAL
        self._memory_timer: asyncio.TimerHandle | None = None
        self._memory_limit = 0
        self._memory_interval = MEMORY_CHECK_INTERVAL
        self.spawn_count = 0

    def now(self) -> float:
        return self.loop.time()

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is Grant:
                assert isinstance(effect, Grant)
                effect.waiter.token.granted(effect.session)
            elif kind is Reject:
                assert isinstance(effect, Reject)
                effect.waiter.token.rejected(effect.rejected)
            elif kind is Spawn:
                assert isinstance(effect, Spawn)
                group = self.pool.groups[effect.group]
                log.info("Starting a process for %s: %s", group.name, _why(group))
                self._spawns[group] = self._start(self._spawn(group))
            elif kind is Stop:
                assert isinstance(effect, Stop)
                self._start(self._stop(effect.process))
            elif kind is Kill:
                assert isinstance(effect, Kill)
                self._start(self._kill(effect.process))
            elif kind is Wake:
                assert isinstance(effect, Wake)
                self._wake_at(effect.at)
        if self.selfcheck:
            self.check_invariants()

    def check_invariants(self) -> None:
        """Pool.verify(), with what the driver itself knows: every process the pool lists
        has its OS side here."""
        try:
            self.pool.verify(self.now())
            for group in self.pool.groups.values():
                for process in [*group.processes, *group.retiring]:
                    assert process in self.handles, f"{process}: listed, but no child known"
        except AssertionError as error:
            self.on_broken_invariant(error)

    def _start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error in a background task", exc_info=task.exception())

    # -- waking the pool -------------------------------------------------------------------

    def tick_every(self, interval: float) -> None:
        """Call ``Pool.tick`` every ``interval`` seconds (idle retirement) until shutdown."""
        self._tick_interval = interval
        self._ticker = self.loop.call_later(interval, self._periodic_tick)

    def watch_memory(self, limit_bytes: int, interval: float = MEMORY_CHECK_INTERVAL) -> None:
        """Every ``interval`` seconds, replace (gracefully) each process whose resident
        memory, with its children's, is above ``limit_bytes`` (--memory-limit)."""
        self._memory_limit = limit_bytes
        self._memory_interval = interval
        self._memory_timer = self.loop.call_later(interval, self._check_memory)

    def _check_memory(self) -> None:
        self._memory_timer = None
        if self.stopping:
            return
        limit = self._memory_limit
        for process, handle in list(self.handles.items()):
            if process.enablement is not Enablement.ENABLED or process.retire_reason:
                continue  # leaving already
            used = tree_rss(process.pid)
            if used > limit:
                log.warning(
                    "App %d uses %d MB (with its children), above the memory limit of %d MB: "
                    "replacing it (it finishes its requests once its replacement is ready)",
                    process.pid,
                    used // MB,
                    limit // MB,
                )
                group = handle.group
                self.apply(group.recycle(process, self.now(), RetireReason.MEMORY_LIMIT))
        self._memory_timer = self.loop.call_later(self._memory_interval, self._check_memory)

    def _periodic_tick(self) -> None:
        self._ticker = None
        if self.stopping:
            return
        self.apply(self.pool.tick(self.now()))
        self._ticker = self.loop.call_later(self._tick_interval, self._periodic_tick)

    def _wake_at(self, at: float) -> None:
        if self.stopping or at in self._wakes:
            return
        self._wakes[at] = self.loop.call_at(at, self._wake, at)

    def _wake(self, at: float) -> None:
        self._wakes.pop(at, None)
        if not self.stopping:
            self.apply(self.pool.tick(self.now()))

    # -- spawning ------------------------------------------------------------------------------

    async def _spawn(self, group: Group) -> None:
        spawner = self.spawners[group.name]
        try:
            child, ready = await spawner.spawn()
        except SpawnError as error:
            self._spawns.pop(group, None)
            effects = group.spawn_failed(error, self.now())
            try:
                self._log_spawn_error(group, error)
            finally:
                self.apply(effects)  # whatever happened to the report, waiters learn why
            return
        except asyncio.CancelledError:
            self._spawns.pop(group, None)
            self.apply(group.spawn_failed(None, self.now()))
            raise
        except Exception as exc:
            self._spawns.pop(group, None)
            log.exception("internal error while spawning a process for %s", group.name)
            internal = SpawnError(
                f"internal error while spawning: {exc!r}", category="internal", step="spawn"
            )
            self.apply(group.spawn_failed(internal, self.now()))
            return
        self._spawns.pop(group, None)
        self.spawn_count += 1
        process, effects = group.spawn_done(
            child.pid, ready.concurrency, self.now(), request_limit(group.options)
        )
        handle = self.handles[process] = ProcessHandle(child, ready, group, process)
        self.connections.open(process, ready.address, ready.protocol, ready.concurrency)
        child.on_exit(lambda code: self._exited(handle, code))
        self.apply(effects)

    def _log_spawn_error(self, group: Group, error: SpawnError) -> None:
        """One line: app, summary, error ID and report (the app's output is logged already)."""
        error.report_path = self.reports.write(error)
        first, *more = error.summary.splitlines() or [""]
        if group.restart_error is error:
            # A rolling restart gave up: the one line says what happened and what serves.
            headline = (
                "Restart of %s failed, the old processes keep serving: the new version "
                "cannot start: %s [step: %s, category: %s] (error ID %s; report: %s). "
                "Fix it and restart again (e.g. touch tmp/restart.txt)."
            )
        else:
            headline = (
                "Could not start a process for %s: %s [step: %s, category: %s]"
                " (error ID %s; report: %s)"
            )
        log.error(
            headline,
            error.app_root or group.name,
            first,
            error.step,
            error.category,
            error.error_id,
            error.report_path or "none written",
        )
        # The rest of a multi-line message (Node's "Require stack:"...), a line each.
        for line in more:
            log.error("  (error ID %s) %s", error.error_id, line)

    # -- ending processes -----------------------------------------------------------------------

    async def _stop(self, process: Process) -> None:
        handle = self.handles.get(process)
        if handle is None:
            # It exited (and was reaped) between the Stop effect and this task's first
            # step: its own SIGTERM, as under systemd's control-group kill.
            return
        if process.retire_reason and not self.stopping:
            log.info(
                "Stopping app %d of %s: %s", process.pid, handle.group.name, process.retire_reason
            )
        self.connections.close(process)
        eof_grace = 0.0 if self.hurry else handle.ready.eof_grace
        term_grace = STOP_TERM_GRACE
        if self._stop_limits is not None:  # shutting down: within the graceful timeout
            eof_grace = min(eof_grace, self._stop_limits[0])
            term_grace = min(term_grace, self._stop_limits[1])
        await handle.child.stop(eof_grace, term_grace)

    def _exited(self, handle: ProcessHandle, code: int) -> None:
        """The child exited and was reaped: detach it, free its resources."""
        process = handle.process
        group = handle.group
        self.connections.close(process)
        now = self.now()
        error = None
        # A loader exits 0 by itself only when told to stop by its own SIGTERM (systemd's
        # control-group kill, docker stop, an operator's kill): not a crash, and not a
        # failed start however young it is (no back-off: replaced at once). A program
        # started without a loader (--app-start-command) that exits 0 may just be broken.
        orderly = (
            code == 0
            and process.life is Life.ALIVE
            and self.spawners[group.name].spec.kind.loader is not None
        )
        if code == 0 and process.life is Life.ALIVE:
            log.info("App %d stopped by itself (exit code 0)", process.pid)
        elif not self.stopping and (
            process.life is Life.ALIVE or (code != 0 and not handle.child.signalled)
        ):
            # A retired process (draining, or found unreachable) that dies by a signal we
            # did not send crashed too: someone killed it (the OOM killer, kill -9).
            status = f"exit code {code}" if code >= 0 else f"signal {-code}"
            lived = now - process.spawned_at
            log.warning(
                "App %d exited unexpectedly (%s); it will be replaced if needed",
                process.pid,
                status,
            )
            if process.life is Life.ALIVE and group.died_starting(process, now):
                error = self._died_starting(handle, lived, status)
                self._log_spawn_error(group, error)
        else:
            log.info("App %d stopped", process.pid)
        effects = group.process_died(process, now, error, orderly)
        del self.handles[process]
        self._start(self._release(handle))
        self.apply(effects)

    def _died_starting(self, handle: ProcessHandle, lived: float, status: str) -> SpawnError:
        """The error of a process that became ready and died before serving anything:
        explained with the journey, environment and interpreter of its spawn."""
        record = handle.ready.record
        journey = None
        if record is not None:
            journey = copy.deepcopy(record.journey)
            if "finish" in journey.steps:
                journey.fail("finish", time.time())
        return SpawnError(
            f"the app exited {lived:.1f} s after it started ({status}), before it served "
            "anything: it crashes right after starting; starting it again after a back-off",
            category="exited",
            step="finish",
            journey=journey,
            output=handle.child.output_lines(),
            app_root=str(self.spawners[handle.group.name].spec.root),
            environment=record.environment if record is not None else None,
            interpreter=record.interpreter if record is not None else "",
            interpreter_version=record.interpreter_version if record is not None else "",
        )

    async def _release(self, handle: ProcessHandle) -> None:
        await handle.child.finish_output(OUTPUT_DRAIN_TIMEOUT)
        handle.child.release()
        if isinstance(handle.ready.address, str):
            try:
                os.unlink(handle.ready.address)
            except FileNotFoundError:
                pass

    def request_timed_out(self, process: Process, request: str, limit: float) -> None:
        """``request`` ("GET /path") ran on ``process`` for --max-request-time (it got
        504): the process hung; it is killed and replaced."""
        handle = self.handles.get(process)
        if handle is None:
            return
        effects = handle.group.abandon(process, self.now(), RetireReason.MAX_REQUEST_TIME)
        if effects:  # the first of its requests to time out: say it once
            dump = self.spawners[handle.group.name].spec.kind.stack_dump
            log.warning(
                "App %d worked on %s for %gs, longer than max_request_time: answered 504; "
                "killing it and starting another%s",
                process.pid,
                request,
                limit,
                f"; first it logs {dump}, to show where it hung" if dump else "",
            )
        self.apply(effects)

    async def _kill(self, process: Process) -> None:
        """Kill a hung process; a loader that can is asked for its stacks first (SIGQUIT to
        the loader alone, not to what the app started)."""
        handle = self.handles.get(process)
        if handle is None:
            return  # it exited before this task began (see _stop)
        child = handle.child
        if self.spawners[handle.group.name].spec.kind.stack_dump and child.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGQUIT)
            await child.wait(STACK_DUMP_GRACE)  # at once if it exits (it may not)
        self.connections.close(process)
        child.kill()
        await child.exited

    def process_unreachable(self, process: Process, exc: BaseException) -> None:
        """A connection to ``process`` was refused: it cannot serve; retire it."""
        if process.enablement is Enablement.ENABLED:
            log.warning("App %d is unreachable (%s); retiring it", process.pid, exc)
            group = self.handles[process].group
            self.apply(group.detach(process, self.now(), RetireReason.UNREACHABLE))

    # -- shutdown ---------------------------------------------------------------------------------

    def going_away(self) -> None:
        """The server is stopping: every loader is told (``g`` on its owner pipe) to close
        its long-lived connections (WebSockets, with 1001), which would otherwise hold the
        graceful stop until its timeout. Requests in flight go on."""
        for handle in self.handles.values():
            handle.child.tell(GOING_AWAY)

    async def shutdown(
        self, eof_grace: float = STOP_EOF_GRACE, term_grace: float = STOP_TERM_GRACE
    ) -> None:
        """Stop every process and wait for every task this supervisor started; a process
        gets at most ``eof_grace`` seconds to exit once its stdin closes, then at most
        ``term_grace`` after SIGTERM."""
        self.stopping = True
        self._stop_limits = (eof_grace, term_grace)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._memory_timer is not None:
            self._memory_timer.cancel()
            self._memory_timer = None
        for timer in self._wakes.values():
            timer.cancel()
        self._wakes.clear()
        for task in list(self._spawns.values()):
            task.cancel()
        self.apply(self.pool.shutdown())
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _why(group: Group) -> str:
    """Why the pool asked for one more process, for the log."""
    count = len(group.processes)
    if group.spawn_reason == SpawnReason.RECYCLE and group.outdated:
        old = group.outdated[0]
        return (
            f"replacing process {old.pid}, which served its {old.request_limit} requests "
            "(max_requests); it stops once its replacement is ready"
        )
    if group.spawn_reason == SpawnReason.RESTART and group.outdated:
        return (
            f"rolling restart, {len(group.outdated)} old process(es) to replace; each stops "
            "once its replacement is ready"
        )
    if count < group.options.min_instances:
        return f"{count} running, min_instances is {group.options.min_instances}"
    if group.queue:
        return f"{len(group.queue)} request(s) waiting"
    return f"all {count} process(es) are fully busy"


def request_limit(options: GroupOptions) -> int:
    """A new process's --max-requests, with its own share of the jitter (0: no limit), so
    that processes started together are not all replaced together."""
    if not options.max_requests:
        return 0
    return options.max_requests + random.randint(0, options.max_requests_jitter)


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and of its descendants (0 if it is gone)."""
    total = 0
    seen: set[int] = set()
    todo = [pid]
    while todo and len(seen) < MAX_TREE:  # bounded: a fork bomb is not read forever
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            total += int(Path(f"/proc/{current}/statm").read_bytes().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue
        todo.extend(process_children(current))
    return total


#: Most processes tree_rss reads for one app process.
MAX_TREE = 256
