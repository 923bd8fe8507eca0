"""Error pages for an app that cannot start: friendly for developers, terse for production.

The friendly page shows what happened, the spawn journey with the failed step
marked, the app's traceback and output, its environment (secrets redacted) and
how to fix it. It is plain HTML with inline CSS, readable without JavaScript;
every piece of text that comes from the app is HTML-escaped. The terse page
shows only the error ID, which leads an operator to the log line and report.
"""

from __future__ import annotations

import html
import platform
import time
from dataclasses import dataclass

from ..errors import SpawnError
from .journey import Journey

TITLE = "Error starting web application"


@dataclass(frozen=True, slots=True)
class Category:
    title: str
    hint: str


CATEGORIES: dict[str, Category] = {
    "import_error": Category(
        "The app raised an exception while its startup file was being loaded",
        "Read the traceback: it names the file and line where the exception was raised. "
        "Common causes are a package missing where the app's interpreter looks for it (for "
        "Python, install it into the interpreter given by --python, e.g. your virtualenv's; "
        "for Node.js, run npm install in the app directory; for Ruby, bundle install, or "
        "the Debian package of the gem, for the interpreter given by --ruby), a missing "
        "environment variable "
        "(--envvar NAME=VALUE), or a service the app connects to while it is loaded.",
    ),
    "syntax_error": Category(
        "The startup file, or a module it loads, has a syntax error",
        "Fix the line shown in the traceback ('python -m py_compile FILE' or 'node --check "
        "FILE' checks a file without running it). Make sure --python or --nodejs is the "
        "version the app is written for.",
    ),
    "app_missing": Category(
        "The startup file does not define a WSGI application",
        "Ferryman serves the callable named 'application' (or 'app') in the startup file. "
        "Define it there, or import it, e.g. 'from mysite.wsgi import application'.",
    ),
    "asgi_app": Category(
        "The app is an ASGI application (FastAPI, Starlette, Django's ASGI handler...), "
        "started as a WSGI one",
        "Serve it as ASGI: add --app-type asgi (the same startup file is then served by "
        "Ferryman's ASGI loader: lifespan, streaming, WebSockets, any number of requests at "
        "once per process). Named asgi.py or main.py, it is found as ASGI without the flag. "
        "If the project also has a WSGI entry point (Django's wsgi.py), point --startup-file "
        "at that instead.",
    ),
    "wsgi_app": Category(
        "The app is a WSGI application (Flask, Django's WSGI handler...), started as an ASGI one",
        "Serve it as WSGI: --app-type wsgi (Ferryman finds passenger_wsgi.py, wsgi.py or "
        "app.py as WSGI by itself). Or wrap it for ASGI with a WSGI-to-ASGI adapter.",
    ),
    "lifespan_failed": Category(
        "The app's lifespan startup failed",
        "The app's startup code (FastAPI's lifespan or on_startup handlers, Starlette's "
        "lifespan) raised or reported a failure; read its error and traceback below. Common "
        "causes are a database or service it connects to at startup, or a missing "
        "environment variable (--envvar NAME=VALUE).",
    ),
    "app_not_callable": Category(
        "The app's 'application' (or 'app') is not callable",
        "It must be a WSGI callable: a function or object taking (environ, start_response).",
    ),
    "startup_file_missing": Category(
        "The startup file does not exist",
        "Check the app directory and --startup-file. Ferryman looks for passenger_wsgi.py, "
        "wsgi.py or app.py when no startup file is given.",
    ),
    "interpreter_not_found": Category(
        "The interpreter could not be run",
        "--python must name a Python 3.9 (or newer) interpreter that exists and is executable "
        "(e.g. /srv/app/.venv/bin/python); --nodejs a Node.js 18 (or newer) one.",
    ),
    "interpreter_failed": Category(
        "The interpreter exited before Ferryman's loader could start",
        "Make sure --python names a Python 3.9 (or newer) interpreter, or --nodejs a Node.js "
        "18 (or newer) one; the output below shows what it printed.",
    ),
    "listen_failed": Category(
        "The app could not listen on the socket Ferryman gave it",
        "See the error below; check that the temp directory is writable.",
    ),
    "exited": Category(
        "The app process exited while it was starting",
        "Something the app ran while starting ended the process: an explicit exit (in "
        "Python sys.exit(), in Node.js process.exit(), a shell command's exit code), a "
        "crash, or being killed. The output below usually says why.",
    ),
    "timeout": Category(
        "The app did not finish starting in time",
        "Look for slow work while the app is loaded, such as connecting to a database or "
        "service that does not answer. A Node.js app must call listen(); an app started with "
        "--app-start-command must listen on 127.0.0.1:$PORT. If the app just needs longer, "
        "raise --start-timeout.",
    ),
    "handshake_malformed": Category(
        "The app process sent data Ferryman could not understand",
        "Something in the app process wrote to the file descriptor Ferryman's loader uses to "
        "report progress. If the app does not do that, please report this as a Ferryman bug.",
    ),
    "loader_mismatch": Category(
        "Ferryman's loader and Ferryman's core are from different versions",
        "The loader file that ran in the app process speaks another version of the "
        "handshake than this core. This happens when Ferryman was upgraded while it was "
        "running, or when two installations are mixed: reinstall Ferryman and restart it.",
    ),
    "internal": Category(
        "Ferryman itself failed while starting the process",
        "This is a bug in Ferryman; please report it with the error ID and the log.",
    ),
}
_UNKNOWN = Category("The app could not be started", "See the details below.")


