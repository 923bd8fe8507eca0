"""Spawn errors end to end: every way an app can fail to start is explained to the user.

Each failure gets one log line (summary, step, category, error ID, report path), an
HTML report in --error-report-dir, and an error page for every request waiting for
the spawn: friendly (journey with the failed step marked, traceback, output,
environment with secrets redacted) in development, only the error ID in production.
Most servers here run with --min-instances 0, so the first request triggers the spawn.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferryman.spawning.journey import ASGI_STEPS

from .harness import APPS, STUB, Request, Server, alive, serving, wait_until

TITLES = {name: title for name, _side, title in ASGI_STEPS}  # every loader step
PAGE_TITLE = "Error starting web application"
FAILURE_LINE = re.compile(
    r"Could not start a process for (?P<root>.+?): (?P<summary>.*)"
    r" \[step: (?P<step>\w+), category: (?P<category>\w+)\]"
    r" \(error ID (?P<id>[0-9a-f]+); report: (?P<report>.+)\)$"
)
BROKEN = APPS / "wsgi_broken"
BROKEN_OUTPUT = "broken app: about to fail"
BROKEN_ERROR = "RuntimeError: the database is on fire"
FIXED_APP = """\
print("fixed app: loaded")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fixed app: version 2 of the startup file\\n"]
"""
FIXED_BODY = b"fixed app: version 2 of the startup file\n"


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """An empty directory for the error reports of one test."""
    directory = tmp_path / "reports"
    directory.mkdir()
    return directory


def flags(report_dir: Path, *more: str) -> tuple[str, ...]:
    """Reports into ``report_dir``; no process at start (the first request spawns)."""
    return ("--error-report-dir", str(report_dir), "--min-instances", "0", *more)


def failure_lines(server: Server) -> list[re.Match[str]]:
    """Every 'Could not start a process' line logged so far, in order."""
    found = []
    for line in server.log_text().splitlines():
        match = FAILURE_LINE.search(line)
        if match:
            found.append(match)
    return found


def spawn_count(server: Server, printed: str) -> int:
    """How many app processes printed ``printed`` (each spawn of the fixture prints it once)."""
    return len(re.findall(rf"App \d+ output: {re.escape(printed)}", server.log_text()))


def copy_app(source: Path, tmp_path: Path) -> Path:
    app = tmp_path / "app"
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("__pycache__"))
    return app


def touch_restart(app: Path) -> None:
    (app / "tmp").mkdir(exist_ok=True)
    (app / "tmp" / "restart.txt").touch()


@dataclass
class Failure:
    """A request answered with a spawn error, and the log line of that error."""

    status: int
    content_type: str
    page: str
    elapsed: float
    line: re.Match[str]

    @property
    def error_id(self) -> str:
        return self.line["id"]

    @property
    def report(self) -> Path:
        return Path(self.line["report"])


def request_failure(server: Server, timeout: float = 30) -> Failure:
    """GET / and the failure line it caused (the spawn error is logged before the page goes out)."""
    mark = server.mark()
    started = time.monotonic()
    status, headers, body = server.request("GET", "/", timeout=timeout)
    elapsed = time.monotonic() - started
    line = server.wait_for_log(FAILURE_LINE, timeout=5, start=mark)
    return Failure(status, headers.get("content-type", ""), body.decode(), elapsed, line)


def assert_explained(
    server: Server,
    report_dir: Path,
    *,
    step: str,
    category: str,
    texts: list[str],
    timeout: float = 30,
) -> Failure:
    """The next request fails with a friendly page naming ``step`` and showing ``texts``;
    one log line gives the error ID (also on the page) and the report, which exists."""
    failure = request_failure(server, timeout)
    page = failure.page
    assert failure.status == 500, page
    assert failure.content_type.startswith("text/html"), failure.content_type
    assert PAGE_TITLE in page
    line = failure.line
    assert (line["step"], line["category"]) == (step, category), line.group(0)
    assert len(failure_lines(server)) == 1, server.log_text()
    # The failed step's title carries the marker, and no other step does.
    title = html.escape(TITLES[step])
    assert re.search(re.escape(title) + r"\s*(?:&larr;|←)\s*failed here", page), page
    assert page.count("failed here") == 1, page
    for text in texts:
        assert html.escape(text) in page, f"{text!r} missing from the page:\n{page}"
    assert failure.error_id in page
    report = failure.report
    assert report == report_dir / f"ferryman-error-{failure.error_id}.html"
    assert report.is_file()
    content = report.read_text()
    assert failure.error_id in content
    for text in texts:
        assert html.escape(text) in content, f"{text!r} missing from the report"
    # Whatever went wrong, no app process is left behind.
    assert wait_until(lambda: server.children() == [], timeout=10), server.children()
    return failure


# -- 1. one test per kind of failure -----------------------------------------------------------


def test_app_raising_at_import(report_dir: Path) -> None:
    """An exception at import fails 'Loading the application' with the app's message and output."""
    with serving(BROKEN, *flags(report_dir), wait_ready=0) as server:
        failure = assert_explained(
            server,
            report_dir,
            step="load_app",
            category="import_error",
            texts=[BROKEN_ERROR, BROKEN_OUTPUT],
        )
        assert "Traceback" in failure.page


