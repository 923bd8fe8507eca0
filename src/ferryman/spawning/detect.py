"""Detection: what kind of app lives in a directory, and its startup file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import AppNotFound

#: Startup files tried in order for Python WSGI apps (Passenger's name first).
WSGI_STARTUP_FILES = ("passenger_wsgi.py", "wsgi.py", "app.py")


@dataclass(frozen=True, slots=True)
class AppSpec:
    """What to spawn: the app's type, root directory and startup file (relative to root)."""

    app_type: str
    root: Path
    startup_file: str

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)


def detect(config: Config) -> AppSpec:
    root = config.app_dir
    if config.startup_file:
        path = root / config.startup_file
        if not path.is_file():
            raise AppNotFound(
                f"startup file {config.startup_file!r} not found in {root} (from --startup-file)"
            )
        return AppSpec(_type_for(config, path), root, config.startup_file)
    for name in WSGI_STARTUP_FILES:
        if (root / name).is_file():
            return AppSpec(_type_for(config, root / name), root, name)
    raise AppNotFound(
        f"no app found in {root}: looked for {', '.join(WSGI_STARTUP_FILES)}"
        " (use --startup-file to name another file)"
    )


def _type_for(config: Config, path: Path) -> str:
    if config.app_type != "auto":
        return config.app_type
    return "wsgi"
