"""Real framework apps, made the way their users make them, served as a new user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .harness import serving


def test_a_fresh_django_project_is_found_and_served(tmp_path: Path) -> None:
    """``django-admin startproject`` then ``ferryman start`` in the project: its
    mysite/wsgi.py is found from manage.py, and Django's welcome page is served."""
    site = _startproject(tmp_path)
    with serving(site) as server:
        server.wait_for_log(r"app type: Python WSGI \(mysite/wsgi\.py\)")
        status, body = server.get("/")
        assert status == 200
        assert b"The install worked successfully" in body


def test_a_fresh_django_project_is_served_through_its_asgi_handler(tmp_path: Path) -> None:
    """The same project through Django's own asgi.py, named as uvicorn users do
    (``mysite.asgi:application``): Django refuses the lifespan scope, which the loader
    takes as "no lifespan", and serves the welcome page."""
    site = _startproject(tmp_path)
    with serving(site, "--startup-file", "mysite.asgi:application") as server:
        server.wait_for_log(r"app type: Python ASGI \(mysite/asgi\.py:application\)")
        status, body = server.get("/")
        assert status == 200
        assert b"The install worked successfully" in body
        status, _ = server.get("/admin/login/")
        assert status == 200


def _startproject(tmp_path: Path) -> Path:
    """A fresh ``django-admin startproject mysite`` (as a new user makes one)."""
    site = tmp_path / "site"
    site.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(site)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return site
