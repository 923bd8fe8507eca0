"""The command line as a user meets it: version, bad configuration, precedence, the log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ferryman import __version__, build
from ferryman.config import env_of, flag_of, settings

from .harness import APPS, STUB, serving, wait_until


def ferryman(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env=full_env,
        check=False,
    )


def test_version() -> None:
    """``ferryman --version`` prints the version, the build and the Python; exits 0."""
    result = ferryman("--version")
    assert result.returncode == 0
    python = ".".join(str(part) for part in sys.version_info[:3])
    assert result.stdout.strip() == f"ferryman {__version__} ({build()} build, Python {python})"


def test_the_expected_build_is_running() -> None:
    """.ci/run installs a compiled build and says so: the tests must not run the pure one.

    EXPECT_FERRYMAN_BUILD names the build the suite was started against (unset: any).
    """
    expected = os.environ.get("EXPECT_FERRYMAN_BUILD")
    if expected is None:
        pytest.skip("EXPECT_FERRYMAN_BUILD is not set: any build will do")
    assert build() == expected
    result = ferryman("--version")
    assert f"({expected} build," in result.stdout


def test_console_script_is_installed() -> None:
    """The ``ferryman`` console script exists next to the interpreter and works."""
    script = Path(sys.executable).with_name("ferryman")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flags", [(), ("--markdown",)], ids=["settings", "settings-markdown"])
def test_settings_prints_the_configuration_reference(flags: tuple[str, ...]) -> None:
    """``ferryman settings`` (``--markdown`` is the default) prints the reference of every
    setting, with its flag and environment variable: exactly docs/configuration.md, and
    every option the README's table names is in it."""
    result = ferryman("settings", *flags)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    reference = result.stdout
    assert reference == (REPOSITORY / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, spec, _ in settings():
        assert f"### `{name}`\n\n{spec.help}\n" in reference, name
        assert f"`{flag_of(name)}`" in reference, name
        assert f"* Environment: `{env_of(name)}`" in reference, name
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| option | default |") : readme.index("Every option can")]
    options = set(re.findall(r"`(-[A-Za-z]|--[a-z][a-z-]+)", table))
    assert {"--port", "-e", "--environment", "--envvar", "-S"} <= options, options
    for option in options:
        assert f"`{option}`" in reference, option


def app_dir(tmp_path: Path, toml: str | None = None) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
    )
    if toml is not None:
        (app / "Ferrymanfile.toml").write_text(toml)
    return app


