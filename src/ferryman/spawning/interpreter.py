"""Interpreters: the one an app kind runs under, found and checked before Ferryman listens.

``--python`` / ``--nodejs`` name a program: a path (relative paths are relative to
the directory ``ferryman`` was started in, as for every command-line tool) or a
name looked up on ``PATH``. It must exist, be executable and answer ``--version``
with a version the loader supports; otherwise the start stops with one line naming
the setting, the value and what is wrong (exit code 2), before anything listens.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

#: How long an interpreter may take to answer --version.
VERSION_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class InterpreterCheck:
    """How to ask an interpreter for its version, and the oldest one the loader supports."""

    #: For people: "Python", "Node.js".
    language: str
    #: Finds the version in what ``--version`` printed (group 1: dotted numbers).
    pattern: str
    minimum: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Interpreter:
    path: str
    #: As the interpreter printed it, e.g. "Python 3.11.7", "v20.20.2".
    version: str


def find_interpreter(
    setting: str, value: str, origin: str, check: InterpreterCheck, cwd: Path
) -> Interpreter:
    """The interpreter ``value`` names, checked; ConfigError with one line if it is unusable."""

    def invalid(why: str) -> ConfigError:
        return ConfigError(
            f"invalid value {value!r} for {setting} (from {origin}): must be a "
            f"{check.language} {_dotted(check.minimum)} (or newer) interpreter; {why}"
        )

    if os.sep in value:
        path = Path(value) if os.path.isabs(value) else cwd / value
        path = Path(os.path.normpath(path))
        if path.is_dir():
            raise invalid(
                f"{path} is a directory (the interpreter is inside it, e.g. {path}/bin/...)"
            )
        if not path.exists():
            raise invalid(f"{path} does not exist")
        if not os.access(path, os.X_OK):
            raise invalid(f"{path} is not executable")
        found = str(path)
    else:
        which = shutil.which(value)
        if which is None:
            raise invalid(f"{value!r} was not found on PATH")
        found = os.path.abspath(which)
    try:
        result = subprocess.run(
            [found, "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise invalid(f"{found} could not be run: {exc}") from exc
    printed = (result.stdout + result.stderr).strip()
    match = re.search(check.pattern, printed)
    if result.returncode != 0 or match is None:
        shown = printed.splitlines()[0][:80] if printed else "nothing"
        raise invalid(f"{found} --version printed {shown!r}")
    version = tuple(int(part) for part in match.group(1).split("."))
    if version < check.minimum:
        raise invalid(f"{found} is {match.group(0)}")
    return Interpreter(found, match.group(0))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
