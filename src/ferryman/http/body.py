"""RequestBody: a request body buffered in the core, in memory and then in a temp file.

The body is complete before a process is checked out, so a slow upload never
holds an app process. Small bodies stay in memory; past ``SPOOL_THRESHOLD`` the
body moves to an anonymous temporary file (unlinked at creation, so nothing is
left behind even if the core is killed). ``close()`` releases the file; its
owner (the exchange) calls it on every path.

What bodies hold across all connections is bounded by the ``SpoolBudget``: in
memory (past ``max_memory`` in all, bodies go to temp files early) and on disk
(past ``max_disk``, a body that would need more is refused with ``SpoolFull``,
which the front answers with 503). So no number of slow uploads can fill the
core's memory or its temp directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

from .spool import UNLIMITED, SpoolBudget, SpoolFull

SPOOL_THRESHOLD = 1024 * 1024
READ_CHUNK = 256 * 1024


class RequestBody:
    __slots__ = ("_budget", "_chunks", "_file", "_held", "size")

    def __init__(self, budget: SpoolBudget = UNLIMITED) -> None:
        self._budget = budget
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.size = 0
        #: Bytes counted in the budget for this body (in memory, or on disk once spooled).
        self._held = 0

    def append(self, data: bytes) -> None:
        """Add a piece of the body; SpoolFull if it needs disk the budget does not have."""
        size = len(data)
        budget = self._budget
        if self._file is not None:
            if not budget.fits_on_disk(size):
                raise SpoolFull
            budget.disk += size
            self._held += size
            self.size += size
            self._file.write(data)
            return
        self.size += size
        self._held += size
        budget.memory += size
        self._chunks.append(data)
        if self.size > SPOOL_THRESHOLD or (budget.max_memory and budget.memory > budget.max_memory):
            self._spool()

    def _spool(self) -> None:
        """Move the body from memory to an anonymous temp file."""
        budget = self._budget
        if not budget.fits_on_disk(self._held):
            raise SpoolFull
        # Owned by this object until close(): not a with-block on purpose.
        spool = tempfile.TemporaryFile(prefix="ferryman-body-")  # noqa: SIM115
        try:
            spool.writelines(self._chunks)
        except BaseException:
            spool.close()
            raise
        self._file = spool
        self._chunks = []
        budget.memory -= self._held
        budget.disk += self._held

    @property
    def in_memory(self) -> bool:
        return self._file is None

    def memory_chunks(self) -> list[bytes]:
        """The body, when it is in memory."""
        assert self._file is None
        return self._chunks

    def file_chunks(self) -> Iterator[bytes]:
        """The body read back from the temp file, in pieces."""
        assert self._file is not None
        self._file.flush()
        self._file.seek(0)
        while chunk := self._file.read(READ_CHUNK):
            yield chunk

    def close(self) -> None:
        held = self._held
        self._held = 0
        self._chunks = []
        if self._file is not None:
            self._budget.disk -= held
            self._file.close()
            self._file = None
        else:
            self._budget.memory -= held
