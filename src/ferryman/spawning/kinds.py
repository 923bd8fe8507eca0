"""App kinds: one entry per kind of app Ferryman runs, with everything that differs.

Detection, the spawner, the banner and the ``app_type`` setting all read this
registry, so adding a kind (ASGI, Rack...) is adding an entry here — and its
loader in ``loaders/`` — not editing if/else chains across the core.

A kind is started either through one of Ferryman's loaders under the app's
interpreter (``loader`` set: the loader reports its journey and ``ready`` on the
handshake fd) or by the app's own command listening on ``$PORT`` (``loader``
None). Detection tries the kinds in registry order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .interpreter import InterpreterCheck
from .journey import ASGI_STEPS, COMMAND_STEPS, LOADER_STEPS, StepSpec

LOADERS = Path(__file__).resolve().parent.parent / "loaders"
#: The version of the handshake (journey lines, ready, error) that loaders and the core
#: speak; every loader sends it in its ready message, and a mismatch fails the spawn.
HANDSHAKE_VERSION = 1


@dataclass(frozen=True, slots=True)
class AppKind:
    #: The ``--app-type`` value.
    name: str
    #: For people: the banner, the log, error pages.
    title: str
    #: Finds the kind's entry in an app directory: a startup file (relative path) for
    #: loader kinds, a command for command kinds; "" when there is none.
    find: Callable[[Path], str]
    #: What ``find`` looks for, for the "no app found" message.
    looked_for: tuple[str, ...]
    #: A ``--startup-file`` with one of these suffixes is of this kind.
    suffixes: tuple[str, ...] = ()
    #: The setting that names the interpreter running the loader (None: own command).
    interpreter_setting: str | None = None
    #: How that interpreter is checked at start (its version, the oldest supported).
    interpreter_check: InterpreterCheck | None = None
    #: The loader file the interpreter runs (None: the app's own command).
    loader: Path | None = None
    #: What the core speaks to the process: "session" (the session protocol) or "http".
    protocol: str = "http"
    #: The steps of its spawn journey.
    steps: tuple[StepSpec, ...] = LOADER_STEPS
    #: Its processes serve --thread-count requests at once (else any number).
    threaded: bool = False
    #: What its loader writes to stderr on SIGQUIT, for the log before a hung process is
    #: killed (--max-request-time); "" = it is not asked (SIGQUIT would kill an app).
    stack_dump: str = ""


def first_file(*names: str) -> Callable[[Path], str]:
    def find(root: Path) -> str:
        return next((name for name in names if (root / name).is_file()), "")

    return find


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
    return first_file("index.js", "server.js")(root)


#: manage.py's ``os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")``.
_DJANGO_SETTINGS = re.compile(
    r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([A-Za-z_][\w.]*)\.settings["']"""
)


def django_wsgi_file(root: Path) -> str:
    """A Django project's ``<project>/wsgi.py`` (see ``django_file``)."""
    return django_file(root, "wsgi.py")


def django_asgi_file(root: Path) -> str:
    """A Django project's ``<project>/asgi.py`` (see ``django_file``)."""
    return django_file(root, "asgi.py")


