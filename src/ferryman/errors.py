"""Errors that reach the user: each says what went wrong in one line."""

from __future__ import annotations


class FerrymanError(Exception):
    """Base class for errors Ferryman reports to the user."""


class ConfigError(FerrymanError):
    """Invalid configuration or command line: one line, exit code 2."""

    exit_code = 2


class AppNotFound(ConfigError):
    """No startup file in the app directory."""


class SpawnError(FerrymanError):
    """An app process could not be started. Carries everything needed to explain why.

    ``category`` names the kind of failure (e.g. ``import_error``, ``timeout``),
    ``step`` the journey step that failed, ``summary`` one line for the log.
    """

    def __init__(
        self,
        summary: str,
        *,
        category: str,
        step: str,
        journey: object = None,
        output: list[str] | None = None,
        details: str = "",
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.category = category
        self.step = step
        self.journey = journey
        self.output = output or []
        self.details = details
