"""Errors that reach the user: each says what went wrong in one line."""

from __future__ import annotations

import re
import secrets
import time
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .spawning.journey import Journey


class FerrymanError(Exception):
    """Base class for errors Ferryman reports to the user."""


class ConfigError(FerrymanError):
    """Invalid configuration or command line: one line, exit code 2."""

    exit_code = 2


class AlreadyRunning(ConfigError):
    """The pid file names a server that is running: one line, exit code 1."""

    exit_code = 1


class AppNotFound(ConfigError):
    """No startup file in the app directory."""


class SpawnError(FerrymanError):
    """An app process could not be started. Carries everything needed to explain why.

    ``category`` names the kind of failure (``import_error``, ``timeout``, ... see
    ``spawning.error_page.CATEGORIES``), ``step`` the journey step that failed,
    ``summary`` one line for the log, ``details`` the app's traceback if any.
    ``error_id`` ties the log line, the report file and the error page together.
    """

    def __init__(
        self,
        summary: str,
        *,
        category: str,
        step: str,
        journey: Journey | None = None,
        output: list[str] | None = None,
        details: str = "",
        app_root: str = "",
        environment: list[tuple[str, str]] | None = None,
        interpreter: str = "",
        interpreter_version: str = "",
    ) -> None:
        super().__init__(summary)
        self.error_id = secrets.token_hex(6)
        self.created_at = time.time()
        self.summary = summary
        self.category = category
        self.step = step
        self.journey = journey
        self.output = output or []
        self.details = details
        self.app_root = app_root
        #: The app's environment with secret-looking values redacted.
        self.environment = environment or []
        self.interpreter = interpreter
        self.interpreter_version = interpreter_version
        self.ferryman_version = __version__
        #: Set once the error report has been written.
        self.report_path: str | None = None
        #: Rendered error pages, cached: every waiting request gets the same one.
        self.pages: dict[bool, bytes] = {}


#: Variable names containing one of these (in upper case) have their values hidden.
SECRET_NAME_PARTS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE", "SIGNATURE")
#: ... and so do names with one of these as a ``_``-separated word (``DB_PASS``); as mere
#: substrings they would hide innocent names such as PASSENGER_APP_ENV or KEYBOARD.
SECRET_NAME_WORDS = ("PASS", "KEY", "AUTH", "COOKIE", "SESSION", "SALT", "DSN")
REDACTED = "[redacted]"
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*):[^@\s]*@")


def redacted_environment(env: dict[str, str]) -> list[tuple[str, str]]:
    """The environment, sorted, with secret-looking values hidden.

    A value is hidden when its name looks secret (SECRET_NAME_PARTS, SECRET_NAME_WORDS);
    passwords inside URLs (``scheme://user:password@host``) are hidden in every value.
    """
    shown = []
    for name in sorted(env):
        if looks_secret(name):
            shown.append((name, REDACTED))
        else:
            shown.append((name, _URL_PASSWORD.sub(rf"\1:{REDACTED}@", env[name])))
    return shown


def looks_secret(name: str) -> bool:
    upper = name.upper()
    if any(part in upper for part in SECRET_NAME_PARTS):
        return True
    words = upper.split("_")
    return upper.endswith(_KEY_ENDINGS) or any(word in words for word in SECRET_NAME_WORDS)


#: Names run together with KEY (APIKEY), without matching innocent ones (MONKEY).
_KEY_ENDINGS = ("APIKEY", "ACCESSKEY", "SECRETKEY", "PRIVATEKEY", "SIGNINGKEY", "AUTHKEY")