def category_of(error: SpawnError) -> Category:
    return CATEGORIES.get(error.category, _UNKNOWN)


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
 margin:0;background:#f4f4f2;color:#222}
main{max-width:60rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin:.2rem 0 1rem;color:#a00}
h2{font-size:1.15rem;margin:1.8rem 0 .5rem;border-bottom:1px solid #ccc}
.summary{background:#fff;border-left:.35rem solid #c00;padding:.8rem 1rem}
.hint{background:#fff;border-left:.35rem solid #3a7;padding:.8rem 1rem}
pre{background:#1e1e1e;color:#eee;padding:.8rem;overflow:auto;font-size:13px;
 white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.v{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
tr.errored{background:#fdd;font-weight:bold}
tr.performed td.s{color:#275}
tr.not-started{color:#888}
footer{margin-top:2rem;color:#666;font-size:13px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _journey_rows(journey: Journey | None, failed: str) -> str:
    if journey is None:
        return ""
    rows = []
    for step in journey.steps.values():
        state = step.state
        css = state.name.lower().replace("_", "-")
        mark = " &larr; failed here" if step.name == failed else ""
        duration = "" if step.duration is None else f"{step.duration * 1000:.0f} ms"
        side = "Ferryman" if step.side == "core" else "app process"
        rows.append(
            f'<tr class="{css}"><td>{_e(step.title)}{mark}</td><td>{_e(side)}</td>'
            f'<td class="s">{_e(state.value)}</td><td>{_e(duration)}</td></tr>'
        )
    head = "<tr><th>Step</th><th>Where</th><th>State</th><th>Time</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render_friendly(error: SpawnError) -> bytes:
    """The developer's page: everything that explains the failure."""
    category = category_of(error)
    journey = error.journey
    failed_title = error.step
    if journey is not None and error.step in journey.steps:
        failed_title = journey.steps[error.step].title
    output = "\n".join(error.output) if error.output else "(the app printed nothing)"
    details = (
        f"<h2>Error details</h2><pre>{_e(error.details)}</pre>" if error.details.strip() else ""
    )
    env_rows = "".join(
        f'<tr><td>{_e(name)}</td><td class="v">{_e(value)}</td></tr>'
        for name, value in error.environment
    )
    # Sections with nothing to show are left out, never shown empty.
    journey_section = (
        f"<h2>Journey</h2>\n{_journey_rows(journey, error.step)}" if journey is not None else ""
    )
    environment_section = (
        "<h2>Environment given to the app</h2>\n<p>Values of variables whose names look "
        "secret are redacted, as are passwords in URLs.</p>\n"
        f"<table>{env_rows}</table>"
        if error.environment
        else ""
    )
    interpreter = (
        f" &middot; Interpreter: {_e(error.interpreter)} {_e(error.interpreter_version)}"
        if error.interpreter
        else ""
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(error.created_at))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title><style>{_STYLE}</style></head>
<body><main>
<h1>{TITLE}</h1>
<div class="summary"><p><strong>{_e(category.title)}.</strong></p>
<p>{_e(error.summary)}</p>
<p>Failed step: <strong>{_e(failed_title)}</strong> ({_e(error.step)}).
Category: <code>{_e(error.category)}</code>.</p></div>
<h2>How to fix it</h2>
<div class="hint"><p>{_e(category.hint)}</p></div>
{details}
{journey_section}
<h2>Output of the app process (last {len(error.output)} lines)</h2>
<pre>{_e(output)}</pre>
{environment_section}
<footer>
<p>Error ID: <strong>{_e(error.error_id)}</strong> &middot; {_e(when)}</p>
<p>App: {_e(error.app_root)}{interpreter}</p>
<p>Ferryman {_e(error.ferryman_version)} on Python {_e(platform.python_version())}.
This page is shown because friendly error pages are on (the default in development);
start Ferryman with --no-friendly-error-pages to show only the error ID.</p>
</footer>
</main></body></html>
"""
    return page.encode("utf-8")


def render_terse(error: SpawnError) -> bytes:
    """The production page: no detail about the app, only the ID to find it in the log."""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>
<style>{_STYLE}</style></head>
<body><main>
<h1>{TITLE}</h1>
<div class="summary"><p>The web application could not be started. The server's
administrator can find out why in the server log.</p></div>
<footer><p>Error ID: <strong>{_e(error.error_id)}</strong></p></footer>
</main></body></html>
"""
    return page.encode("utf-8")


def page_for(error: SpawnError, friendly: bool) -> bytes:
    """The page for ``error``, rendered once and kept on the error for every waiter."""
    page = error.pages.get(friendly)
    if page is None:
        page = render_friendly(error) if friendly else render_terse(error)
        error.pages[friendly] = page
    return page
