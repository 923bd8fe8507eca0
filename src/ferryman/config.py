"""The settings registry: every setting declared once, and the resolved ``Config``.

Each field of ``Config`` is a setting: its type, default, validation and help
live in one ``setting(...)`` declaration. The CLI flags, the ``Ferrymanfile.toml``
keys, the ``FERRYMAN_<NAME>`` environment variables and ``docs/configuration.md``
are all derived from these fields. Precedence: defaults < file < environment < CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import grp
import ipaddress
import math
import pwd
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .spawning.kinds import KINDS

CONFIG_FILE = "Ferrymanfile.toml"
ENV_PREFIX = "FERRYMAN_"


# -- kinds of values --------------------------------------------------------------------

#: Trusted proxies: networks, and UNIX_PEERS for peers on the Unix socket.
ProxyNetworks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | str, ...]


@dataclass(frozen=True)
class Kind:
    """How to read a setting's value from text (CLI, environment) or TOML, and what is allowed."""

    allowed: str
    parse: Callable[[Any], Any]
    metavar: str = "VALUE"
    #: Settings of a repeatable kind take a list: the CLI flag repeats, the
    #: environment variable is split like a shell would.
    repeatable: bool = False
    boolean: bool = False


def _int_kind(low: int, high: int | None = None, note: str = "") -> Kind:
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    if note:
        allowed += f" ({note})"

    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, str):
            raw = raw.strip()
            if not re.fullmatch(r"[+-]?\d+", raw):
                raise ValueError
        if not isinstance(raw, int | str):
            raise ValueError
        value = int(raw)
        if value < low or (high is not None and value > high):
            raise ValueError
        return value

    return Kind(allowed, parse, "N")


def _seconds_kind(positive: bool = True) -> Kind:
    allowed = "a number of seconds > 0" if positive else "a number of seconds >= 0"

    def parse(raw: Any) -> float:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw.strip() if isinstance(raw, str) else raw)
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError
        return value

    return Kind(allowed, parse, "SECONDS")


_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3
}  # fmt: skip


def _size_kind(zero_means: str = "") -> Kind:
    allowed = "a size in bytes, optionally with a k, m or g suffix (e.g. 512k, 100m)"
    if zero_means:
        allowed += f"; 0 = {zero_means}"

    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, int):
            value = raw
        else:
            match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(raw))
            if not match or match.group(2).lower() not in _SIZE_UNITS:
                raise ValueError
            value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
        if value < 0 or (value == 0 and not zero_means):
            raise ValueError
        return value

    return Kind(allowed, parse, "SIZE")


def _choice_kind(*choices: str) -> Kind:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in choices:
            raise ValueError
        return raw.strip().lower()

    return Kind("one of " + ", ".join(choices), parse, "{" + ",".join(choices) + "}")


_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)


def _cookie_name_kind() -> Kind:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", raw):
            raise ValueError
        return raw

    return Kind("a cookie name: 1 to 64 letters, digits or !#$%&'*+-.^_`|~", parse, "NAME")


def _cookie_attributes_kind() -> Kind:
    def parse(raw: Any) -> str:
        # Printable ASCII only: a line break would let the value add headers of its own.
        if not isinstance(raw, str) or not re.fullmatch(r"[\x20-\x7e]{0,256}", raw):
            raise ValueError
        return raw.strip()

    return Kind(
        "cookie attributes such as 'SameSite=Lax; Secure' (printable ASCII, at most 256)",
        parse,
        "ATTRIBUTES",
    )


def _address_kind() -> Kind:
    """An IP address, or a host name by RFC 1123's rules; something that looks like an
    IPv4 address but is not one (999.1.1.1) is refused here, not when binding."""

    def parse(raw: Any) -> str:
        if not isinstance(raw, str):
            raise ValueError
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        if re.fullmatch(r"[0-9.]+", text) or not _HOST_NAME.fullmatch(text):
            raise ValueError
        return text

    return Kind(
        "an IP address or a host name (e.g. 127.0.0.1, ::1, 0.0.0.0, localhost)", parse, "HOST"
    )


def _host_port_kind() -> Kind:
    """HOST:PORT, the host as _address_kind allows it ([::1]:3001 for IPv6), the port > 0."""
    address = _address_kind()

    def parse(raw: Any) -> str:
        if not isinstance(raw, str):
            raise ValueError
        host, sep, port = raw.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError
        host = address.parse(host)
        return f"[{host}]:{int(port)}" if ":" in host else f"{host}:{int(port)}"

    return Kind("HOST:PORT, e.g. 127.0.0.1:3001 or [::1]:3001", parse, "HOST:PORT")


def _path_kind(allowed: str) -> Kind:
    """An HTTP path: starts with /, no query, no spaces or control characters."""

    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or not re.fullmatch(r"/[!-~]*", raw.strip()):
            raise ValueError
        if "?" in raw or "#" in raw:
            raise ValueError
        return raw.strip()

    return Kind(allowed, parse, "PATH")


def _mode_kind() -> Kind:
    def parse(raw: Any) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            text = format(raw, "o")  # TOML's 0o660, or a plain 660 meant as octal
        elif isinstance(raw, str):
            text = raw.strip().removeprefix("0o")
        else:
            raise ValueError
        if not re.fullmatch(r"[0-7]{3,4}", text) or int(text, 8) > 0o777:
            raise ValueError
        return int(text, 8)

    return Kind("an octal file mode such as 0660 or 0666", parse, "MODE")


def _owner_kind() -> Kind:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError
        user, _, group = raw.strip().partition(":")
        try:
            if user:
                pwd.getpwnam(user)
            if group:
                grp.getgrnam(group)
        except KeyError:
            raise ValueError from None
        if not user and not group:
            raise ValueError
        return raw.strip()

    return Kind("USER, USER:GROUP or :GROUP naming an existing user and group", parse, "OWNER")