def test_syntax_error_in_the_startup_file(report_dir: Path) -> None:
    """A startup file that does not compile fails loading with the SyntaxError and its line."""
    with serving(APPS / "wsgi_syntax_error", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="load_app",
            category="syntax_error",
            texts=["SyntaxError", "'break' outside loop", "the syntax error under test"],
        )


def test_startup_file_without_an_application(report_dir: Path) -> None:
    """A startup file defining neither 'application' nor 'app' fails loading and says so."""
    with serving(APPS / "wsgi_no_app", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="load_app",
            category="app_missing",
            texts=[
                "defines neither 'application' nor 'app'",
                "no-app app: imported, but there is no application here",
            ],
        )


def test_application_that_is_not_callable(report_dir: Path) -> None:
    """'application = 42' fails loading as not callable, naming the type it found."""
    with serving(APPS / "wsgi_not_callable", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="load_app",
            category="app_not_callable",
            texts=[
                "application is a int, not a callable WSGI app",
                "not-callable app: application is a number",
            ],
        )


def test_startup_file_deleted_before_a_restart(tmp_path: Path, report_dir: Path) -> None:
    """A startup file deleted before restart.txt is touched fails the respawn as missing."""
    app = copy_app(STUB, tmp_path)
    args = flags(report_dir, "--stat-throttle-rate", "0")
    with serving(app, *args, wait_ready=0) as server:
        status, _ = server.get("/")
        assert status == 200
        (app / "passenger_wsgi.py").unlink()
        touch_restart(app)
        assert_explained(
            server,
            report_dir,
            step="load_app",
            category="startup_file_missing",
            texts=[f"startup file {app / 'passenger_wsgi.py'} does not exist"],
        )


def test_python_that_is_gone_by_the_time_a_process_starts(tmp_path: Path, report_dir: Path) -> None:
    """An interpreter that was there at start (checked then) and is gone when a process is
    started later (a virtualenv removed by a deploy) fails 'Starting the interpreter' with
    the OS's reason."""
    venv = tmp_path / "venv"
    venv.mkdir()
    python = venv / "python3"
    python.symlink_to(sys.executable)
    with serving(STUB, *flags(report_dir, "--python", str(python)), wait_ready=0) as server:
        shutil.rmtree(venv)
        assert_explained(
            server,
            report_dir,
            step="spawn",
            category="interpreter_not_found",
            texts=[str(python), "No such file or directory"],
        )


def test_python_that_is_not_python(tmp_path: Path, report_dir: Path) -> None:
    """A --python that answers --version like Python but is not Python fails before the
    loader starts; its output is shown."""
    script = tmp_path / "not-python"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "Python 3.11.0"; exit 0; fi\n'
        "echo 'not python: just a shell script'\nexit 0\n"
    )
    script.chmod(0o755)
    with serving(STUB, *flags(report_dir, "--python", str(script)), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="loader_start",
            category="interpreter_failed",
            texts=["not python: just a shell script", "exit code 0", str(script)],
        )


