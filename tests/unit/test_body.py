"""RequestBody: small bodies in memory, large ones in an anonymous temp file until close()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferryman.http.body import READ_CHUNK, SPOOL_THRESHOLD, RequestBody
from ferryman.http.spool import SpoolBudget, SpoolFull


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


# -- the budget across bodies -------------------------------------------------------------


def test_budget_counts_memory_then_disk_and_gives_it_back(temp_dir: Path) -> None:
    """Bytes move from the memory count to the disk count when a body spools; close()
    returns exactly what the body held, once."""
    budget = SpoolBudget(max_disk=0)
    small, big = RequestBody(budget), RequestBody(budget)
    small.append(b"abc")
    big.append(pattern(SPOOL_THRESHOLD))
    assert (budget.memory, budget.disk) == (3 + SPOOL_THRESHOLD, 0)
    big.append(b"x")
    assert not big.in_memory
    assert (budget.memory, budget.disk) == (3, SPOOL_THRESHOLD + 1)
    big.append(b"yz")
    assert budget.disk == SPOOL_THRESHOLD + 3
    big.close()
    big.close()
    small.close()
    assert (budget.memory, budget.disk) == (0, 0)


def test_a_body_that_does_not_fit_on_disk_is_refused(temp_dir: Path) -> None:
    """Past max_disk, SpoolFull, whether at the move to a file or on a later piece."""
    budget = SpoolBudget(max_disk=SPOOL_THRESHOLD + 10)
    first = RequestBody(budget)
    first.append(pattern(SPOOL_THRESHOLD + 5))
    first.append(b"12345")
    with pytest.raises(SpoolFull):
        first.append(b"6")
    second = RequestBody(budget)
    second.append(pattern(SPOOL_THRESHOLD))
    with pytest.raises(SpoolFull):
        second.append(b"!")  # it would move to a file, and the disk budget is used up
    assert budget.fits_on_disk(0)
    assert not budget.fits_on_disk(1)
    first.close()
    second.close()
    assert (budget.memory, budget.disk) == (0, 0)
    assert files_open_in(temp_dir) == []


def test_bodies_go_to_disk_early_when_memory_is_used_up(temp_dir: Path) -> None:
    """With max_memory reached in all, even a small body spools, so memory stays bounded."""
    budget = SpoolBudget(max_disk=0, max_memory=100)
    bodies = [RequestBody(budget) for _ in range(3)]
    for body in bodies:
        body.append(b"m" * 40)
    assert [body.in_memory for body in bodies] == [True, True, False]
    assert budget.memory <= 100
    assert b"".join(bodies[2].file_chunks()) == b"m" * 40
    for body in bodies:
        body.close()
    assert (budget.memory, budget.disk) == (0, 0)
