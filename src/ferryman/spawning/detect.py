"""Detection: what kind of app lives in a directory, and how to start it.

In order, unless ``app_type`` or ``startup_file`` says otherwise:
1. ``app_start_command`` given: a generic app (any program listening on $PORT);
2. Python WSGI: ``passenger_wsgi.py``, ``wsgi.py``, ``app.py``;
3. Node.js: ``app.js``, the ``main`` of ``package.json``, ``index.js``, ``server.js``;
4. a ``Procfile`` with a ``web:`` line: a generic app running that command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import AppNotFound

#: Startup files tried in order for Python WSGI apps (Passenger's name first).
WSGI_STARTUP_FILES = ("passenger_wsgi.py", "wsgi.py", "app.py")
NODE_STARTUP_FILES = ("app.js", "package.json main", "index.js", "server.js")
_NODE_SUFFIXES = (".js", ".cjs", ".mjs")
_PROCFILE_WEB = re.compile(r"^web:\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class AppSpec:
    """What to spawn: the app's type and root, and its startup file or start command."""

    app_type: str  # "wsgi", "node" or "generic"
    root: Path
    startup_file: str = ""
    start_command: str = ""

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)

    @property
    def entry(self) -> str:
        """The startup file or command, for people."""
        return self.start_command or self.startup_file


def detect(config: Config) -> AppSpec:
    root = config.app_dir
    kind = config.app_type
    if config.app_start_command and kind in ("auto", "generic"):
        return AppSpec("generic", root, start_command=config.app_start_command)
    if config.startup_file:
        path = root / config.startup_file
        if not path.is_file():
            raise AppNotFound(
                f"startup file {config.startup_file!r} not found in {root} (from --startup-file)"
            )
        if kind == "auto":
            kind = "node" if path.suffix in _NODE_SUFFIXES else "wsgi"
        if kind == "generic":
            raise AppNotFound("app_type generic needs app_start_command (or a Procfile web: line)")
        return AppSpec(kind, root, config.startup_file)
    if kind in ("auto", "wsgi"):
        for name in WSGI_STARTUP_FILES:
            if (root / name).is_file():
                return AppSpec("wsgi", root, name)
    if kind in ("auto", "node"):
        node_file = _node_startup_file(root)
        if node_file:
            return AppSpec("node", root, node_file)
    if kind in ("auto", "generic"):
        command = _procfile_web(root)
        if command:
            return AppSpec("generic", root, start_command=command)
    looked_for = {
        "auto": [*WSGI_STARTUP_FILES, *NODE_STARTUP_FILES, "Procfile web: line"],
        "wsgi": list(WSGI_STARTUP_FILES),
        "node": list(NODE_STARTUP_FILES),
        "generic": ["app_start_command", "Procfile web: line"],
    }[kind]
    raise AppNotFound(
        f"no app found in {root}: looked for {', '.join(looked_for)}"
        " (use --startup-file or --app-start-command to say how to start it)"
    )


def _node_startup_file(root: Path) -> str:
    if (root / "app.js").is_file():
        return "app.js"
    package = root / "package.json"
    if package.is_file():
        try:
            main = json.loads(package.read_text(encoding="utf-8")).get("main")
        except (ValueError, OSError, AttributeError):
            main = None
        if isinstance(main, str) and (root / main).is_file():
            return main
    for name in ("index.js", "server.js"):
        if (root / name).is_file():
            return name
    return ""


def _procfile_web(root: Path) -> str:
    procfile = root / "Procfile"
    if not procfile.is_file():
        return ""
    try:
        match = _PROCFILE_WEB.search(procfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return ""
    return match.group(1) if match else ""
