"""InstanceDir: the running server's directory under $TMPDIR (mode 0700).

It holds ``properties.json`` (pid, version, addresses) for status tools and
``apps/`` with the app processes' Unix sockets. The core creates it at start
and removes it on a clean exit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: sockaddr_un.sun_path is 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH = 107


class InstanceDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.apps = path / "apps"

    @classmethod
    def create(cls) -> InstanceDir:
        path = Path(tempfile.mkdtemp(prefix="ferryman."))
        instance = cls(path)
        try:
            os.chmod(path, 0o700)
            instance.apps.mkdir(mode=0o700)
            longest = instance.app_socket(999999)
            if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
                raise ConfigError(
                    f"the temp directory {tempfile.gettempdir()!r} is too deep for Unix socket"
                    f" paths ({len(longest)} > {MAX_SOCKET_PATH} bytes): set TMPDIR to a"
                    " shorter directory"
                )
        except BaseException:
            instance.remove()
            raise
        return instance

    def app_socket(self, number: int) -> str:
        return str(self.apps / f"{number}.sock")

    def write_properties(self, properties: dict[str, Any]) -> None:
        target = self.path / "properties.json"
        temp = self.path / "properties.json.new"
        temp.write_text(json.dumps(properties, indent=2) + "\n")
        temp.replace(target)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
