"""The instance registry: which directories are running servers, which are stale, and
how a command picks one. Real directories and real processes, no server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ferryman.instance import (
    InstanceDir,
    NoInstance,
    pick_instance,
    remove_stale_instances,
    running_instances,
)


def fake_instance(directory: Path, name: str, pid: int, started_at: float) -> Path:
    path = directory / f"ferryman.{name}"
    path.mkdir(mode=0o700)
    (path / "properties.json").write_text(
        json.dumps({"pid": pid, "started_at": started_at, "addresses": ["http://127.0.0.1:1"]})
    )
    return path


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_live_dead_and_reused_pids(tmp_path: Path) -> None:
    """A running server is listed; a gone one is not, nor one whose pid now belongs to a
    process that started after it wrote its properties (pid reuse)."""
    now = time.time()
    fake_instance(tmp_path, "live", os.getpid(), now)
    fake_instance(tmp_path, "dead", dead_pid(), now - 10)
    # pid 1 started long before "an hour ago": not reused. Our own process started before
    # now, but after a server that claims to have started yesterday: that pid was reused.
    fake_instance(tmp_path, "reused", os.getpid(), now - 86400 * 365 * 30)
    assert [i.name for i in running_instances(tmp_path)] == ["live"]
    removed = remove_stale_instances(tmp_path)
    assert sorted(p.name for p in removed) == ["ferryman.dead", "ferryman.reused"]
    assert [p.name for p in tmp_path.iterdir()] == ["ferryman.live"]


def test_a_directory_without_properties_is_stale_only_when_old(tmp_path: Path) -> None:
    young = tmp_path / "ferryman.young"
    old = tmp_path / "ferryman.old"
    young.mkdir()
    old.mkdir()
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    assert [p.name for p in remove_stale_instances(tmp_path)] == ["ferryman.old"]
    assert young.exists()


def test_pick_by_name_or_pid_and_refuse_ambiguity(tmp_path: Path) -> None:
    with pytest.raises(NoInstance, match="no Ferryman instance is running"):
        pick_instance(None, tmp_path)
    fake_instance(tmp_path, "one", os.getpid(), time.time())
    assert pick_instance(None, tmp_path).name == "one"
    fake_instance(tmp_path, "two", os.getppid(), time.time())
    with pytest.raises(NoInstance, match="2 Ferryman instances are running") as error:
        pick_instance(None, tmp_path)
    assert "one" in str(error.value) and "two" in str(error.value)
    assert pick_instance("two", tmp_path).pid == os.getppid()
    assert pick_instance(str(os.getpid()), tmp_path).name == "one"
    with pytest.raises(NoInstance, match="no Ferryman instance 'three'"):
        pick_instance("three", tmp_path)


def test_pick_by_port_or_by_the_watchdogs_pid(tmp_path: Path) -> None:
    for name, pid, port, watchdog in (
        ("one", os.getpid(), 3000, 11),
        ("two", os.getppid(), 3001, 12),
    ):
        path = tmp_path / f"ferryman.{name}"
        path.mkdir(mode=0o700)
        (path / "properties.json").write_text(
            json.dumps(
                {"pid": pid, "started_at": time.time(), "watchdog_pid": watchdog,
                 "addresses": [f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port + 400}"]}
            )
        )  # fmt: skip
    assert pick_instance(None, tmp_path, port=3001).name == "two"
    assert pick_instance(None, tmp_path, port=3400).name == "one"  # its TLS port
    assert pick_instance("12", tmp_path).name == "two"
    with pytest.raises(NoInstance, match="no Ferryman instance on port 4000"):
        pick_instance(None, tmp_path, port=4000)


def test_password_files_are_private_from_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    instance = InstanceDir.create()
    try:
        old_umask = os.umask(0)  # even with a permissive umask
        try:
            passwords = instance.write_passwords("given-password")
        finally:
            os.umask(old_umask)
        assert passwords["admin"] == "given-password"
        assert len(passwords["readonly"]) >= 24
        for name in ("admin.password", "readonly.password"):
            assert stat.S_IMODE((instance.path / name).stat().st_mode) == 0o600
        assert stat.S_IMODE(instance.path.stat().st_mode) == 0o700
    finally:
        instance.remove()
    assert not instance.path.exists()