@pytest.mark.parametrize(
    ("app", "printed", "how"),
    [
        ("wsgi_exit_code", "exit app: exiting with code 3", "exit code 3"),
        ("wsgi_sigkill", "sigkill app: killing myself", "killed by SIGKILL"),
    ],
)
def test_app_exiting_during_start(report_dir: Path, app: str, printed: str, how: str) -> None:
    """A process that exits (or is killed) while loading fails loading, saying how it ended."""
    with serving(APPS / app, *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="load_app",
            category="exited",
            texts=[f"the app exited during start ({how})", printed],
        )


def test_app_never_ready_is_killed_at_the_start_timeout(report_dir: Path) -> None:
    """With --start-timeout 2 a hanging app's request gets the page within seconds; it is gone."""
    args = flags(report_dir, "--start-timeout", "2")
    with serving(APPS / "wsgi_hang", *args, wait_ready=0) as server:
        failure = assert_explained(
            server,
            report_dir,
            step="load_app",
            category="timeout",
            texts=["did not become ready within 2 s", "hanging app: sleeping forever"],
            timeout=20,
        )
        assert failure.elapsed < 6, failure.elapsed
        pid = int(server.wait_for_log(r"App (\d+) output: hanging app", timeout=1).group(1))
        assert not alive(pid)


def test_malformed_handshake_data(report_dir: Path) -> None:
    """Garbage on the handshake fd fails 'Waiting for the app process to report ready'."""
    with serving(APPS / "wsgi_bad_handshake", *flags(report_dir), wait_ready=0) as server:
        assert_explained(
            server,
            report_dir,
            step="handshake",
            category="handshake_malformed",
            texts=[
                "malformed handshake data",
                "this is not json from the app",
                "bad handshake app: wrote garbage to the handshake fd",
            ],
        )


# -- 2. escaping -------------------------------------------------------------------------------


def test_app_text_is_html_escaped(report_dir: Path) -> None:
    """Markup in the app's exception and output reaches the page and report only escaped."""
    with serving(APPS / "wsgi_xss", *flags(report_dir), wait_ready=0) as server:
        failure = request_failure(server)
        assert failure.status == 500
        escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
        assert f"xss app: {escaped}" in failure.page
        assert f"{escaped} in the exception" in failure.page
        assert "<script" not in failure.page.lower()
        report = failure.report.read_text()
        assert escaped in report
        assert "<script" not in report.lower()


# -- 3. production pages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [("-e", "production"), ("--no-friendly-error-pages",)],
    ids=["production", "no-friendly-error-pages"],
)
def test_terse_page_shows_only_the_error_id(report_dir: Path, mode: tuple[str, ...]) -> None:
    """Without friendly pages the page has the error ID and no detail; the report has it all."""
    args = flags(report_dir, "--envvar", "GREETING=hello", *mode)
    with serving(BROKEN, *args, wait_ready=0) as server:
        failure = request_failure(server)
        page = failure.page
        assert failure.status == 500
        assert failure.error_id in page
        for detail in (
            "Traceback",
            "RuntimeError",
            "the database is on fire",
            BROKEN_OUTPUT,
            "GREETING",
            "PASSENGER_APP_ENV",
            "failed here",
        ):
            assert detail not in page, f"{detail!r} shown on the terse page:\n{page}"
        report = failure.report.read_text()
        for detail in ("Traceback", BROKEN_ERROR, BROKEN_OUTPUT, "GREETING", "failed here"):
            assert html.escape(detail) in report, f"{detail!r} missing from the report"


# -- 4. every waiter ---------------------------------------------------------------------------


def test_every_waiting_request_gets_the_same_page(report_dir: Path) -> None:
    """Five requests waiting for one slow failing spawn all get its page and error ID."""
    with serving(APPS / "wsgi_slow_broken", *flags(report_dir), wait_ready=0) as server:
        requests = [Request(server, "/") for _ in range(5)]
        deadline = time.monotonic() + 20
        for request in requests:
            request.join(max(0.0, deadline - time.monotonic()))
        assert all(request.done for request in requests)
        line = server.wait_for_log(FAILURE_LINE, timeout=5)
        assert [request.status for request in requests] == [500] * 5
        for request in requests:
            assert line["id"].encode() in request.body
        assert len({request.body for request in requests}) == 1
        assert len(failure_lines(server)) == 1
        assert spawn_count(server, "slow broken app: sleeping before failing") == 1


