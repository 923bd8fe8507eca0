"""RequestBody: a request body buffered in the core, in memory and then in a temp file.

The body is complete before a process is checked out, so a slow upload never
holds an app process. Small bodies stay in memory; past ``SPOOL_THRESHOLD`` the
body moves to an anonymous temporary file (unlinked at creation, so nothing is
left behind even if the core is killed). ``close()`` releases the file; its
owner (the exchange) calls it on every path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

SPOOL_THRESHOLD = 1024 * 1024
READ_CHUNK = 256 * 1024


class RequestBody:
    __slots__ = ("_chunks", "_file", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.size = 0

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > SPOOL_THRESHOLD:
            # Owned by this object until close(): not a with-block on purpose.
            spool = tempfile.TemporaryFile(prefix="ferryman-body-")  # noqa: SIM115
            try:
                spool.writelines(self._chunks)
            except BaseException:
                spool.close()
                raise
            self._file = spool
            self._chunks = []

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
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
