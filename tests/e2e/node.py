"""Node.js fixtures: the Express app's npm dependencies, installed from its lock file."""

from __future__ import annotations

import shutil
import subprocess

from .harness import APPS

EXPRESS = APPS / "node_express"


def ensure_express_installed() -> None:
    """``npm ci`` the Express fixture if its node_modules is missing (CI does it up front)."""
    if (EXPRESS / "node_modules" / "express" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    assert npm, "npm is needed to install the Express fixture app's dependencies"
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=EXPRESS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
