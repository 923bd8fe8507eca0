"""App detection: which kind of app a directory holds, and how it is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferryman.config import Config
from ferryman.errors import AppNotFound
from ferryman.spawning.detect import AppSpec, detect


def make(root: Path, files: dict[str, str], **settings: object) -> AppSpec:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return detect(Config(app_dir=root, **settings))  # type: ignore[arg-type]


CASES = [
    # (files, settings, expected (type, startup file, command))
    ({"passenger_wsgi.py": "", "wsgi.py": "", "app.js": ""}, {}, ("wsgi", "passenger_wsgi.py", "")),
    ({"wsgi.py": "", "app.py": ""}, {}, ("wsgi", "wsgi.py", "")),
    ({"app.py": "", "server.js": ""}, {}, ("wsgi", "app.py", "")),
    ({"app.js": "", "index.js": ""}, {}, ("node", "app.js", "")),
    ({"package.json": json.dumps({"main": "lib/main.js"}), "lib/main.js": "", "index.js": ""},
     {}, ("node", "lib/main.js", "")),
    ({"package.json": json.dumps({"main": "missing.js"}), "server.js": ""}, {},
     ("node", "server.js", "")),
    ({"package.json": "not json", "index.js": ""}, {}, ("node", "index.js", "")),
    ({"Procfile": "worker: x\nweb: ./serve --port $PORT\n"}, {},
     ("generic", "", "./serve --port $PORT")),
    ({"app.js": "", "Procfile": "web: x"}, {}, ("node", "app.js", "")),
    ({"wsgi.py": ""}, {"app_start_command": "run $PORT"}, ("generic", "", "run $PORT")),
    ({"app.py": "", "app.js": ""}, {"app_type": "node"}, ("node", "app.js", "")),
    ({"main.mjs": ""}, {"startup_file": "main.mjs"}, ("node", "main.mjs", "")),
    ({"serve.py": ""}, {"startup_file": "serve.py"}, ("wsgi", "serve.py", "")),
    ({"x.js": ""}, {"startup_file": "x.js", "app_type": "wsgi"}, ("wsgi", "x.js", "")),
    # ASGI: asgi.py, then main.py (FastAPI's layout), after every WSGI name.
    ({"main.py": "", "asgi.py": ""}, {}, ("asgi", "asgi.py", "")),
    ({"main.py": "", "server.js": ""}, {}, ("asgi", "main.py", "")),
    ({"app.py": "", "main.py": ""}, {}, ("wsgi", "app.py", "")),
    ({"app.py": ""}, {"app_type": "asgi", "startup_file": "app.py"}, ("asgi", "app.py", "")),
    # app.py is ASGI when asked for (the fix the error page names for a FastAPI app.py),
    # after the ASGI names; as a --startup-file it stays WSGI (gunicorn's app:app).
    ({"app.py": ""}, {"app_type": "asgi"}, ("asgi", "app.py", "")),
    ({"app.py": "", "main.py": ""}, {"app_type": "asgi"}, ("asgi", "main.py", "")),
    ({"app.py": ""}, {"startup_file": "app:app"}, ("wsgi", "app.py", "")),
    ({"asgi.py": "", "main.py": ""}, {"startup_file": "main.py"}, ("asgi", "main.py", "")),
    ({"main.py": ""}, {"startup_file": "main.py"}, ("asgi", "main.py", "")),
    # Rack: config.ru, after the Python names, before Node.js (Rails apps have a package.json).
    ({"config.ru": "", "package.json": "{}", "index.js": ""}, {}, ("rack", "config.ru", "")),
    ({"app.py": "", "config.ru": ""}, {}, ("wsgi", "app.py", "")),
    ({"other.ru": "", "app.py": ""}, {"rackup": "other.ru"}, ("rack", "other.ru", "")),
    ({"x.ru": ""}, {"startup_file": "x.ru"}, ("rack", "x.ru", "")),
    ({"app.py": "", "config.ru": ""}, {"app_type": "rack"}, ("rack", "config.ru", "")),
    ({"app.py": "", "api.ru": ""}, {"app_type": "rack", "rackup": "api.ru"},
     ("rack", "api.ru", "")),
    # uvicorn's module:attribute form.
    ({"main.py": ""}, {"startup_file": "main:api"}, ("asgi", "main.py", "")),
    ({"mysite/asgi.py": ""}, {"startup_file": "mysite.asgi:application"},
     ("asgi", "mysite/asgi.py", "")),
    ({"serve.py": ""}, {"startup_file": "serve.py:app"}, ("wsgi", "serve.py", "")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("main:app", ("main.py", "app")),
        ("mysite.asgi:application", ("mysite/asgi.py", "application")),
        ("src/app.py:create", ("src/app.py", "create")),
        ("main.py", ("main.py", "")),
        ("main:", ("main:", "")),
        (":app", (":app", "")),
        ("main:not-a-name", ("main:not-a-name", "")),
    ],
)
def test_module_attribute_references(tmp_path: Path, value: str, expected: tuple[str, str]) -> None:
    from ferryman.spawning.detect import split_app_reference

    assert split_app_reference(tmp_path, value) == expected


def test_a_file_whose_name_has_a_colon_is_a_file(tmp_path: Path) -> None:
    from ferryman.spawning.detect import split_app_reference

    (tmp_path / "odd:name.py").write_text("")
    assert split_app_reference(tmp_path, "odd:name.py") == ("odd:name.py", "")


@pytest.mark.parametrize(("files", "settings", "expected"), CASES)
def test_detection_order(
    tmp_path: Path, files: dict[str, str], settings: dict[str, object], expected: tuple[str, ...]
) -> None:
    """Python first, then Node.js, then a Procfile; explicit settings win."""
    spec = make(tmp_path, files, **settings)
    assert (spec.app_type, spec.startup_file, spec.start_command) == expected
    assert spec.root == tmp_path


def test_nothing_found_lists_everything_looked_for(tmp_path: Path) -> None:
    with pytest.raises(AppNotFound) as info:
        make(tmp_path, {"README": ""})
    message = str(info.value)
    for name in ("passenger_wsgi.py", "app.js", "package.json main", "Procfile web: line"):
        assert name in message
    assert str(tmp_path) in message


def test_a_missing_startup_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AppNotFound, match=r"'nope\.py' not found"):
        make(tmp_path, {}, startup_file="nope.py")


def test_generic_without_a_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AppNotFound, match="app_start_command"):
        make(tmp_path, {"app.py": ""}, app_type="generic")


MANAGE_PY = """import os, sys
def main():
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')
"""


@pytest.mark.parametrize(
    ("files", "startup"),
    [
        # manage.py names the settings module: its package's wsgi.py
        ({"manage.py": MANAGE_PY, "mysite/settings.py": "", "mysite/wsgi.py": "",
          "other/settings.py": "", "other/wsgi.py": ""}, "mysite/wsgi.py"),
        # a settings module in a nested package
        ({"manage.py": MANAGE_PY.replace("mysite.settings", "config.site.settings"),
          "config/site/settings.py": "", "config/site/wsgi.py": ""}, "config/site/wsgi.py"),
        # manage.py says nothing usable: the one package with settings.py and wsgi.py
        ({"manage.py": "print('custom')\n", "proj/settings.py": "", "proj/wsgi.py": "",
          "docs/conf.py": ""}, "proj/wsgi.py"),
        # a passenger_wsgi.py at the root still comes first
        ({"manage.py": MANAGE_PY, "mysite/settings.py": "", "mysite/wsgi.py": "",
          "passenger_wsgi.py": ""}, "passenger_wsgi.py"),
    ],
)  # fmt: skip
def test_a_django_project_is_found_from_manage_py(
    tmp_path: Path, files: dict[str, str], startup: str
) -> None:
    spec = make(tmp_path, files)
    assert (spec.app_type, spec.startup_file) == ("wsgi", startup)


def test_a_django_project_with_two_candidates_is_not_guessed(tmp_path: Path) -> None:
    files = {"manage.py": "", "a/settings.py": "", "a/wsgi.py": "", "b/settings.py": "",
             "b/wsgi.py": ""}  # fmt: skip
    with pytest.raises(AppNotFound) as caught:
        make(tmp_path, files)
    message = str(caught.value)
    assert "a Django manage.py project" in message
    assert "--startup-file" in message and "mysite/wsgi.py" in message


def test_app_type_rack_without_config_ru_suggests_rackup(tmp_path: Path) -> None:
    with pytest.raises(AppNotFound) as caught:
        make(tmp_path, {"app.py": ""}, app_type="rack")
    message = str(caught.value)
    assert "looked for config.ru (use --rackup, e.g. --rackup api.ru," in message


def test_a_django_projects_asgi_py_is_found_with_app_type_asgi(tmp_path: Path) -> None:
    """Detected, a Django project is WSGI; asked for ASGI, its <project>/asgi.py."""
    files = {"manage.py": MANAGE_PY, "mysite/settings.py": "", "mysite/wsgi.py": "",
             "mysite/asgi.py": ""}  # fmt: skip
    assert make(tmp_path, files).startup_file == "mysite/wsgi.py"
    spec = make(tmp_path, files, app_type="asgi")
    assert (spec.app_type, spec.startup_file) == ("asgi", "mysite/asgi.py")


def test_the_hint_for_a_missing_asgi_app_is_an_asgi_one(tmp_path: Path) -> None:
    with pytest.raises(AppNotFound) as caught:
        make(tmp_path, {"x.txt": ""}, app_type="asgi")
    assert "--startup-file main:app" in str(caught.value)