# -- 5. back-off -------------------------------------------------------------------------------


def test_requests_during_the_back_off_get_the_page_at_once(report_dir: Path) -> None:
    """With --spawn-backoff 30, requests after a failure get its page at once and spawn nothing."""
    with serving(BROKEN, *flags(report_dir, "--spawn-backoff", "30"), wait_ready=0) as server:
        first = request_failure(server)
        assert first.status == 500
        assert spawn_count(server, BROKEN_OUTPUT) == 1
        for _ in range(3):
            started = time.monotonic()
            status, body = server.get("/")
            elapsed = time.monotonic() - started
            assert status == 500
            assert first.error_id.encode() in body
            assert elapsed < 1.0, elapsed
        assert not wait_until(lambda: spawn_count(server, BROKEN_OUTPUT) > 1, timeout=0.5)
        assert len(failure_lines(server)) == 1


def test_without_back_off_every_request_spawns_again(report_dir: Path) -> None:
    """With --spawn-backoff 0, each request spawns anew and gets a new error ID."""
    with serving(BROKEN, *flags(report_dir, "--spawn-backoff", "0"), wait_ready=0) as server:
        ids = []
        for attempt in range(1, 4):
            failure = request_failure(server)
            assert failure.status == 500
            assert failure.error_id in failure.page
            ids.append(failure.error_id)
            assert spawn_count(server, BROKEN_OUTPUT) == attempt
        assert len(set(ids)) == 3


# -- 6. status code ----------------------------------------------------------------------------


def test_spawn_error_status_code(report_dir: Path) -> None:
    """--spawn-error-status-code 503 is the status of the error page."""
    args = flags(report_dir, "--spawn-error-status-code", "503")
    with serving(BROKEN, *args, wait_ready=0) as server:
        failure = request_failure(server)
        assert failure.status == 503
        assert PAGE_TITLE in failure.page
        assert failure.error_id in failure.page


# -- 7. secrets --------------------------------------------------------------------------------


def test_secrets_in_the_environment_are_redacted(report_dir: Path) -> None:
    """Secret-looking variables and URL passwords show as [redacted]; other variables show."""
    args = flags(
        report_dir,
        "--envvar", "API_SECRET=hunter2",
        "--envvar", "DATABASE_URL=postgres://u:hunter2@db/x",
        "--envvar", "GREETING=hello",
    )  # fmt: skip
    with serving(BROKEN, *args, wait_ready=0) as server:
        failure = request_failure(server)
        page = failure.page
        assert failure.status == 500
        assert "hunter2" not in page
        assert "API_SECRET" in page
        assert "[redacted]" in page
        assert "postgres://u:[redacted]@db/x" in page
        assert re.search(r"GREETING</td>\s*<td[^>]*>hello</td>", page), page
        assert "hunter2" not in failure.report.read_text()


# -- 8. recovery -------------------------------------------------------------------------------


def test_fixed_app_recovers_when_restart_txt_is_touched(tmp_path: Path, report_dir: Path) -> None:
    """Fixing the file and touching tmp/restart.txt ends the back-off: the next request gets 200."""
    app = copy_app(BROKEN, tmp_path)
    args = flags(report_dir, "--stat-throttle-rate", "0", "--spawn-backoff", "30")
    with serving(app, *args, wait_ready=0) as server:
        assert request_failure(server).status == 500
        (app / "passenger_wsgi.py").write_text(FIXED_APP)
        touch_restart(app)
        assert server.get("/") == (200, FIXED_BODY)


def test_fixed_app_recovers_after_the_back_off(tmp_path: Path, report_dir: Path) -> None:
    """After fixing the file, the first request after the 1 s back-off spawns it and is served."""
    app = copy_app(BROKEN, tmp_path)
    with serving(app, *flags(report_dir, "--spawn-backoff", "1"), wait_ready=0) as server:
        assert request_failure(server).status == 500
        (app / "passenger_wsgi.py").write_text(FIXED_APP)
        answers: list[tuple[int, bytes]] = []

        def served() -> bool:
            answers.append(server.get("/"))
            return answers[-1][0] == 200

        assert wait_until(served, timeout=10, interval=0.2), answers[-3:]
        assert answers[-1] == (200, FIXED_BODY)