def django_file(root: Path, name: str) -> str:
    """A Django project's ``<project>/<name>``, found from ``manage.py``: the package its
    DJANGO_SETTINGS_MODULE names, else the one package with both settings.py and it."""
    manage = root / "manage.py"
    if not manage.is_file():
        return ""
    try:
        match = _DJANGO_SETTINGS.search(manage.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        match = None
    if match:
        candidate = match.group(1).replace(".", "/") + "/" + name
        if (root / candidate).is_file():
            return candidate
    found = sorted(
        f"{path.parent.name}/{name}"
        for path in root.glob("*/settings.py")
        if (path.parent / name).is_file()
    )
    return found[0] if len(found) == 1 else ""


def _wsgi_startup_file(root: Path) -> str:
    return first_file("passenger_wsgi.py", "wsgi.py", "app.py")(root) or django_wsgi_file(root)


_PROCFILE_WEB = re.compile(r"^web:\s*(.+?)\s*$", re.MULTILINE)


def procfile_web_command(root: Path) -> str:
    procfile = root / "Procfile"
    if not procfile.is_file():
        return ""
    try:
        match = _PROCFILE_WEB.search(procfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return ""
    return match.group(1) if match else ""


WSGI = AppKind(
    name="wsgi",
    title="Python WSGI",
    find=_wsgi_startup_file,
    looked_for=("passenger_wsgi.py", "wsgi.py", "app.py", "a Django manage.py project"),
    suffixes=(".py",),
    interpreter_setting="python",
    interpreter_check=InterpreterCheck("Python", r"Python (\d+\.\d+(?:\.\d+)?)", (3, 9)),
    loader=LOADERS / "wsgi_loader.py",
    protocol="session",
    threaded=True,
    stack_dump="every thread's Python stack",
)
#: Python startup files that are ASGI by their name alone (``--startup-file main.py``).
ASGI_FILE_NAMES = ("asgi.py", "main.py")


def _asgi_startup_file(root: Path) -> str:
    # Detected, WSGI comes first, so the last two are found only when asked for
    # (--app-type asgi): a Django project's asgi.py (detected, its wsgi.py serves it) and
    # app.py (Flask's name, WSGI when detected; a FastAPI app there is refused with
    # "--app-type asgi" as the fix, which must then find it).
    return (
        first_file(*ASGI_FILE_NAMES)(root) or django_asgi_file(root) or first_file("app.py")(root)
    )


ASGI = AppKind(
    name="asgi",
    title="Python ASGI",
    find=_asgi_startup_file,
    looked_for=(
        "asgi.py",
        "main.py (FastAPI's layout)",
        "a Django manage.py project",
        "app.py (with --app-type asgi)",
    ),
    suffixes=(),  # a .py startup file is WSGI unless --app-type asgi says otherwise
    interpreter_setting="python",
    interpreter_check=InterpreterCheck("Python", r"Python (\d+\.\d+(?:\.\d+)?)", (3, 9)),
    loader=LOADERS / "asgi_loader.py",
    protocol="session",
    steps=ASGI_STEPS,
    stack_dump="where each of its tasks awaits, and every thread's Python stack",
)
RACK = AppKind(
    name="rack",
    title="Ruby Rack",
    find=first_file("config.ru"),
    looked_for=("config.ru",),
    suffixes=(".ru",),
    interpreter_setting="ruby",
    interpreter_check=InterpreterCheck("Ruby", r"ruby (\d+\.\d+\.\d+)", (3, 0)),
    loader=LOADERS / "rack_loader.rb",
    protocol="session",
    threaded=True,
    stack_dump="every thread's Ruby backtrace",
)
NODE = AppKind(
    name="node",
    title="Node.js",
    find=_node_startup_file,
    looked_for=("app.js", "package.json main", "index.js", "server.js"),
    suffixes=(".js", ".cjs", ".mjs"),
    interpreter_setting="nodejs",
    interpreter_check=InterpreterCheck("Node.js", r"v(\d+\.\d+\.\d+)", (18,)),
    loader=LOADERS / "node_loader.js",
    protocol="http",
    stack_dump="its requests in flight and what its event loop waits on",
)
GENERIC = AppKind(
    name="generic",
    title="any-language app",
    find=procfile_web_command,
    looked_for=("Procfile web: line",),
    steps=COMMAND_STEPS,
)

#: Every kind, in detection order.
KINDS: dict[str, AppKind] = {kind.name: kind for kind in (WSGI, ASGI, RACK, NODE, GENERIC)}


def kind_for_suffix(suffix: str) -> AppKind | None:
    """The loader kind whose startup files end with ``suffix``."""
    return next((k for k in KINDS.values() if suffix in k.suffixes), None)
