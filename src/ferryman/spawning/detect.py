"""Detection: what kind of app lives in a directory, and how to start it.

In order, unless ``app_type`` or ``startup_file`` says otherwise:
1. ``app_start_command`` given: a generic app (any program listening on $PORT);
2. ``startup_file`` given: the kind its suffix says (``.py``: Python WSGI);
3. each kind of ``kinds.KINDS`` in turn looks for its entry: Python WSGI
   (``passenger_wsgi.py``, ``wsgi.py``, ``app.py``), Node.js (``app.js``, the
   ``main`` of ``package.json``, ``index.js``, ``server.js``), then a ``Procfile``
   with a ``web:`` line (a generic app running that command).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import AppNotFound
from .interpreter import Interpreter, find_interpreter
from .kinds import ASGI_FILE_NAMES, KINDS, AppKind, kind_for_suffix


@dataclass(frozen=True, slots=True)
class AppSpec:
    """What to spawn: the app's kind and root, and its startup file or start command."""

    app_type: str  # a name in kinds.KINDS
    root: Path
    startup_file: str = ""
    start_command: str = ""
    #: The callable's name in the startup file ('module:attr' given); "" = the default.
    app_attribute: str = ""
    #: The interpreter that runs the loader, found and checked (see ``with_interpreter``).
    interpreter: Interpreter | None = None

    @property
    def kind(self) -> AppKind:
        return KINDS[self.app_type]

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)

    @property
    def entry(self) -> str:
        """The startup file or command, for people."""
        if self.app_attribute:
            return f"{self.startup_file}:{self.app_attribute}"
        return self.start_command or self.startup_file


def detect(config: Config) -> AppSpec:
    root = config.app_dir
    wanted = config.app_type
    if config.app_start_command and (wanted == "auto" or KINDS[wanted].loader is None):
        command_kind = wanted if wanted != "auto" else _command_kinds()[0].name
        return AppSpec(command_kind, root, start_command=config.app_start_command)
    if config.rackup:
        if not (root / config.rackup).is_file():
            raise AppNotFound(f"rackup file {config.rackup!r} not found in {root} (from --rackup)")
        return AppSpec("rack", root, config.rackup)
    if config.startup_file:
        startup_file, attribute = split_app_reference(root, config.startup_file)
        path = root / startup_file
        if not path.is_file():
            raise AppNotFound(
                f"startup file {startup_file!r} not found in {root} (from --startup-file)"
            )
        if wanted == "auto":
            if path.name in ASGI_FILE_NAMES:
                wanted = "asgi"  # asgi.py, main.py: named as ASGI apps are
            else:
                by_suffix = kind_for_suffix(path.suffix)
                wanted = (by_suffix or KINDS["wsgi"]).name
        if KINDS[wanted].loader is None:
            raise AppNotFound(
                f"app_type {wanted} needs app_start_command (or a Procfile web: line)"
            )
        return AppSpec(wanted, root, startup_file, app_attribute=attribute)
    candidates = list(KINDS.values()) if wanted == "auto" else [KINDS[wanted]]
    for kind in candidates:
        entry = kind.find(root)
        if entry:
            if kind.loader is None:
                return AppSpec(kind.name, root, start_command=entry)
            return AppSpec(kind.name, root, entry)
    # (in order, each once: WSGI and ASGI both look for a Django project)
    looked_for = list(dict.fromkeys(name for kind in candidates for name in kind.looked_for))
    if wanted != "auto" and KINDS[wanted].loader is None:
        looked_for.insert(0, "app_start_command")
    # The option that names the file, with an example of this kind's (a Rack app's is
    # its rackup file, as in `passenger start --rackup`).
    if wanted == "rack":
        option, example = "--rackup", "api.ru"
    else:
        option, example = "--startup-file", "main:app" if wanted == "asgi" else "mysite/wsgi.py"
    raise AppNotFound(
        f"no app found in {root}: looked for {', '.join(looked_for)}"
        f" (use {option}, e.g. {option} {example}, or --app-start-command to"
        " say how to start it)"
    )


def split_app_reference(root: Path, value: str) -> tuple[str, str]:
    """``--startup-file`` as a file, or uvicorn's ``module:attr`` (``main:app``,
    ``mysite.asgi:application``) or ``path.py:attr``: (file, attribute or "")."""
    if ":" not in value or (root / value).is_file():
        return value, ""
    module, _, attribute = value.rpartition(":")
    if not attribute.isidentifier() or not module:
        return value, ""
    if module.endswith(".py") or "/" in module:
        return module, attribute
    return module.replace(".", "/") + ".py", attribute


def with_interpreter(spec: AppSpec, config: Config, cwd: Path) -> AppSpec:
    """``spec`` with its kind's interpreter found and checked (ConfigError if unusable);
    unchanged for kinds that run their own command."""
    kind = spec.kind
    if kind.interpreter_setting is None or kind.interpreter_check is None:
        return spec
    setting = kind.interpreter_setting
    interpreter = find_interpreter(
        setting, str(getattr(config, setting)), config.origin(setting), kind.interpreter_check, cwd
    )
    return dataclasses.replace(spec, interpreter=interpreter)


def _command_kinds() -> list[AppKind]:
    return [kind for kind in KINDS.values() if kind.loader is None]