# -- 9. report retention -----------------------------------------------------------------------


def test_only_the_newest_reports_are_kept(report_dir: Path) -> None:
    """With --error-report-limit 3, six failures leave exactly the three newest reports."""
    args = flags(report_dir, "--spawn-backoff", "0", "--error-report-limit", "3")
    with serving(BROKEN, *args, wait_ready=0) as server:
        for _ in range(6):
            assert request_failure(server).status == 500
        ids = [line["id"] for line in failure_lines(server)]
        assert len(set(ids)) == 6
        kept = sorted(path.name for path in report_dir.iterdir())
        assert kept == sorted(f"ferryman-error-{error_id}.html" for error_id in ids[-3:])


def test_reports_go_to_the_temp_dir_by_default() -> None:
    """Without --error-report-dir the report is written into the server's $TMPDIR."""
    with serving(BROKEN, "--min-instances", "0", wait_ready=0) as server:
        failure = request_failure(server)
        assert failure.status == 500
        assert failure.report == server.tmpdir / f"ferryman-error-{failure.error_id}.html"
        assert failure.report.is_file()


# -- Passenger's INTERP idiom --------------------------------------------------------------------


def _other_interpreter(tmp_path: Path) -> str:
    """A Python other than the one Ferryman runs: the system's, else a link to ours (a
    different sys.executable is all the idiom looks at)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.path.realpath(candidate) != os.path.realpath(
            sys.executable
        ):
            return candidate
    link = tmp_path / "python-elsewhere"
    link.symlink_to(sys.executable)
    return str(link)


def test_passenger_interp_idiom_reexecutes_the_loader(tmp_path: Path) -> None:
    """passenger_wsgi.py re-executing itself under INTERP (os.execl(INTERP, INTERP,
    *sys.argv)) starts and serves, under that interpreter."""
    interp = _other_interpreter(tmp_path)
    with serving(APPS / "wsgi_interp", "--envvar", f"INTERP={interp}") as server:
        status, body = server.get("/")
        assert status == 200
        assert body == f"served by {interp}\n".encode()


def test_a_process_dying_right_after_ready_gets_a_full_page(report_dir: Path) -> None:
    """A crash loop (ready, then dead before serving anything) is explained like any failed
    start: its journey, environment and interpreter are on the page, none of them empty."""
    args = ("--error-report-dir", str(report_dir), "--spawn-backoff", "30")
    with serving(APPS / "wsgi_dies_early", *args, wait_ready=0) as server:
        server.wait_for_log(FAILURE_LINE)  # the first process died, serving nothing
        status, headers, body = server.request("GET", "/")  # in the back-off: the page
        page = body.decode()
        assert status == 500, page
        assert "after it started" in page and "before it served anything" in page
        assert "<h2>Journey</h2>" in page
        assert "Registering the ready process" in page
        assert "<h2>Environment given to the app</h2>" in page
        assert "PASSENGER_APP_ENV" in page
        assert re.search(r"Interpreter: \S+ Python 3\.\d+", page), page[-800:]
        assert "dies-early app: exiting now" in page


def test_an_asgi_app_is_recognised_with_the_recipe_to_serve_it(report_dir: Path) -> None:
    """A FastAPI-style app in app.py is not started as WSGI (to fail on every request):
    the start fails at once, saying it is ASGI and how to serve it."""
    with serving(APPS / "wsgi_asgi_app", *flags(report_dir), wait_ready=0) as server:
        failure = assert_explained(
            server,
            report_dir,
            step="load_app",
            category="asgi_app",
            texts=["app.app is an ASGI application", "add --app-type asgi"],
        )
        assert "Named asgi.py or main.py, it is found as ASGI" in failure.page
    # The fix the page names, as it names it, serves the same app.py.
    with serving(APPS / "wsgi_asgi_app", "--app-type", "asgi") as server:
        server.wait_for_log(r"app type: Python ASGI \(app\.py\)")
        assert server.get("/") == (200, b"asgi")