BAD_FLAGS = [
    (["--max-pool-size", "0"], ["max_pool_size", "'0'", "integer >= 1", "--max-pool-size"]),
    (["--port", "99999"], ["port", "'99999'", "0 to 65535"]),
    (["--thread-count", "many"], ["thread_count", "'many'", "integer"]),
    (["--start-timeout", "-1"], ["start_timeout", "'-1'", "seconds"]),
    (["--log-level", "loud"], ["log_level", "'loud'", "one of debug, info, warning, error"]),
    (["--envvar", "NOEQUALS"], ["envvar", "NOEQUALS", "NAME=VALUE"]),
    (["--max-body-size", "lots"], ["max_body_size", "'lots'", "size in bytes"]),
    (["--trusted-proxies", "not-an-ip"], ["trusted_proxies", "not-an-ip", "IP addresses"]),
    (["--min-instances", "8", "--max-pool-size", "2"], ["min_instances", "8", "max_pool_size"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    (["--error-report-dir", "/nonexistent/reports"], ["error_report_dir", "existing directory"]),
]


@pytest.mark.parametrize(("flags", "words"), BAD_FLAGS)
def test_bad_flag_is_one_line_and_exit_2(
    tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    """An invalid value stops the start: exit 2, one line naming setting, value, what's allowed."""
    result = ferryman("start", str(app_dir(tmp_path)), *flags)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""


BAD_FILES = [
    ("port = \n", ["Ferrymanfile.toml", "invalid TOML"]),
    ("max_pol_size = 3\n", ["unknown setting 'max_pol_size'", "did you mean 'max_pool_size'"]),
    ('thread_count = "two"\n', ["thread_count", "two", "Ferrymanfile.toml"]),
    ("access_log = 3\n", ["access_log", "true or false"]),
]


@pytest.mark.parametrize(("toml", "words"), BAD_FILES)
def test_bad_config_file_is_one_line_and_exit_2(
    tmp_path: Path, toml: str, words: list[str]
) -> None:
    """A broken Ferrymanfile.toml stops the start with one line that says where and what."""
    result = ferryman("start", str(app_dir(tmp_path, toml)))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_bad_environment_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A bad FERRYMAN_<NAME> value names the variable."""
    result = ferryman("start", str(app_dir(tmp_path)), env={"FERRYMAN_MAX_POOL_SIZE": "none"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "FERRYMAN_MAX_POOL_SIZE" in result.stderr
    assert "'none'" in result.stderr


def test_no_app_found_lists_what_was_looked_for(tmp_path: Path) -> None:
    """A directory without a startup file: exit 2, one line with the names tried and where."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = ferryman("start", str(empty))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    for name in ("passenger_wsgi.py", "wsgi.py", "app.py", str(empty)):
        assert name in result.stderr


def test_missing_app_directory(tmp_path: Path) -> None:
    result = ferryman("start", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_precedence_file_then_environment_then_cli(tmp_path: Path) -> None:
    """The same setting from file, environment and CLI: the CLI wins, then the environment."""
    app = app_dir(tmp_path, "thread_count = 2\n")
    banner = re.compile(r"threads per process: (\d+)")
    with serving(app, "--thread-count", "4", env={"FERRYMAN_THREAD_COUNT": "3"}) as server:
        assert server.wait_for_log(banner).group(1) == "4"
    with serving(app, env={"FERRYMAN_THREAD_COUNT": "3"}) as server:
        assert server.wait_for_log(banner).group(1) == "3"
    with serving(app) as server:
        assert server.wait_for_log(banner).group(1) == "2"


#: Where the app finds its environment's name (as Passenger exports it).
APP_ENVIRONMENT_VARIABLES = ("WSGI_ENV", "PASSENGER_APP_ENV", "RACK_ENV", "RAILS_ENV", "NODE_ENV")


@pytest.mark.parametrize(
    "app",
    [STUB, APPS / "node_http", APPS / "generic_http", APPS / "rack_stub"],
    ids=["wsgi", "node", "generic", "rack"],
)
@pytest.mark.parametrize(
    ("flags", "expected"),
    [((), "development"), (("-e", "production"), "production"),
     (("--environment", "staging"), "staging")],
    ids=["default", "-e", "--environment"],
)  # fmt: skip
def test_the_environment_is_exported_to_the_app(
    app: Path, flags: tuple[str, ...], expected: str
) -> None:
    """The environment's name (-e, default development) is in the app process's own
    environment as WSGI_ENV, PASSENGER_APP_ENV, RACK_ENV, RAILS_ENV and NODE_ENV, over
    whatever the shell that started Ferryman had there."""
    if app.name.startswith("rack_"):
        from .test_rack import _need

        _need("rack")
    inherited = dict.fromkeys(APP_ENVIRONMENT_VARIABLES, "from-the-shell")
    with serving(app, *flags, env=inherited) as server:
        status, body = server.get("/osenv?names=" + ",".join(APP_ENVIRONMENT_VARIABLES))
        assert status == 200, body
        assert json.loads(body) == dict.fromkeys(APP_ENVIRONMENT_VARIABLES, expected)
        assert f"environment: {expected};" in server.log_text()


def test_access_log_uses_the_combined_format() -> None:
    """Every request is logged in the combined log format."""
    with serving(STUB) as server:
        status, _, _ = server.request(
            "GET", "/?q=1", headers={"Referer": "http://ref.example/", "User-Agent": "tester/1.0"}
        )
        assert status == 200
        line = server.wait_for_log(r'"GET /\?q=1 HTTP/1.1"').string
        assert re.search(
            r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
            r'"GET /\?q=1 HTTP/1.1" 200 \d+ "http://ref.example/" "tester/1.0"',
            line,
        ), line


def test_log_file_receives_the_log(tmp_path: Path) -> None:
    """--log-file gets the banner, app output and access log; the console still says where."""
    log_file = tmp_path / "ferryman.log"
    with serving(STUB, "--log-file", str(log_file), wait_ready=0) as server:
        assert wait_until(lambda: "ready" in log_file.read_text(), timeout=15)
        status, _ = server.get("/print?msg=to-the-file")
        assert status == 200
        console = server.log_text()
    text = log_file.read_text()
    assert "Listening on http://127.0.0.1:" in text
    assert "output: stub says: to-the-file" in text
    assert '"GET /print?msg=to-the-file HTTP/1.1" 200' in text
    assert f"Logging to {log_file}" in console
    assert "stub says" not in console


# -- interpreters, addresses: checked before anything listens --------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("--python", "no-such-python", "'no-such-python' was not found on PATH"),
        ("--python", "/nonexistent/bin/python", "/nonexistent/bin/python does not exist"),
        ("--python", "/usr", "/usr is a directory"),
        ("--python", "/bin/true", "/bin/true --version printed"),
    ],
)
def test_an_unusable_python_stops_the_start(flag: str, value: str, why: str) -> None:
    """One line naming the setting, the value and what is wrong; exit 2; nothing listens."""
    result = ferryman("start", str(STUB), "--port", "0", flag, value)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ferryman: invalid value {value!r} for python (from {flag}): ")
    assert why in lines[0]
    assert "Listening" not in result.stderr


def test_an_unusable_nodejs_stops_the_start(tmp_path: Path) -> None:
    result = ferryman("start", str(APPS / "node_http"), "--port", "0", "--nodejs", "/bin/true")
    assert result.returncode == 2
    assert "invalid value '/bin/true' for nodejs (from --nodejs)" in result.stderr
    assert "Node.js 18 (or newer)" in result.stderr


def test_a_wsgi_app_does_not_need_node(tmp_path: Path) -> None:
    """Only the interpreter the app runs under is checked."""
    with serving(STUB, "--nodejs", "/nonexistent/node") as server:
        assert server.get("/")[0] == 200


def test_a_relative_interpreter_path_is_relative_to_where_ferryman_runs(tmp_path: Path) -> None:
    """--python venv/bin/python means ./venv/bin/python from the shell's directory, not
    from the app's; the banner shows the path it resolved and the version."""
    here = tmp_path / "here"
    (here / "venv" / "bin").mkdir(parents=True)
    (here / "venv" / "bin" / "python").symlink_to(sys.executable)
    with serving(STUB, "--python", "venv/bin/python", cwd=here) as server:
        resolved = here / "venv" / "bin" / "python"
        version = "Python {}.{}.{}".format(*sys.version_info[:3])
        server.wait_for_log(re.escape(f"run by {resolved} ({version})"))
        assert server.get("/")[0] == 200


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("999.1.1.1", "must be an IP address or a host name"),
        ("bad_host!", "must be an IP address or a host name"),
        ("nosuchhost.invalid", "must be an address of this machine or a host name that resolves"),
        ("192.0.2.1", "must be an address of this machine"),  # TEST-NET: not ours
    ],
)
def test_an_address_that_cannot_be_used_is_a_configuration_error(address: str, why: str) -> None:
    result = ferryman("start", str(STUB), "--port", "0", "--address", address)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ferryman: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ferryman: invalid value {address!r} for address (from --address)")
    assert why in lines[0]
    assert "Traceback" not in result.stderr


