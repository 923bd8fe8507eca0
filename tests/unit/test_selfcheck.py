"""--selfcheck: the pool is verified after every applied batch of effects; a broken
invariant stops the server loudly instead of serving on from a corrupt state."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ferryman.config import Config, resolve
from ferryman.pool import GroupOptions, Kill, Pool, Stop
from ferryman.spawning.error_report import ErrorReports
from ferryman.supervisor import Supervisor


class NoConnections:
    def open(self, process: object, address: object, protocol: str, concurrency: int) -> None:
        pass

    def close(self, process: object) -> None:
        pass


def check(pool: Pool, selfcheck: bool = True) -> list[AssertionError]:
    """Apply an empty batch through a Supervisor; the broken invariants it reported."""
    fired: list[AssertionError] = []

    async def scenario() -> None:
        supervisor = Supervisor(
            pool,
            {},
            ErrorReports(None, 0),
            NoConnections(),
            selfcheck=selfcheck,
            on_broken_invariant=fired.append,
        )
        supervisor.apply([])

    asyncio.run(scenario())
    return fired


def test_a_sound_pool_passes() -> None:
    pool = Pool(2)
    pool.add_group("app", GroupOptions(min_instances=0))
    assert check(pool) == []


def test_a_broken_invariant_fires_the_self_check() -> None:
    pool = Pool(2)
    group = pool.add_group("app", GroupOptions(min_instances=0))
    group.spawning = True
    process, _ = group.spawn_done(pid=42, concurrency=1, now=0.0)
    process.sessions = 5  # more sessions than its concurrency: deliberately broken
    fired = check(pool)
    assert len(fired) == 1
    assert "more sessions than its limit" in str(fired[0])


def test_a_process_without_its_child_fires_the_self_check() -> None:
    """The driver's own invariant: every listed process has a known child."""
    pool = Pool(2)
    group = pool.add_group("app", GroupOptions(min_instances=0))
    group.spawning = True
    group.spawn_done(pid=42, concurrency=1, now=0.0)  # reported ready behind the driver's back
    fired = check(pool)
    assert len(fired) == 1
    assert "no child known" in str(fired[0])


def test_without_the_setting_nothing_is_checked() -> None:
    pool = Pool(2)
    group = pool.add_group("app", GroupOptions(min_instances=0))
    group.spawning = True
    process, _ = group.spawn_done(pid=42, concurrency=1, now=0.0)
    process.sessions = 5
    assert check(pool, selfcheck=False) == []


def test_the_setting_comes_from_the_environment(tmp_path: Path) -> None:
    config, _ = resolve(tmp_path, {}, {"FERRYMAN_SELFCHECK": "1"})
    assert config.selfcheck is True
    assert Config(app_dir=tmp_path).selfcheck is False


def test_a_stop_or_kill_for_a_process_that_already_exited_is_nothing_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stop and Kill run as tasks: a process can exit by itself (its own SIGTERM, as under
    systemd's control-group kill) and be reaped before the task's first step. That was a
    KeyError, logged as an internal error (seen in CI); now there is nothing to do."""
    pool = Pool(2)
    group = pool.add_group("app", GroupOptions(min_instances=0))
    group.spawning = True
    process, _ = group.spawn_done(pid=42, concurrency=1, now=0.0)

    async def scenario() -> None:
        supervisor = Supervisor(pool, {}, ErrorReports(None, 0), NoConnections())
        supervisor.apply([Stop(process), Kill(process)])  # no child known: it is gone
        for _ in range(3):
            await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="ferryman"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == []
