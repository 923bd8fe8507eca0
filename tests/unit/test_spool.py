"""ResponseBuffer: a response's bytes in order, memory first, then a temp file; bounded."""

from __future__ import annotations

import os
from pathlib import Path

from ferryman.http.spool import RESPONSE_MEMORY, ResponseBuffer, SpoolBudget


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def pieces(count: int, size: int) -> list[bytes]:
    """Numbered pieces, so that a lost, doubled or reordered one is seen."""
    return [(b"%08d" % i * (size // 8 + 1))[:size] for i in range(count)]


def drain(buffer: ResponseBuffer) -> bytes:
    out = bytearray()
    while data := buffer.take(100_000):
        out += data
    return bytes(out)


def test_bytes_come_out_in_order_across_memory_and_file(temp_dir: Path) -> None:
    budget = SpoolBudget()
    buffer = ResponseBuffer(budget)
    sent = pieces(40, 30_000)  # 1.2 MB: past the memory part
    for piece in sent[:20]:
        assert buffer.push(piece)
    assert budget.memory <= RESPONSE_MEMORY
    assert budget.disk == buffer.size - budget.memory > 0
    out = buffer.take(50_000) + buffer.take(50_000)  # some out, then more in
    for piece in sent[20:]:
        assert buffer.push(piece)
    out += drain(buffer)
    assert out == b"".join(sent)
    assert buffer.size == 0
    assert (budget.memory, budget.disk) == (0, 0)
    buffer.close()


def test_memory_is_used_again_once_the_file_is_empty(temp_dir: Path) -> None:
    budget = SpoolBudget()
    buffer = ResponseBuffer(budget)
    buffer.push(b"m" * RESPONSE_MEMORY)
    buffer.push(b"f" * 10)  # to the file
    assert budget.disk == 10
    assert drain(buffer) == b"m" * RESPONSE_MEMORY + b"f" * 10
    buffer.push(b"again")
    assert (budget.memory, budget.disk) == (5, 0)
    buffer.close()
    assert (budget.memory, budget.disk) == (0, 0)


def test_max_size_and_the_disk_budget_refuse_what_does_not_fit(temp_dir: Path) -> None:
    budget = SpoolBudget(max_disk=100)
    limited = ResponseBuffer(budget, max_size=RESPONSE_MEMORY + 50)
    assert limited.push(b"a" * RESPONSE_MEMORY)
    assert limited.push(b"b" * 50)
    assert not limited.push(b"c")  # over max_size
    other = ResponseBuffer(budget)
    assert other.push(b"d" * RESPONSE_MEMORY)
    assert other.push(b"e" * 50)
    assert not other.push(b"e" * 1)  # the disk budget is used up (50 + 50 of 100)
    assert budget.disk == 100
    assert not other.push(b"f" * 51)
    limited.close()
    other.close()
    assert (budget.memory, budget.disk) == (0, 0)


def test_close_releases_the_file_on_every_path(temp_dir: Path) -> None:
    fds = open_files()
    budget = SpoolBudget()
    buffer = ResponseBuffer(budget)
    buffer.push(b"x" * (RESPONSE_MEMORY + 1))
    assert open_files() == fds + 1
    buffer.close()
    buffer.close()
    assert open_files() == fds
    assert list(temp_dir.iterdir()) == []
    assert (budget.memory, budget.disk) == (0, 0)