def test_dash_capital_v_is_version() -> None:
    result = ferryman("-V")
    assert result.returncode == 0
    assert result.stdout.strip() == ferryman("--version").stdout.strip()


# -- app output and log levels ------------------------------------------------------------------


def test_log_level_warning_keeps_the_apps_output() -> None:
    """--log-level warning quiets Ferryman's own info lines, not the app: its traceback
    (stderr) and its prints (stdout) are still logged."""
    with serving(STUB, "--log-level", "warning", "--no-access-log", wait_ready=0) as server:
        mark = server.mark()
        assert server.get("/error")[0] == 500
        server.wait_for_log(r"WARNING .*App \d+ output: RuntimeError: stub error", start=mark)
        assert server.get("/print?msg=hello")[0] == 200
        server.wait_for_log(r"INFO .*App \d+ output: stub says: hello", start=mark)
        assert not any("Starting a process" in line for line in server.lines)


def test_app_output_level_warning_keeps_only_stderr() -> None:
    with serving(STUB, "--app-output-level", "warning", "--no-access-log") as server:
        mark = server.mark()
        assert server.get("/print?msg=quiet")[0] == 200
        assert server.get("/error")[0] == 500
        server.wait_for_log(r"App \d+ output: RuntimeError: stub error", start=mark)
        assert not any("stub says: quiet" in line for line in server.lines[mark:])


