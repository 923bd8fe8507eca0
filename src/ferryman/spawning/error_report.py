"""ErrorReports: one HTML file per spawn failure, with the newest ``limit`` kept.

A report is the friendly error page, written whatever the page setting, so an
operator in production can read what the browser was not shown. Files are named
``ferryman-error-<ID>.html``; after each write, reports beyond the newest
``limit`` are deleted (Passenger keeps its reports forever and fills /tmp).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError, SpawnError
from .error_page import page_for

log = logging.getLogger("ferryman")

PREFIX = "ferryman-error-"
SUFFIX = ".html"


class ErrorReports:
    def __init__(self, directory: str | None, limit: int) -> None:
        self.directory = Path(directory or tempfile.gettempdir())
        self.limit = limit

    def check(self) -> None:
        """Refuse a report directory that cannot take reports (a config error: exit 2)."""
        if self.limit <= 0:
            return
        if not self.directory.is_dir() or not os.access(self.directory, os.W_OK | os.X_OK):
            raise ConfigError(
                f"invalid value {str(self.directory)!r} for error_report_dir: "
                "must be an existing directory Ferryman can write to"
            )

    def write(self, error: SpawnError) -> str | None:
        """Write the report for ``error``; returns its path (None if reports are off or failed)."""
        if self.limit <= 0:
            return None
        path = self.directory / f"{PREFIX}{error.error_id}{SUFFIX}"
        try:
            # O_EXCL: never follow or overwrite a file someone else placed there.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as report:  # owns fd from here, on every path
                report.write(page_for(error, friendly=True))
        except OSError as exc:
            log.warning("Cannot write the error report %s: %s", path, exc.strerror or exc)
            return None
        self.prune()
        return str(path)

    def reports(self) -> list[Path]:
        """Existing reports, oldest first."""
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.startswith(PREFIX) and entry.name.endswith(SUFFIX):
                        try:
                            found.append((entry.stat().st_mtime_ns, entry.name))
                        except FileNotFoundError:
                            continue
        except OSError:
            return []
        return [self.directory / name for _, name in sorted(found)]

    def prune(self) -> None:
        existing = self.reports()
        for old in existing[: max(0, len(existing) - self.limit)]:
            try:
                old.unlink()
            except OSError:
                pass  # gone already, or not ours to delete (another user's, a directory)
