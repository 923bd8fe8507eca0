"""Spawn errors as people read them: pages, reports, and what is hidden."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ferryman.errors import REDACTED, SpawnError, looks_secret, redacted_environment
from ferryman.spawning.error_page import CATEGORIES, TITLE, page_for, render_friendly, render_terse
from ferryman.spawning.error_report import ErrorReports
from ferryman.spawning.journey import Journey

LOADER = Path(__file__).resolve().parents[2] / "src" / "ferryman" / "loaders" / "wsgi_loader.py"
SPAWNER = LOADER.parent.parent / "spawning" / "spawner.py"
ASGI_LOADER = LOADER.parent / "asgi_loader.py"


def failed(summary: str = "RuntimeError: boom", **kwargs: object) -> SpawnError:
    journey = Journey()
    journey.done("prepare", 1.0)
    journey.done("spawn", 1.1)
    journey.done("loader_start", 1.2)
    journey.fail("load_app", 1.3)
    defaults: dict[str, object] = {
        "category": "import_error",
        "step": "load_app",
        "journey": journey,
        "output": ["app says hello", "Traceback ...", "RuntimeError: boom"],
        "details": "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n",
        "app_root": "/srv/app",
        "environment": redacted_environment({"GREETING": "hello", "API_TOKEN": "t0ps3cret"}),
        "interpreter": "/usr/bin/python3",
        "interpreter_version": "3.11.7",
    }
    defaults.update(kwargs)
    return SpawnError(summary, **defaults)  # type: ignore[arg-type]


def test_friendly_page_explains_the_failure() -> None:
    """The friendly page has the title, summary, failed step, hint, traceback, output, env, ID."""
    error = failed()
    page = render_friendly(error).decode()
    assert f"<title>{TITLE}</title>" in page
    assert "RuntimeError: boom" in page
    assert "Loading the application &larr; failed here" in page
    assert CATEGORIES["import_error"].hint.replace("'", "&#x27;") in page
    assert "app says hello" in page
    assert "GREETING" in page and "hello" in page
    assert error.error_id in page
    assert "<script" not in page.lower()


def test_everything_from_the_app_is_escaped() -> None:
    """Markup in the app's message, output, traceback or environment is shown, never run."""
    evil = "<script>alert(1)</script>"
    error = failed(
        summary=f"ValueError: {evil}",
        output=[evil],
        details=evil,
        environment=[("X", evil)],
        app_root=evil,
    )
    page = render_friendly(error).decode()
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_terse_page_has_only_the_id() -> None:
    """The production page shows the error ID and nothing about the app."""
    error = failed()
    page = render_terse(error).decode()
    assert error.error_id in page
    for secret in ("boom", "Traceback", "GREETING", "/srv/app", "app says hello"):
        assert secret not in page


def test_pages_are_rendered_once_per_error() -> None:
    """Every waiter gets the very same bytes: the page is cached on the error."""
    error = failed()
    assert page_for(error, True) is page_for(error, True)
    assert page_for(error, False) is page_for(error, False)
    assert page_for(error, True) != page_for(error, False)


def test_each_error_has_its_own_id() -> None:
    assert failed().error_id != failed().error_id


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_SECRET", True),
        ("GITHUB_TOKEN", True),
        ("DB_PASSWORD", True),
        ("MYSQL_PASSWD", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("APIKEY", True),
        ("STRIPE_KEY", True),
        ("DB_PASS", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("SSH_PRIVATE_KEY_PATH", True),
        ("SESSION_COOKIE_SALT", True),
        ("SENTRY_DSN", True),
        ("PASSENGER_APP_ENV", False),
        ("KEYBOARD_LAYOUT", False),
        ("HOME", False),
        ("PATH", False),
        ("PWD", False),
        ("GREETING", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    """Values of secret-looking variables are hidden; innocent look-alikes are shown."""
    assert looks_secret(name) is secret


def test_passwords_in_urls_are_hidden_in_any_variable() -> None:
    env = redacted_environment(
        {"DATABASE_URL": "postgres://app:hunter2@db:5432/x", "HOMEPAGE": "https://x.org/a:b@c"}
    )
    assert ("DATABASE_URL", f"postgres://app:{REDACTED}@db:5432/x") in env
    assert all("hunter2" not in value for _, value in env)


def test_reports_are_written_and_pruned_to_the_limit(tmp_path: Path) -> None:
    """A report per error; beyond the limit the oldest are deleted; nothing else is touched."""
    (tmp_path / "unrelated.html").write_text("keep me")
    reports = ErrorReports(str(tmp_path), limit=100)
    errors = [failed() for _ in range(5)]
    paths = []
    for i, error in enumerate(errors):
        path = reports.write(error)
        assert path is not None
        stamp = time.time_ns() + i * 10**9  # distinct mtimes, oldest first
        os.utime(path, ns=(stamp, stamp))
        paths.append(path)
    reports.limit = 3
    reports.prune()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(
        ["unrelated.html", *(f"ferryman-error-{e.error_id}.html" for e in errors[-3:])]
    )
    assert "RuntimeError: boom" in Path(paths[-1]).read_text()
    assert oct(Path(paths[-1]).stat().st_mode & 0o777) == "0o600"


def test_no_reports_with_a_limit_of_zero(tmp_path: Path) -> None:
    assert ErrorReports(str(tmp_path), limit=0).write(failed()) is None
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_report_dir_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    fd_before = len(os.listdir("/proc/self/fd"))
    assert ErrorReports(str(tmp_path / "missing"), limit=5).write(failed()) is None
    assert len(os.listdir("/proc/self/fd")) == fd_before


def test_every_category_the_code_produces_has_words_and_a_hint() -> None:
    """Categories named by the loader and the spawner all have a title and a hint."""
    import re

    produced = set(re.findall(r'AppLoadError\(\s*"(\w+)"', LOADER.read_text()))
    produced |= set(re.findall(r'"kind": "(\w+)"', ASGI_LOADER.read_text()))
    produced |= set(re.findall(r'^\s+"(\w+)",\n\s+"\w+",\n', SPAWNER.read_text(), re.M))
    produced |= {"timeout", "exited", "interpreter_not_found", "interpreter_failed"}
    produced |= {"handshake_malformed", "internal"}
    assert produced <= set(CATEGORIES), produced - set(CATEGORIES)
    assert {"import_error", "syntax_error", "app_missing", "app_not_callable"} <= produced


def test_sections_with_nothing_to_show_are_left_out() -> None:
    """No journey, no environment, no interpreter known: those sections are absent, never
    shown empty."""
    error = SpawnError("it went wrong", category="exited", step="finish")
    page = render_friendly(error).decode()
    assert "<h2>Journey</h2>" not in page
    assert "Environment given to the app" not in page
    assert "Interpreter:" not in page
    assert "it went wrong" in page