# -- ferryman settings APP_DIR --------------------------------------------------------------------


def test_settings_of_an_app_say_where_each_value_comes_from(tmp_path: Path) -> None:
    """Defaults, the file, the environment and flags, as 'ferryman start' would combine
    them, each with its origin; the text is valid TOML that holds the same values."""
    app = app_dir(tmp_path, "min_instances = 2\nthread_count = 3\n")
    result = ferryman(
        "settings", str(app), "--thread-count", "5", "--envvar", "A=1",
        env={"FERRYMAN_PORT": "8123"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    origins = {}
    for line in result.stdout.splitlines():
        if " = " in line and not line.startswith("#"):
            name = line.split(" = ")[0]
            origins[name] = line.rsplit("# ", 1)[1]
    assert origins["min_instances"] == "Ferrymanfile.toml key min_instances"
    assert origins["thread_count"] == "--thread-count"  # the flag beats the file
    assert origins["port"] == "FERRYMAN_PORT"
    assert origins["max_pool_size"] == "default"
    values = tomllib.loads(result.stdout)
    assert values["thread_count"] == 5 and values["port"] == 8123
    assert values["envvar"] == {"A": "1"}
    assert "socket" not in values  # not set: shown as a comment


def test_settings_as_json(tmp_path: Path) -> None:
    app = app_dir(tmp_path, "environment = 'production'\n")
    result = ferryman("settings", str(app), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["app_dir"] == str(app.resolve())
    assert document["settings"]["environment"] == {
        "value": "production",
        "origin": "Ferrymanfile.toml key environment",
    }
    assert document["settings"]["socket"] == {"value": None, "origin": "default"}


def test_settings_of_an_app_with_an_invalid_value_is_the_usual_error(tmp_path: Path) -> None:
    app = app_dir(tmp_path, "max_pool_size = 0\n")
    result = ferryman("settings", str(app))
    assert result.returncode == 2
    assert "invalid value '0' for max_pool_size" in result.stderr


def test_settings_without_an_app_is_the_reference() -> None:
    result = ferryman("settings")
    assert result.returncode == 0
    assert result.stdout.startswith("# Configuration reference")


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [
        ("--socket-mode", "999", "an octal file mode"),
        ("--socket-mode", "rw-rw----", "an octal file mode"),
        ("--socket-owner", "no-such-user-here", "USER, USER:GROUP or :GROUP"),
        ("--socket-owner", "root:no-such-group", "USER, USER:GROUP or :GROUP"),
        ("--trusted-proxies", "unix-ish", "or 'unix'"),
    ],
)
def test_socket_settings_are_checked(tmp_path: Path, flag: str, value: str, allowed: str) -> None:
    result = ferryman("start", str(STUB), "-S", str(tmp_path / "s.sock"), flag, value)
    assert result.returncode == 2
    assert f"invalid value {value!r} for {flag[2:].replace('-', '_')}" in result.stderr
    assert allowed in result.stderr
