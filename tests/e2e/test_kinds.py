"""App kinds: adding one is one registry entry; loaders and core agree on the handshake.

The first test registers a made-up kind (its loader is tests/apps/fake_kind/loader.py,
under Python) and shows that detection, the ``app_type`` setting and the spawner take
it with nothing else changed, by spawning a real process of it and asking it over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ferryman.config import resolve
from ferryman.errors import SpawnError
from ferryman.instance import InstanceDir
from ferryman.spawning.detect import detect
from ferryman.spawning.kinds import HANDSHAKE_VERSION, KINDS, LOADERS, AppKind, first_file
from ferryman.spawning.spawner import Spawner

from .harness import APPS

FAKE = AppKind(
    name="fake",
    title="A made-up kind",
    find=first_file("fake_app.txt"),
    looked_for=("fake_app.txt",),
    suffixes=(".txt",),
    interpreter_setting="python",
    loader=APPS / "fake_kind" / "loader.py",
    protocol="http",
)


@contextmanager
def registered(kind: AppKind) -> Iterator[None]:
    """The one thing adding a kind takes: its entry in the registry."""
    KINDS[kind.name] = kind
    try:
        yield
    finally:
        del KINDS[kind.name]


def http_get_unix(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def spawn_once(app_dir: Path, cli: dict[str, str], env: dict[str, str]) -> bytes:
    """Detect, spawn one process of the app, GET / from it, stop it; the response."""
    config, _ = resolve(app_dir, cli, env)
    spec = detect(config)

    async def scenario() -> bytes:
        instance = InstanceDir.create()
        try:
            spawner = Spawner(config, spec, instance)
            child, ready = await spawner.spawn()
            try:
                assert ready.protocol == "http"
                assert isinstance(ready.address, str)
                return await asyncio.to_thread(http_get_unix, ready.address)
            finally:
                await child.stop(2.0, 2.0)
                await child.finish_output(1.0)
                child.release()
        finally:
            instance.remove()

    return asyncio.run(scenario())


def test_a_new_kind_is_one_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_app.txt").write_bytes(b"served by a kind the core never heard of\n")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with registered(FAKE):
        config, _ = resolve(tmp_path, {"app_type": "fake"}, {})
        assert detect(config).app_type == "fake"
        config, _ = resolve(tmp_path, {}, {})
        spec = detect(config)  # found by its startup file, like any kind
        assert (spec.app_type, spec.startup_file, spec.kind.title) == (
            "fake", "fake_app.txt", "A made-up kind"
        )  # fmt: skip
        response = spawn_once(tmp_path, {}, {})
    assert response.startswith(b"HTTP/1.")
    assert response.endswith(b"\r\n\r\nserved by a kind the core never heard of\n")


def test_a_loader_of_another_handshake_version_is_a_clear_spawn_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_app.txt").write_bytes(b"x\n")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("FAKE_HANDSHAKE_VERSION", str(HANDSHAKE_VERSION + 1))
    with registered(FAKE), pytest.raises(SpawnError) as caught:
        spawn_once(tmp_path, {}, {})
    error = caught.value
    assert (error.category, error.step) == ("loader_mismatch", "handshake")
    assert f"handshake version {HANDSHAKE_VERSION + 1}" in error.summary
    assert "reinstall Ferryman" in error.summary


# -- every loader agrees with the core -------------------------------------------------------

LOADER_SOURCES = {
    kind.name: kind.loader.read_text() for kind in KINDS.values() if kind.loader is not None
}
# The ASGI loader runs the WSGI loader's handshake and app loading (it loads that file).
LOADER_SOURCES["asgi"] += LOADER_SOURCES["wsgi"]
_VERSION = re.compile(r"HANDSHAKE_VERSION\s*=\s*(\d+)")
#: step("name", ...) calls and {"step": "name"} / {step: "name"} messages.
_STEP_CALL = re.compile(r"""step(?:\(|["']?\s*:)\s*["'](\w+)["']""")


@pytest.mark.parametrize("name", sorted(LOADER_SOURCES))
def test_each_loader_speaks_the_cores_handshake_version(name: str) -> None:
    versions = _VERSION.findall(LOADER_SOURCES[name])
    assert versions == [str(HANDSHAKE_VERSION)], versions


@pytest.mark.parametrize("name", sorted(LOADER_SOURCES))
def test_each_loader_reports_only_its_kinds_loader_steps(name: str) -> None:
    kind = KINDS[name]
    reported = set(_STEP_CALL.findall(LOADER_SOURCES[name]))
    loader_steps = {step for step, side, _ in kind.steps if side == "loader"}
    assert reported == loader_steps


@pytest.mark.parametrize("name", sorted(LOADER_SOURCES))
def test_each_loader_reports_its_kinds_protocol(name: str) -> None:
    kind = KINDS[name]
    source = LOADER_SOURCES[name]
    assert re.search(rf"""(PROTOCOL\s*=|protocol:)\s*["']{kind.protocol}["']""", source)


def test_every_kind_has_its_loader_in_the_package() -> None:
    for kind in KINDS.values():
        if kind.loader is not None:
            assert kind.loader.parent == LOADERS
            assert kind.loader.is_file()
