"""Node.js fixtures: the Express app's npm dependencies, installed from its lock file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import APPS

EXPRESS = APPS / "node_express"


def ensure_express_installed(app: Path = EXPRESS, path: str | None = None) -> None:
    """``npm ci`` the Express fixture if its node_modules is missing (CI does it up front).

    Without npm (``path``: where to look, default $PATH) the test fails with one line
    saying so, rather than with an error from deep inside a spawn.
    """
    wanted = json.loads((app / "package.json").read_text())["dependencies"]
    if all((app / "node_modules" / name / "package.json").is_file() for name in wanted):
        return
    npm = shutil.which("npm", path=path)
    if npm is None:
        pytest.fail(
            "npm is needed to install the Express fixture app's dependencies "
            "(apt-get install npm; .ci/run does it)",
            pytrace=False,
        )
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