def _app_type_kind() -> Kind:
    """'auto' or a kind of the registry (read when a value is checked, so kinds added
    later are allowed too)."""

    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in ("auto", *KINDS):
            raise ValueError
        return raw.strip().lower()

    names = ("auto", *KINDS)
    return Kind("one of " + ", ".join(names), parse, "{" + ",".join(names) + "}")


def _text_kind(allowed: str = "a non-empty string", metavar: str = "TEXT") -> Kind:
    def parse(raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError
        return raw

    return Kind(allowed, parse, metavar)


def _bool_parse(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise ValueError


BOOL = Kind("true or false (also 1/0, yes/no, on/off)", _bool_parse, boolean=True)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pairs(raw: Any) -> list[tuple[str, Any]]:
    """KEY=VALUE entries (command line, environment) or a TOML table, as (key, value)."""
    if isinstance(raw, Mapping):
        return [(str(key), value) for key, value in raw.items()]
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ValueError
    pairs: list[tuple[str, Any]] = []
    for entry in raw:
        if not isinstance(entry, str) or "=" not in entry:
            raise ValueError
        key, _, value = entry.partition("=")
        pairs.append((key, value))
    return pairs


def _envvars_parse(raw: Any) -> tuple[tuple[str, str], ...]:
    items: list[tuple[str, str]] = []
    for name, value in _pairs(raw):
        # TOML may give a number; a table or a boolean is not a variable's value.
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError
        if not _ENV_NAME.fullmatch(name):
            raise ValueError
        items.append((name, str(value)))
    return tuple(items)


ENVVARS = Kind(
    "NAME=VALUE with NAME made of letters, digits and _ (in Ferrymanfile.toml: a table "
    '[envvar] with NAME = "value" strings)',
    _envvars_parse,
    "NAME=VALUE",
    repeatable=True,
)


def _static_dirs_parse(raw: Any) -> tuple[tuple[str, str], ...]:
    pairs = _pairs(raw)
    items = []
    for raw_url, directory in pairs:
        url = raw_url.strip()
        if not isinstance(directory, str) or not directory.strip():
            raise ValueError
        if not re.fullmatch(r"/[!-~]*", url) or "?" in url or "#" in url or "%" in url:
            raise ValueError
        items.append((url, directory.strip()))
    return tuple(items)


STATIC_DIRS = Kind(
    "URL=DIR with URL an HTTP path prefix such as /static and DIR a directory (relative to "
    'the app\'s directory); in Ferrymanfile.toml: a table [static_dir] with "/static" = '
    '"staticfiles"',
    _static_dirs_parse,
    "URL=DIR",
    repeatable=True,
)


#: In trusted_proxies: peers on a Unix socket (--socket) are trusted.
UNIX_PEERS = "unix"


def _networks_parse(raw: Any) -> ProxyNetworks:
    entries = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(entries, Sequence):
        raise ValueError
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network | str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError
        for part in entry.replace(",", " ").split():
            if part.lower() == UNIX_PEERS:
                nets.append(UNIX_PEERS)
            else:
                nets.append(ipaddress.ip_network(part, strict=False))
    return tuple(nets)


NETWORKS = Kind(
    "IP addresses or networks (e.g. 127.0.0.1, 10.0.0.0/8, ::1), or 'unix' for peers on "
    "the Unix socket",
    _networks_parse,
    "ADDR",
    repeatable=True,
)


# -- several apps --------------------------------------------------------------------------

#: Settings an app mounted with --app / [[app]] may set for itself; the others are the
#: server's (listening, logging, the shared pool size...). The mounted app inherits each
#: from the top level, except those that say which app it is (APP_IDENTITY).
PER_APP = frozenset(
    {
        "environment", "app_type", "startup_file", "python", "nodejs", "ruby", "rackup",
        "app_start_command", "envvar", "thread_count", "start_timeout",
        "friendly_error_pages", "spawn_error_status_code", "spawn_backoff", "min_instances",
        "max_instances", "force_max_concurrent_requests_per_process",
        "max_request_queue_size", "pool_idle_time", "rolling_restarts",
        "rolling_restart_batch", "max_request_queue_time", "max_requests",
        "max_requests_jitter", "resist_deployment_errors", "sticky_sessions",
        "sticky_sessions_cookie_name", "sticky_sessions_cookie_attributes", "static_dir",
        "buffer_request_bodies", "unbuffered_request_path",
    }
)  # fmt: skip
#: Per-app settings that name the app itself or its files: a mounted app does not
#: inherit them.
APP_IDENTITY = frozenset({"app_type", "startup_file", "rackup", "app_start_command", "static_dir"})
_HOST_NAME = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")


@dataclass(frozen=True, slots=True)
class Mount:
    """One more app the server serves: for requests to one of ``hosts`` (any host when
    empty) whose path is ``prefix`` or below it, from the app in ``root``."""

    root: str
    prefix: str = "/"
    hosts: tuple[str, ...] = ()
    #: Its own values of PER_APP settings, parsed: (name, value) pairs.
    settings: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        return f"{mounted_at(self.hosts, self.prefix)}={self.root}"


def mounted_at(hosts: tuple[str, ...], prefix: str) -> str:
    """Where an app is mounted, as the status shows it: ``/api``, ``a.test,b.test/``."""
    return ",".join(hosts) + prefix


def _prefix_parse(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.startswith("/"):
        raise ValueError
    segments = [part for part in raw.split("/") if part]
    for part in segments:
        if part in (".", "..") or not _PREFIX_SEGMENT.fullmatch(part):
            raise ValueError
    return "/" + "/".join(segments)


def _paths_parse(raw: Any) -> tuple[str, ...]:
    entries = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(entries, Sequence):
        raise ValueError
    paths: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError
        paths.extend(_prefix_parse(part) for part in entry.replace(",", " ").split())
    return tuple(paths)


URL_PATHS = Kind(
    "URL paths such as /upload (each one and every path below it)",
    _paths_parse,
    "PATH",
    repeatable=True,
)


def _host_parse(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw) > 253 or not _HOST_NAME.fullmatch(raw):
        raise ValueError
    return raw.lower()


def _mount_parse(raw: Any) -> Mount:
    if isinstance(raw, str):
        where, sep, root = raw.partition("=")
        slash = where.find("/")
        if not sep or not root.strip() or slash < 0:
            raise ValueError
        host, prefix = where[:slash], where[slash:]
        return Mount(root.strip(), _prefix_parse(prefix), (_host_parse(host),) if host else ())
    if not isinstance(raw, Mapping):
        raise ValueError
    table = dict(raw)
    root = table.pop("root", None)
    if not isinstance(root, str) or not root.strip():
        raise ValueError
    prefix = _prefix_parse(table.pop("prefix", "/"))
    hosts_raw = table.pop("hosts", None)
    host_raw = table.pop("host", None)
    if hosts_raw is not None and host_raw is not None:
        raise ValueError
    if host_raw is not None:
        hosts_raw = [host_raw]
    if hosts_raw is None:
        hosts_raw = []
    if not isinstance(hosts_raw, list) or not all(isinstance(h, str) for h in hosts_raw):
        raise ValueError
    hosts = tuple(_host_parse(h) for h in hosts_raw)
    known = {name: spec for name, spec, _ in settings()}
    values: list[tuple[str, Any]] = []
    for key, value in table.items():
        if key not in PER_APP:
            hint = (
                "it is a setting of the whole server, set at the top level"
                if key in known
                else "not a setting (settings are listed by 'ferryman settings')"
            )
            raise ConfigError(
                f"invalid key {key!r} in the [[app]] table for {root}: {hint}; an app may set "
                f"root, prefix, host or hosts, and these settings: {', '.join(sorted(PER_APP))}"
            )
        values.append((key, _parse(key, value, known[key], f"the [[app]] table for {root}")))
    return Mount(root.strip(), prefix, hosts, tuple(values))


def _mounts_parse(raw: Any) -> tuple[Mount, ...]:
    entries = [raw] if isinstance(raw, str | Mapping) else raw
    if not isinstance(entries, Sequence):
        raise ValueError
    return tuple(_mount_parse(entry) for entry in entries)


MOUNTS = Kind(
    "[HOST]/PREFIX=DIR, e.g. /api=./api or admin.example.com/=./admin (in "
    f"{CONFIG_FILE}: [[app]] tables with root, prefix, host or hosts, and per-app settings)",
    _mounts_parse,
    "[HOST]/PREFIX=DIR",
    repeatable=True,
)


def _port_or_zero() -> Kind:
    return _int_kind(0, 65535, "0 = any free port")


# -- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    kind: Kind
    help: str
    section: str
    short: str | None = None
    #: How the docs describe the default, when the value alone would not say it.
    default_text: str | None = None


def setting(
    default: Any,
    kind: Kind,
    help: str,
    section: str,
    *,
    short: str | None = None,
    default_text: str | None = None,
) -> Any:
    """Declare a setting: the one place its default, validation and help are written."""
    spec = Spec(kind, help.strip(), section, short, default_text)
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``ferryman start`` runs with. Only ``app_dir`` and ``origins`` are not
    settings."""

    app_dir: Path
    #: Where each setting not at its default came from: a flag, a variable, a file key.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    # Listening
    port: int = setting(3000, _port_or_zero(), "TCP port to listen on.", "Listening", short="-p")
    address: str = setting(
        "127.0.0.1",
        _address_kind(),
        "Address to listen on: an IP address of this machine (0.0.0.0 or :: for all) or a "
        "host name that resolves to one.",
        "Listening",
        short="-a",
    )
    socket: str | None = setting(
        None,
        _text_kind("a file path", "PATH"),
        "Listen on this Unix domain socket instead of TCP.",
        "Listening",
        short="-S",
    )

    socket_mode: int = setting(
        0o660,
        _mode_kind(),
        "Permissions of the --socket file: 0660 lets its owner and group (e.g. nginx's, with "
        "--socket-owner) connect, and nobody else.",
        "Listening",
        default_text="0660",
    )
    socket_owner: str | None = setting(
        None,
        _owner_kind(),
        "Owner of the --socket file, as USER or USER:GROUP (e.g. app:www-data, so that "
        "nginx running as www-data may connect); changing the user needs root, a group "
        "you belong to does not.",
        "Listening",
        default_text="the user Ferryman runs as",
    )

    # TLS
    ssl: bool = setting(
        False,
        BOOL,
        "Serve HTTPS: TLS 1.2 or newer (ALPN http/1.1) with ssl_certificate and "
        "ssl_certificate_key, on the main port, or with ssl_port on that port only while "
        "the main port stays plain HTTP. Apps see wsgi.url_scheme https (X-Forwarded-Proto: "
        "https). SIGHUP reloads the certificate and key (a pair that does not load is "
        "logged and the old one stays). Not on a Unix socket (--socket): there, use "
        "ssl_port.",
        "TLS",
    )
    ssl_certificate: str | None = setting(
        None,
        _text_kind("a path to a PEM certificate file", "PATH"),
        "The server's certificate, in PEM, followed by its intermediate certificates "
        "(certbot's fullchain.pem).",
        "TLS",
    )
    ssl_certificate_key: str | None = setting(
        None,
        _text_kind("a path to a PEM private key file", "PATH"),
        "The certificate's private key, in PEM and without a passphrase (certbot's privkey.pem).",
        "TLS",
    )
    ssl_port: int | None = setting(
        None,
        _int_kind(1, 65535),
        "With ssl: serve HTTPS on this port (on the same address) and keep plain HTTP on "
        "the main port; with --socket, HTTPS on this TCP port besides the Unix socket.",
        "TLS",
        default_text="HTTPS on the main port",
    )

    # Application
    environment: str = setting(
        "development",
        _text_kind("a name such as development or production", "NAME"),
        "The app's environment; exported to the app as WSGI_ENV, PASSENGER_APP_ENV, "
        "RACK_ENV, RAILS_ENV and NODE_ENV.",
        "Application",
        short="-e",
    )
    app_type: str = setting(
        "auto",
        _app_type_kind(),
        "What kind of app this is: a Python WSGI or ASGI app, a Ruby Rack app, a Node.js "
        "app, or any program that listens on $PORT (generic); 'auto' detects it from the "
        "files in the app directory.",
        "Application",
    )
    startup_file: str | None = setting(
        None,
        _text_kind("a file path", "PATH"),
        "The app's startup file, relative to the app directory (default: passenger_wsgi.py, "
        "wsgi.py or app.py, then asgi.py or main.py, whichever exists first); for Python, "
        "also uvicorn's 'module:attribute' form (main:app, mysite.asgi:application).",
        "Application",
    )
    python: str = setting(
        sys.executable,
        _text_kind("a path to a Python interpreter", "PATH"),
        "Python interpreter that runs the app (default: the one Ferryman runs on).",
        "Application",
    )
    nodejs: str = setting(
        "node",
        _text_kind("a path to a Node.js interpreter", "PATH"),
        "Node.js interpreter that runs Node.js apps.",
        "Application",
    )
    ruby: str = setting(
        "ruby",
        _text_kind("a path to a Ruby interpreter", "PATH"),
        "Ruby interpreter that runs Rack apps (Ruby 3.0 or newer).",
        "Application",
    )
    rackup: str | None = setting(
        None,
        _text_kind("a file path", "PATH"),
        "The Rack app's rackup file, relative to the app directory (default: config.ru); "
        "implies app_type rack.",
        "Application",
    )
    app_start_command: str | None = setting(
        None,
        _text_kind("a shell command", "COMMAND"),
        "Run the app with this shell command (e.g. './server --port $PORT'); Ferryman picks "
        "a free loopback port, passes it as $PORT and forwards HTTP to it. Without this, a "
        "'web:' line in a Procfile is used when no Python or Node.js app is found.",
        "Application",
    )
    envvar: tuple[tuple[str, str], ...] = setting(
        (),
        ENVVARS,
        "Set an environment variable for the app; repeat for several.",
        "Application",
    )
    static_dir: tuple[tuple[str, str], ...] = setting(
        (),
        STATIC_DIRS,
        "Serve the files of DIR under the URL prefix in the core, without the app (e.g. "
        "/static=staticfiles for Django's STATIC_ROOT); repeat for several. Under the prefix "
        "the core answers alone: 404 for a missing file. The app's public/ directory is "
        "served too, at /, but a file missing there goes to the app.",
        "Application",
    )
    thread_count: int = setting(
        1,
        _int_kind(1, 10000),
        "Threads per WSGI process: how many requests one process serves at once.",
        "Application",
    )
    start_timeout: float = setting(
        90.0,
        _seconds_kind(),
        "How long a process may take to start before it is killed.",
        "Application",
    )
    stat_throttle_rate: float = setting(
        1.0,
        _seconds_kind(positive=False),
        "How often, at most, tmp/restart.txt in the app directory is checked; touching it "
        "restarts the app's processes.",
        "Application",
    )

    # Errors
    friendly_error_pages: bool | None = setting(
        None,
        BOOL,
        "When an app cannot start, show a detailed error page (journey, traceback, output, "
        "environment) instead of a page with only the error ID.",
        "Errors",
        default_text="on in the development environment, off otherwise",
    )
    spawn_error_status_code: int = setting(
        500,
        _int_kind(400, 599),
        "HTTP status of the error page for an app that cannot start.",
        "Errors",
    )
    error_report_dir: str | None = setting(
        None,
        _text_kind("a directory path", "DIR"),
        "Where error reports (ferryman-error-<ID>.html) are written.",
        "Errors",
        default_text="the system temp directory",
    )
    error_report_limit: int = setting(
        50,
        _int_kind(0, note="0 = write no reports"),
        "How many error reports are kept; older ones are deleted.",
        "Errors",
    )
    spawn_backoff: float = setting(
        1.0,
        _seconds_kind(positive=False),
        "After an app fails to start, wait this long before starting it again; the wait "
        "doubles with each failure in a row, up to 60 s. Requests meanwhile get the error "
        "page at once. 0 = try again on the next request.",
        "Errors",
    )

    # Pool
    min_instances: int = setting(1, _int_kind(0), "Processes kept running even when idle.", "Pool")
    max_pool_size: int = setting(
        6, _int_kind(1), "Most app processes in all, counting those being started.", "Pool"
    )
    max_instances: int = setting(
        0,
        _int_kind(0, note="0 = only max_pool_size limits it"),
        "Most processes for the app.",
        "Pool",
    )
    force_max_concurrent_requests_per_process: int = setting(
        0,
        _int_kind(0, note="0 = no limit"),
        "For apps that serve any number of requests at once (ASGI, Node.js, generic): count a "
        "process as fully busy at this many, so that the pool starts more processes under "
        "load and queues requests beyond them.",
        "Pool",
    )
    max_request_queue_size: int = setting(
        100,
        _int_kind(0, note="0 = unbounded"),
        "Requests that may wait for a process; beyond it they get 503 at once.",
        "Pool",
    )
    pool_idle_time: float = setting(
        300.0,
        _seconds_kind(positive=False),
        "Processes above min_instances that served no request for this long are stopped "
        "(0 = never).",
        "Pool",
    )
    rolling_restarts: bool = setting(
        True,
        BOOL,
        "Restarts (tmp/restart.txt, SIGHUP, ferryman restart-app) replace the processes a "
        "batch at a time: a new process starts while the old ones serve, and an old one "
        "stops taking requests only once its replacement is ready (it finishes those it "
        "has). No request waits for a spawn because of a restart. Off, or with "
        "min_instances 0: every process is replaced at once and requests wait for the new "
        "ones.",
        "Pool",
    )
    rolling_restart_batch: int = setting(
        1,
        _int_kind(1, 1000),
        "Processes replaced at a time in a rolling restart. The pool may hold this many "
        "processes above max_pool_size meanwhile: the new ones start before the old ones go.",
        "Pool",
    )
    memory_limit: int = setting(
        0,
        _int_kind(0, note="0 = no limit"),
        "Replace a process whose resident memory, with its children's, is above this many "
        "MB (checked every 2 seconds): its replacement starts first, then it finishes its "
        "requests and stops.",
        "Pool",
    )
    max_request_queue_time: float = setting(
        0.0,
        _seconds_kind(positive=False),
        "A request that waited this long in the queue for a process gets 504 (0 = no "
        "limit): under overload, clients learn at once instead of waiting on.",
        "Pool",
    )
    max_request_time: float = setting(
        0.0,
        _seconds_kind(positive=False),
        "A request that an app process works on longer than this gets 504, and the process "
        "is killed and replaced (0 = no limit); before the kill, Python loaders log every "
        "thread's stack and the Node.js loader its requests in flight, to show where it "
        "hung. The whole response counts: leave it 0 for apps that stream for long.",
        "Pool",
    )
    max_requests: int = setting(
        0,
        _int_kind(0, note="0 = no limit"),
        "Replace a process after it has served this many requests (for apps that leak "
        "memory): its replacement starts first, then it finishes its requests and stops.",
        "Pool",
    )
    max_requests_jitter: int = setting(
        0,
        _int_kind(0),
        "Add a random 0..N to each process's max_requests, so that processes started "
        "together are not all replaced together.",
        "Pool",
    )
    resist_deployment_errors: bool = setting(
        True,
        BOOL,
        "When the new version cannot start during a rolling restart, keep the old processes "
        "serving (the error is logged with its ID and shown by ferryman status; the next "
        "restart tries again). Off: the old processes go anyway and requests get the error "
        "page, as in a blocking restart.",
        "Pool",
    )
    graceful_timeout: float = setting(
        30.0,
        _seconds_kind(),
        "On shutdown, how long in-flight requests may take to finish.",
        "Pool",
    )

    # HTTP
    max_body_size: int = setting(
        1024**3, _size_kind("unlimited"), "Largest request body accepted (else 413).", "HTTP"
    )
    buffer_request_bodies: bool = setting(
        True,
        BOOL,
        "Receive each request body whole before the app gets the request, so that slow "
        "uploads never hold an app process. Off: a body with a Content-Length goes to the "
        "app as it arrives (for uploads the app processes on the fly; the app process is "
        "busy for the whole upload); chunked bodies are still received whole. Per app in "
        "[[app]] tables; unbuffered_request_path turns it off for some paths only.",
        "HTTP",
    )
    unbuffered_request_path: tuple[str, ...] = setting(
        (),
        URL_PATHS,
        "Paths whose request bodies go to the app as they arrive, as with "
        "buffer_request_bodies off, while all others are received whole (nginx's "
        "proxy_request_buffering off in a location): each path and every path below it, "
        "as the app sees them (after the prefix it is mounted at), e.g. /upload.",
        "HTTP",
    )
    max_header_size: int = setting(
        32 * 1024,
        _size_kind(),
        "Largest request head (request line and headers; else 431).",
        "HTTP",
    )
    header_timeout: float = setting(
        30.0, _seconds_kind(), "How long a client may take to send a request's head.", "HTTP"
    )
    body_timeout: float = setting(
        60.0,
        _seconds_kind(),
        "How long a request body may stall before the connection is closed (408).",
        "HTTP",
    )
    min_body_rate: int = setting(
        1024,
        _size_kind("no minimum"),
        "Slowest a request body may arrive, in bytes per second, averaged over each "
        "body_timeout period: a client that sends less in such a period gets 408 and is "
        "closed, so that a trickle cannot hold a connection and its spool file for ever.",
        "HTTP",
    )
    max_spool_size: int = setting(
        2 * 1024**3,
        _size_kind("unlimited"),
        "Most bytes of request bodies kept in temp files at once, across all connections. "
        "A body that would need more gets 503 (logged), so that uploads cannot fill the "
        "disk; size it to a few concurrent uploads of max_body_size.",
        "HTTP",
    )
    max_response_buffer: int = setting(
        1024**3,
        _size_kind("unbounded"),
        "Most bytes of one response kept for a client that reads slower than the app "
        "writes (in memory, then in a temp file; counted in max_spool_size), so that the "
        "app process is free as soon as it has answered. Beyond it, the app is held back "
        "until the client catches up. Server-sent events and responses with "
        "'X-Accel-Buffering: no' are never buffered.",
        "HTTP",
    )
    send_timeout: float = setting(
        60.0,
        _seconds_kind(),
        "How long a client may take no bytes of a response before its connection is "
        "closed (logged as 499).",
        "HTTP",
    )
    keepalive_timeout: float = setting(
        5.0, _seconds_kind(), "How long an idle keep-alive connection is kept open.", "HTTP"
    )
    trusted_proxies: ProxyNetworks = setting(
        (),
        NETWORKS,
        "Peers whose X-Forwarded-For/-Proto/-Host headers are believed (default: none). From "
        "any other peer, those headers (and Forwarded, X-Real-IP, every other X-Forwarded-*) "
        "are dropped before the app sees them. 'unix' trusts the peers on --socket (e.g. "
        "nginx on the same machine).",
        "HTTP",
    )
    proxy_protocol: bool = setting(
        False,
        BOOL,
        "Every connection starts with a PROXY protocol header (v1 or v2, as HAProxy's "
        "send-proxy / send-proxy-v2 and cloud TCP load balancers send it) naming the "
        "client: it becomes the client's address (REMOTE_ADDR, X-Forwarded-For to the app, "
        "the access log). Needs trusted_proxies: only those peers may send the header; "
        "connections from any other peer are closed at once, and so are connections "
        "without a valid header. See docs/load-balancers.md.",
        "HTTP",
    )

    # Process
    daemonize: bool = setting(
        False,
        BOOL,
        "Run in the background, detached from the terminal (needs log_file). 'ferryman "
        "start' returns once the server listens (exit code 0), or says why it could not "
        "start (exit code 1); 'ferryman stop' ends it.",
        "Process",
    )
    pid_file: str | None = setting(
        None,
        _text_kind("a file path", "PATH"),
        "Write the server's pid here (atomically, once it runs; removed when it exits). A "
        "start is refused while the file names a running Ferryman.",
        "Process",
    )

    # Logging
    log_file: str | None = setting(
        None,
        _text_kind("a file path", "PATH"),
        "Write the log here instead of stderr.",
        "Logging",
    )
    log_level: str = setting(
        "info",
        _choice_kind("debug", "info", "warning", "error"),
        "Least severe level logged.",
        "Logging",
    )
    app_output_level: str = setting(
        "info",
        _choice_kind("debug", "info", "warning", "error"),
        "Least severe app output logged, independently of log_level: an app's stdout lines "
        "are logged at info, its stderr lines (tracebacks, most logging libraries) at "
        "warning. So '--log-level warning' quiets Ferryman without hiding the app's output; "
        "'--app-output-level warning' keeps only the app's stderr.",
        "Logging",
    )
    access_log: bool = setting(
        True, BOOL, "Log every request in the combined log format.", "Logging"
    )

    # Administration
    admin_address: str | None = setting(
        None,
        _host_port_kind(),
        "Also serve the admin API (status, metrics, restart; always on the instance "
        "directory's Unix socket) on this TCP address, e.g. for a Prometheus server on "
        "another machine. It asks for the same HTTP Basic credentials; without TLS, keep it "
        "on a private network.",
        "Administration",
    )
    admin_password_file: str | None = setting(
        None,
        _text_kind("a file path", "PATH"),
        "Read the admin account's password for the admin API from this file (its first "
        "line) instead of making a random one; the read-only account's is always random. "
        "Both are in 0600 files in the instance directory.",
        "Administration",
    )
    sticky_sessions: bool = setting(
        False,
        BOOL,
        "Send a client back to the process that served it: responses carry a cookie "
        "naming their process, and a request with it goes to that process while it lives "
        "(waiting for it when it is busy); others go to the least-busy one. For apps that "
        "keep sessions in memory and socket.io's long-polling.",
        "Pool",
    )
    sticky_sessions_cookie_name: str = setting(
        "_ferryman_route",
        _cookie_name_kind(),
        "The cookie of sticky_sessions.",
        "Pool",
    )
    sticky_sessions_cookie_attributes: str = setting(
        "SameSite=Lax; HttpOnly",
        _cookie_attributes_kind(),
        "Attributes of the sticky_sessions cookie, after 'Path=/' (add 'Secure' behind HTTPS).",
        "Pool",
    )
    app: tuple[Mount, ...] = setting(
        (),
        MOUNTS,
        "Serve one more app from this server: requests for HOST (any host if left out) whose "
        "path is PREFIX or below go to the app in DIR (relative to the app directory); "
        "repeat for several. The app directory itself serves / for any host, unless an app "
        "given here takes that. Routing: the Host first (an app naming it wins over one "
        "that names none), then the longest PREFIX. A prefix app sees the prefix as "
        "SCRIPT_NAME (WSGI, Rack) or root_path (ASGI), Node.js and other apps get the full "
        "path and X-Forwarded-Prefix. Every app is a group in the one pool: max_pool_size "
        "is shared. In Ferrymanfile.toml an [[app]] table may also set the app's own "
        "values of per-app settings (thread_count, min_instances, envvar...).",
        "Several apps",
    )

    health_check_path: str | None = setting(
        None,
        _path_kind("an HTTP path such as /healthz"),
        "Answer GET and HEAD on this path in the core, without the app: 200 while the app "
        "has a ready process, 503 otherwise; for load balancers' health checks and "
        "Kubernetes readiness probes.",
        "Administration",
    )

    # Development
    selfcheck: bool = setting(
        False,
        BOOL,
        "Check every invariant of the process pool after each batch of changes, and stop "
        "the server at once (exit code 70, the broken invariant in the log) if one does not "
        "hold. For developing Ferryman and for its tests: it costs time on every request.",
        "Development",
    )

    def origin(self, name: str) -> str:
        """Where setting ``name``'s value came from ("default" when nobody set it)."""
        return self.origins.get(name, "default")

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def shows_friendly_error_pages(self) -> bool:
        if self.friendly_error_pages is None:
            return self.is_development
        return self.friendly_error_pages


def settings() -> list[tuple[str, Spec, Any]]:
    """Every setting as (name, spec, default), in declaration order."""
    out = []
    for f in dataclasses.fields(Config):
        spec = f.metadata.get("setting")
        if spec is not None:
            out.append((f.name, spec, f.default))
    return out


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


# -- resolution ----------------------------------------------------------------------------


#: uvicorn's and gunicorn's reference to an app's callable (main:app, mysite.asgi:app).
_APP_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _invalid(name: str, raw: Any, spec: Spec, source: str) -> ConfigError:
    shown = raw if isinstance(raw, str) else repr(raw)
    hint = ""
    if name == "app" and isinstance(raw, str) and _APP_REFERENCE.fullmatch(raw):
        # --app mounts another app; uvicorn users mean the callable of this one.
        hint = f"; to serve the callable {raw} (uvicorn's form), use --startup-file {raw}"
    return ConfigError(
        f"invalid value {shown!r} for {name} (from {source}): must be {spec.kind.allowed}{hint}"
    )


def _parse(name: str, raw: Any, spec: Spec, source: str) -> Any:
    try:
        return spec.kind.parse(raw)
    except (ValueError, TypeError) as exc:
        if spec.kind.repeatable and isinstance(raw, list | Mapping):
            # Name the entry that is wrong, not the whole list or table.
            entries = [{k: v} for k, v in raw.items()] if isinstance(raw, Mapping) else raw
            for item in entries:
                try:
                    spec.kind.parse(item if isinstance(item, Mapping) else [item])
                except (ValueError, TypeError):
                    shown = (
                        f"{next(iter(item))} = {next(iter(item.values()))!r}"
                        if isinstance(item, Mapping)
                        else item
                    )
                    raise _invalid(name, shown, spec, source) from exc
        raise _invalid(name, raw, spec, source) from exc


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a Ferrymanfile.toml, checked against the registry."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    known = {name: spec for name, spec, _ in settings()}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"{path}: unknown setting {key!r}{suggestion} "
                f"(settings are listed by 'ferryman settings')"
            )
        value = _parse(key, raw, known[key], f"{path.name} key {key}")
        if key in FILE_PATHS and isinstance(value, str) and not Path(value).is_absolute():
            value = str(path.parent.resolve() / value)  # the file's directory, not the cwd
        values[key] = value
    return values


#: Settings that name a file or directory: a relative one in Ferrymanfile.toml is relative
#: to the file's directory (where it is written); on the command line or in the
#: environment, to the current directory (as every command's arguments are).
FILE_PATHS = frozenset(
    {"ssl_certificate", "ssl_certificate_key", "log_file", "pid_file", "error_report_dir",
     "admin_password_file", "socket"}
)  # fmt: skip


#: FERRYMAN_ variables that are not settings of `ferryman start`: the install-time build
#: choice (hatch_build.py) and the fuzz target's knobs, left alone without a warning.
NOT_SETTINGS = frozenset(
    {"FERRYMAN_BUILD", "FERRYMAN_FUZZ_SECONDS", "FERRYMAN_FUZZ_EXAMPLES", "FERRYMAN_FUZZ_SEED"}
)


def read_environment(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Settings given as FERRYMAN_<NAME> variables, and the names of unknown ones."""
    known = {env_of(name): (name, spec) for name, spec, _ in settings()}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in NOT_SETTINGS:
            continue
        if var not in known:
            hint = difflib.get_close_matches(var, known, n=1)
            unknown.append(f"{var} (did you mean {hint[0]}?)" if hint else var)
            continue
        if raw == "":
            continue  # set but empty: as if unset, like most tools read the environment
        name, spec = known[var]
        value: Any = raw
        if spec.kind.repeatable:
            try:
                value = shlex.split(raw)
            except ValueError as exc:
                raise _invalid(name, raw, spec, var) from exc
        values[name] = _parse(name, value, spec, var)
    return values, unknown


def read_cli(given: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given on the command line (argparse values, still unparsed text)."""
    specs = {name: spec for name, spec, _ in settings()}
    values: dict[str, Any] = {}
    for name, raw in given.items():
        if raw is None or name not in specs:
            continue
        spec = specs[name]
        source = flag_of(name)
        if spec.kind.boolean:
            values[name] = bool(raw)
        else:
            values[name] = _parse(name, raw, spec, source)
    return values


def resolve(
    app_dir: Path, cli: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[Config, list[str]]:
    """Build the Config from the file, the environment and the CLI (in rising precedence).

    Returns the config and a list of warnings to log once logging is set up.
    """
    if not app_dir.is_dir():
        raise ConfigError(f"app directory {str(app_dir)!r} does not exist or is not a directory")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    config_file = app_dir / CONFIG_FILE
    if config_file.exists():
        file_values = read_config_file(config_file)
        values.update(file_values)
        origins.update((name, f"{CONFIG_FILE} key {name}") for name in file_values)
    env_values, unknown = read_environment(env)
    values.update(env_values)
    origins.update((name, env_of(name)) for name in env_values)
    cli_values = read_cli(cli)
    values.update(cli_values)
    origins.update((name, flag_of(name)) for name in cli_values)
    warnings = [f"ignoring unknown environment variable {var}" for var in sorted(unknown)]
    config = Config(app_dir=app_dir.resolve(), origins=origins, **values)
    _check_together(config)
    apps = site_apps(config)  # every mounted app's directory and settings, checked now
    if config.static_dir and all(site_app.config is not config for site_app in apps):
        warnings.append(
            f"ignoring static_dir (from {config.origin('static_dir')}): it is the app "
            f"directory's, and {config.app_dir} is not served (an app given with --app or "
            "[[app]] takes /); give that app its static_dir in its [[app]] table"
        )
    for site_app in apps:
        own_file = site_app.config.app_dir / CONFIG_FILE
        if site_app.config is not config and own_file.is_file():
            warnings.append(
                f"ignoring {own_file}: an app mounted with --app or [[app]] takes its settings "
                f"from the [[app]] table in {config_file}"
            )
    return config, warnings


def _check_together(config: Config) -> None:
    """Rules that involve more than one setting."""
    if config.min_instances > config.max_pool_size:
        raise ConfigError(
            f"invalid value {config.min_instances} for min_instances: must be at most "
            f"max_pool_size ({config.max_pool_size})"
        )
    if config.max_instances and config.max_instances < max(config.min_instances, 1):
        raise ConfigError(
            f"invalid value {config.max_instances} for max_instances: must be 0 or at least "
            f"min_instances ({config.min_instances})"
        )
    _check_tls(config)
    if config.proxy_protocol and not config.trusted_proxies:
        raise ConfigError(
            "invalid value true for proxy_protocol: it needs trusted_proxies (the load "
            "balancers' addresses, or 'unix'), the peers that may send a PROXY header; "
            "without any, every connection would be refused"
        )


def _check_tls(config: Config) -> None:
    """--ssl needs a certificate and a key; --ssl-port needs --ssl and a port of its own;
    a Unix socket speaks TLS only through --ssl-port. (Whether the files load is checked
    when the server starts: http.tls.check.)"""
    if config.ssl:
        for name in ("ssl_certificate", "ssl_certificate_key"):
            if getattr(config, name) is None:
                raise ConfigError(
                    f"invalid value true for ssl (from {config.origin('ssl')}): it needs "
                    f"{name} ({flag_of(name)} PATH, a PEM file)"
                )
        if config.socket and config.ssl_port is None:
            raise ConfigError(
                f"invalid value true for ssl (from {config.origin('ssl')}): TLS on the Unix "
                f"socket {config.socket} is not served (the proxy in front terminates TLS); "
                "give ssl_port to serve HTTPS on a TCP port as well"
            )
    if config.ssl_port is None:
        return
    if not config.ssl:
        raise ConfigError(
            f"invalid value {config.ssl_port} for ssl_port (from {config.origin('ssl_port')}): "
            "it needs ssl (--ssl, with ssl_certificate and ssl_certificate_key)"
        )
    if config.ssl_port == config.port and not config.socket:
        raise ConfigError(
            f"invalid value {config.ssl_port} for ssl_port (from {config.origin('ssl_port')}): "
            f"must differ from port ({config.port}), which serves plain HTTP"
        )


@dataclass(frozen=True, slots=True)
class SiteApp:
    """One app of the server, with where it is mounted and its own settings."""

    config: Config
    prefix: str = "/"
    hosts: tuple[str, ...] = ()

    def describe(self) -> str:
        return mounted_at(self.hosts, self.prefix)


def site_apps(config: Config) -> list[SiteApp]:
    """The apps ``config`` serves: the app directory's own at / for any host (unless an
    --app / [[app]] takes that), then those of --app / [[app]]. ConfigError if a directory does
    not exist or two apps claim the same host and prefix."""
    apps: list[SiteApp] = []
    claimed: dict[tuple[str, str], str] = {}
    source = config.origin("app")
    for mount in config.app:
        root = (config.app_dir / mount.root).resolve()
        if not root.is_dir():
            raise ConfigError(
                f"invalid value {mount.describe()!r} for app (from {source}): the directory "
                f"{str(root)!r} does not exist"
            )
        for host in mount.hosts or ("",):
            where = (host, mount.prefix)
            if where in claimed:
                raise ConfigError(
                    f"invalid value {mount.describe()!r} for app (from {source}): "
                    f"{host}{mount.prefix} is served by {claimed[where]} already; each host "
                    "and prefix may be given to one app"
                )
            claimed[where] = mount.root
        own = dict(mount.settings)
        inherited = {
            name: getattr(config, name) for name in PER_APP - APP_IDENTITY if name not in own
        }
        origins = {
            **{k: v for k, v in config.origins.items() if k not in APP_IDENTITY},
            **dict.fromkeys(own, f"the [[app]] table for {mount.root}"),
        }
        fields = {name: _default_of(name) for name in APP_IDENTITY} | inherited | own
        mounted = dataclasses.replace(config, app_dir=root, origins=origins, app=(), **fields)
        _check_together(mounted)
        apps.append(SiteApp(mounted, mount.prefix, mount.hosts))
    if ("", "/") not in claimed:
        apps.insert(0, SiteApp(config))
    return apps


def _default_of(name: str) -> Any:
    return next(default for key, _, default in settings() if key == name)


# -- the effective settings ------------------------------------------------------------------


def effective_settings(config: Config) -> list[tuple[str, Any, str]]:
    """Every setting as (name, value, where the value came from), in registry order."""
    return [(name, getattr(config, name), config.origin(name)) for name, _, _ in settings()]


def json_value(value: Any) -> Any:
    """A setting's value as JSON can hold it (networks and pairs as strings and tables)."""
    if isinstance(value, Mount):
        table: dict[str, Any] = {"root": value.root, "prefix": value.prefix}
        if value.hosts:
            table["hosts"] = list(value.hosts)
        return table | {name: json_value(v) for name, v in value.settings}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): v for k, v in value}  # envvar: NAME -> value
        return [json_value(v) for v in value]
    return value


def toml_value(value: Any) -> str:
    """A setting's value as it would be written in Ferrymanfile.toml."""
    shown = json_value(value)
    if isinstance(shown, bool):
        return "true" if shown else "false"
    if isinstance(shown, int | float):
        return str(shown)
    if isinstance(shown, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in shown.items()) + "}"
    if isinstance(shown, list):
        return "[" + ", ".join(toml_value(v) for v in shown) + "]"
    return '"' + str(shown).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(key: str) -> str:
    """A table key as TOML has it: bare when it may be, else quoted ("/static")."""
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# -- documentation -------------------------------------------------------------------------


def shown_default(name: str, spec: Spec, default: Any) -> str:
    if spec.default_text:
        return spec.default_text
    if name == "python":
        return "the interpreter Ferryman runs on"
    if default is None or default == ():
        return "(none)"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def reference_markdown() -> str:
    """docs/configuration.md, generated from the registry (a test keeps the file in sync)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `ferryman settings --markdown` from src/ferryman/config.py;"
        " do not edit by hand. -->",
        "",
        "Every setting can be given in three places. From lowest to highest precedence:",
        "",
        f"1. `{CONFIG_FILE}` in the app directory, as `name = value` (TOML);",
        f"2. an environment variable `{ENV_PREFIX}<NAME>` (list settings are split like a shell"
        " splits words);",
        "3. a command-line flag of `ferryman start`.",
        "",
        "An invalid value stops the start with exit code 2 and one line naming the setting, the"
        " value and what is allowed.",
        "",
        "A relative file path (" + ", ".join(f"`{name}`" for name in sorted(FILE_PATHS)) + ")"
        f" is relative to the directory of the `{CONFIG_FILE}` that gives it, and to the"
        " current directory when given on the command line or in the environment.",
        "",
    ]
    section = None
    for name, spec, default in settings():
        if spec.section != section:
            section = spec.section
            lines += [f"## {section}", ""]
        flags = f"`{flag_of(name)}`"
        if spec.kind.boolean:
            flags = f"`{flag_of(name)}` / `--no-{name.replace('_', '-')}`"
        if spec.short:
            flags = f"`{spec.short}`, " + flags
        lines += [
            f"### `{name}`",
            "",
            spec.help,
            "",
            f"* Allowed: {spec.kind.allowed}",
            f"* Default: {shown_default(name, spec, default)}",
            f"* CLI: {flags}" + (" (repeatable)" if spec.kind.repeatable else ""),
            f"* Environment: `{env_of(name)}`",
            f"* {CONFIG_FILE}: `{name}`",
            "",
        ]
    return "\n".join(lines)


def split_host_port(value: str) -> tuple[str, int]:
    """("::1", 3001) from "[::1]:3001" (a value _host_port_kind made)."""
    host, _, port = value.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)
