"""The spool: memory and temp files that hold bytes in transit through the core.

Two kinds of bytes wait in the core: request bodies, received whole before a
process is picked (``body.RequestBody``), and responses the app produced faster
than the client reads them (``ResponseBuffer`` here), so that neither a slow
uploader nor a slow reader ever holds an app process.

One ``SpoolBudget`` bounds what all of them hold at once: ``max_memory`` bytes in
memory (past it, bytes go to temp files early) and ``max_disk`` bytes in temp
files (``--max-spool-size``; past it a request body is refused with 503, and a
response falls back to holding the app back, as an unbuffered stream does).
Temp files are anonymous (unlinked at creation): nothing is left behind, even if
the core is killed.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from typing import IO

#: Bytes all connections together may keep in the core's memory for bodies and buffered
#: responses; past it, they go to temp files however small.
MEMORY_BUDGET = 64 * 1024 * 1024
#: A response's bytes kept in memory (besides the ~1 MiB the client's transport holds)
#: before the rest goes to a temp file.
RESPONSE_MEMORY = 256 * 1024


class SpoolFull(Exception):
    """Bytes need more temp-file space than the budget has left."""


class SpoolBudget:
    """The bytes request bodies and buffered responses hold at once, across connections.

    Invariants: ``memory`` is the sum of the in-memory bytes of the open bodies and
    buffers, ``disk`` the sum of their bytes in temp files; ``disk <= max_disk`` unless
    ``max_disk`` is 0 (unlimited). ``max_memory`` 0 means unlimited too.
    """

    __slots__ = ("disk", "max_disk", "max_memory", "memory")

    def __init__(self, max_disk: int = 0, max_memory: int = MEMORY_BUDGET) -> None:
        self.max_disk = max_disk
        self.max_memory = max_memory
        self.memory = 0
        self.disk = 0

    def fits_on_disk(self, size: int) -> bool:
        return not self.max_disk or self.disk + size <= self.max_disk

    def fits_in_memory(self, size: int) -> bool:
        return not self.max_memory or self.memory + size <= self.max_memory


#: For bytes nobody accounts for (tests, tools).
UNLIMITED = SpoolBudget(0, 0)


class ResponseBuffer:
    """A response on its way to a client that reads slower than the app writes.

    Bytes come out (``take``) in the order they went in (``push``): up to
    ``RESPONSE_MEMORY`` in memory, the rest appended to an anonymous temp file and read
    back from it. ``push`` refuses (returns False) what would take the buffer past
    ``max_size`` or the budget: the caller then holds the app back until the buffer
    drains. ``close()`` gives everything back.
    """

    __slots__ = ("_budget", "_chunks", "_file", "_memory", "_read_at", "_write_at", "max_size")

    def __init__(self, budget: SpoolBudget, max_size: int = 0) -> None:
        self._budget = budget
        self.max_size = max_size
        self._chunks: deque[bytes] = deque()
        #: Bytes in ``_chunks`` (counted in the budget's memory).
        self._memory = 0
        self._file: IO[bytes] | None = None
        #: Offsets in the temp file: bytes from _read_at to _write_at are still to send.
        self._read_at = 0
        self._write_at = 0

    @property
    def size(self) -> int:
        """Bytes held, not yet taken."""
        return self._memory + self._write_at - self._read_at

    def push(self, data: bytes) -> bool:
        """Keep ``data`` after what is held; False (nothing kept) if it does not fit."""
        size = len(data)
        budget = self._budget
        if self.max_size and self.size + size > self.max_size:
            return False
        if (
            self._read_at == self._write_at  # nothing waits in the file: memory keeps order
            and self._memory + size <= RESPONSE_MEMORY
            and budget.fits_in_memory(size)
        ):
            self._chunks.append(data)
            self._memory += size
            budget.memory += size
            return True
        if not budget.fits_on_disk(size):
            return False
        if self._file is None:
            # Owned by this buffer until close(): not a with-block on purpose.
            self._file = tempfile.TemporaryFile(prefix="ferryman-response-")  # noqa: SIM115
        os.pwrite(self._file.fileno(), data, self._write_at)
        self._write_at += size
        budget.disk += size
        return True

    def _read_file(self, limit: int) -> bytes:
        assert self._file is not None
        size = min(limit, self._write_at - self._read_at)
        data = os.pread(self._file.fileno(), size, self._read_at)
        if len(data) != size:
            raise OSError(f"short read from a response buffer file ({len(data)} of {size})")
        self._read_at += size
        self._budget.disk -= size
        if self._read_at == self._write_at:
            # All sent: start the file over, so that its blocks are given back.
            os.ftruncate(self._file.fileno(), 0)
            self._read_at = self._write_at = 0
        return data

    def take(self, limit: int) -> bytes:
        """The next bytes to send (at most ``limit`` from the file; a memory piece whole);
        b"" when nothing is held."""
        if self._chunks:  # memory first: it was filled before the file
            data = self._chunks.popleft()
            self._memory -= len(data)
            self._budget.memory -= len(data)
            return data
        if self._read_at < self._write_at:
            return self._read_file(limit)
        return b""

    def close(self) -> None:
        budget = self._budget
        budget.memory -= self._memory
        budget.disk -= self._write_at - self._read_at
        self._memory = 0
        self._chunks.clear()
        self._read_at = self._write_at = 0
        if self._file is not None:
            self._file.close()
            self._file = None
