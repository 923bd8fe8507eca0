"""RequestBody: small bodies in memory, large ones in an anonymous temp file until close()."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from ferryman.http.body import READ_CHUNK, SPOOL_THRESHOLD, RequestBody


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private directory that tempfile uses while the test runs."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def files_open_in(directory: Path) -> list[str]:
    """What this process's open file descriptors point to inside ``directory``."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used
        if target.startswith(str(directory) + "/"):
            targets.append(target)
    return targets


def pattern(size: int) -> bytes:
    """Bytes that differ along their length, so a misplaced piece is noticed."""
    block = bytes(range(251))  # a prime length: pieces never line up with it
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize(
    "chunks",
    [[], [b""], [b"abc"], [b"a", b"", b"bc"], [pattern(SPOOL_THRESHOLD)]],
)
def test_small_body_stays_in_memory(temp_dir: Path, chunks: list[bytes]) -> None:
    """Up to SPOOL_THRESHOLD bytes, the body is kept as the chunks received."""
    fds = open_fds()
    body = RequestBody()
    for chunk in chunks:
        body.append(chunk)
    assert body.in_memory
    assert body.size == sum(map(len, chunks))
    assert b"".join(body.memory_chunks()) == b"".join(chunks)
    assert open_fds() == fds
    body.close()


@pytest.mark.parametrize(
    "sizes",
    [
        [SPOOL_THRESHOLD + 1],
        [SPOOL_THRESHOLD, 1],
        [1000, SPOOL_THRESHOLD, 5],
        [READ_CHUNK] * 9,
        [300_001] * 12,
    ],
)
def test_large_body_moves_to_a_file_and_reads_back(temp_dir: Path, sizes: list[int]) -> None:
    """Past SPOOL_THRESHOLD the body is in a temp file whose chunks give back every byte."""
    data = pattern(sum(sizes))
    body = RequestBody()
    offset = 0
    for size in sizes:
        body.append(data[offset : offset + size])
        offset += size
    assert not body.in_memory
    assert body.size == len(data)
    chunks = list(body.file_chunks())
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= READ_CHUNK for chunk in chunks)
    body.close()


def test_file_chunks_can_be_read_twice(temp_dir: Path) -> None:
    """Reading the spooled body again starts from its beginning (a retry can resend it)."""
    data = pattern(SPOOL_THRESHOLD + 12345)
    body = RequestBody()
    body.append(data)
    assert b"".join(body.file_chunks()) == data
    body.append(b"more")
    assert b"".join(body.file_chunks()) == data + b"more"
    body.close()


def test_spooled_body_leaves_nothing_in_the_temp_dir(temp_dir: Path) -> None:
    """The temp file is in the temp directory but has no name there, from the start."""
    body = RequestBody()
    body.append(pattern(SPOOL_THRESHOLD + 1))
    assert not body.in_memory
    assert len(files_open_in(temp_dir)) == 1, "the spool file is not in tempfile's directory"
    assert list(temp_dir.iterdir()) == []
    body.close()
    assert files_open_in(temp_dir) == []
    assert list(temp_dir.iterdir()) == []


def test_close_releases_the_file(temp_dir: Path) -> None:
    """The spooled body holds one file descriptor until close(); close() is safe to repeat."""
    fds = open_fds()
    body = RequestBody()
    body.append(pattern(SPOOL_THRESHOLD + 1))
    assert open_fds() == fds + 1
    body.close()
    assert open_fds() == fds
    body.close()
    assert open_fds() == fds


def test_close_forgets_an_in_memory_body(temp_dir: Path) -> None:
    """After close() an in-memory body no longer holds its chunks."""
    body = RequestBody()
    body.append(b"secret")
    body.close()
    assert body.memory_chunks() == []
