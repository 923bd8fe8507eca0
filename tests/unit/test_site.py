"""Site routing (sans-IO): host first, then the longest prefix at a segment boundary; and
the [[app]] / --app values it is built from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ferryman.config import MOUNTS, Mount, resolve, site_apps
from ferryman.errors import ConfigError
from ferryman.http.app import App
from ferryman.http.environ import build_environ
from ferryman.http.request import RequestHead
from ferryman.http.site import Site
from ferryman.http.upstream import Upstreams
from ferryman.log import AccessLog, LogSink
from ferryman.pool import Effect, Pool, Process, Rejected
from ferryman.pool.group import GroupOptions

STUB = Path(__file__).parent.parent / "apps" / "wsgi_stub"


class Driver:
    def apply(self, effects: list[Effect]) -> None:
        raise AssertionError(effects)

    def now(self) -> float:
        return 0.0

    def process_unreachable(self, process: Process, exc: BaseException) -> None:
        raise AssertionError(exc)

    def request_timed_out(self, process: Process, request: str, limit: float) -> None:
        raise AssertionError(request)


def reject(rejected: Rejected) -> tuple[int, bytes, bytes]:
    raise AssertionError(rejected)


def make_site(mounts: list[tuple[str, str, tuple[str, ...]]]) -> Site:
    """A site of apps named ``name``, at ``prefix`` for ``hosts``."""
    pool = Pool(10)
    sink = LogSink(sys.stderr.fileno(), owned=False)
    apps = [
        App(
            pool.add_group(name, GroupOptions()),
            Driver(),
            upstreams=Upstreams(),
            access_log=AccessLog(sink, False),
            rejection_response=reject,
            prefix=prefix,
            hosts=hosts,
        )
        for name, prefix, hosts in mounts
    ]
    return Site(apps)


def head(target: bytes, host: bytes = b"example.com") -> RequestHead:
    return RequestHead(b"GET", target, b"1.1", [], host, b"1.2.3.4", b"5", False, b"h", b"80")


SITE = [
    ("web", "/", ()),
    ("api", "/api", ()),
    ("v2", "/api/v2", ()),
    ("admin", "/", ("admin.example.com",)),
    ("admin-api", "/api", ("admin.example.com",)),
    ("wild", "/", ("*.example.org",)),
    ("exact-v2", "/v2", ("api.example.org",)),
    ("deep", "/", ("*.eu.example.org",)),
    ("v6", "/", ("[::1]",)),
]


@pytest.mark.parametrize(
    ("target", "host", "app", "script_name"),
    [
        (b"/", b"example.com", "web", b""),
        (b"/x?y=1", b"", "web", b""),
        (b"/api", b"example.com", "api", b"/api"),
        (b"/api/", b"example.com", "api", b"/api"),
        (b"/api?x=/api/v2", b"example.com", "api", b"/api"),
        (b"/api/users", b"example.com", "api", b"/api"),
        (b"/apix", b"example.com", "web", b""),
        (b"/api/v2/x", b"example.com", "v2", b"/api/v2"),
        (b"/api/v23", b"example.com", "api", b"/api"),
        (b"/%61pi/x", b"example.com", "api", b"/api"),  # routed on the decoded path
        (b"/ap%69/x%2Fy", b"example.com", "api", b"/api"),
        (b"/api%2Fx", b"example.com", "web", b""),  # an encoded "/" is not a boundary
        (b"/api%2F", b"example.com", "web", b""),
        (b"/api/v2%2F", b"example.com", "api", b"/api"),
        (b"/", b"api.example.org", "wild", b""),  # its exact host has only /v2
        (b"/v2/x", b"api.example.org", "exact-v2", b"/v2"),
        (b"/", b"admin.example.com", "admin", b""),
        (b"/api/x", b"admin.example.com", "admin-api", b"/api"),
        (b"/api/x", b"ADMIN.Example.COM:8443", "admin-api", b"/api"),
        (b"/api/x", b"admin.example.com.", "admin-api", b"/api"),
        (b"/", b"a.example.org", "wild", b""),
        (b"/", b"a.b.example.org", "wild", b""),
        (b"/", b"x.eu.example.org", "deep", b""),
        (b"/", b"example.org", "web", b""),  # *.example.org is subdomains only
        (b"/", b"badexample.org", "web", b""),
        (b"/", b"[::1]:3000", "v6", b""),
        (b"/api/v2", b"unknown.test", "v2", b"/api/v2"),
    ],
)
def test_routing(target: bytes, host: bytes, app: str, script_name: bytes) -> None:
    site = make_site(SITE)
    request = head(target, host)
    found = site.route(request)
    assert found is not None
    assert found.group.name == app
    assert request.script_name == script_name


def test_no_app_for_the_path_is_none_and_one_app_at_root_is_the_fast_path() -> None:
    site = make_site([("api", "/api", ()), ("admin", "/", ("admin.example.com",))])
    assert site.route(head(b"/other")) is None
    assert site.route(head(b"/other", b"admin.example.com")) is not None
    assert site.only is None
    one = make_site([("web", "/", ())])
    assert one.only is one.apps[0]
    assert make_site([("api", "/api", ())]).only is None


def test_a_trusted_proxys_forwarded_host_routes() -> None:
    site = make_site(SITE)
    request = head(b"/", b"internal:3000")
    request.forwarded_host = b"admin.example.com"
    found = site.route(request)
    assert found is not None and found.group.name == "admin"


def test_the_environ_splits_the_prefix_off_path_info() -> None:
    request = head(b"/api/v2/users%20x?q=1")
    request.script_name = b"/api/v2"
    fields = build_environ(request, 0).split(b"\0")
    environ = dict(zip(fields[::2], fields[1::2], strict=True))
    assert environ[b"SCRIPT_NAME"] == b"/api/v2"
    assert environ[b"PATH_INFO"] == b"/users x"
    assert environ[b"REQUEST_URI"] == b"/api/v2/users%20x?q=1"
    plain = dict(zip(*[iter(build_environ(head(b"/a"), 0).split(b"\0"))] * 2, strict=True))
    assert b"SCRIPT_NAME" not in plain and plain[b"PATH_INFO"] == b"/a"


# -- the values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mount"),
    [
        ("/api=./api", Mount("./api", "/api")),
        ("/api/=./api", Mount("./api", "/api")),
        ("//api//v2=x", Mount("x", "/api/v2")),
        ("/=./web", Mount("./web", "/")),
        ("admin.example.com/=./admin", Mount("./admin", "/", ("admin.example.com",))),
        ("Admin.Example.com/x=a=b", Mount("a=b", "/x", ("admin.example.com",))),
        ("*.example.com/=w", Mount("w", "/", ("*.example.com",))),
    ],
)
def test_app_values(value: str, mount: Mount) -> None:
    assert MOUNTS.parse([value]) == (mount,)


@pytest.mark.parametrize(
    "value",
    ["api=./x", "/api", "/api=", "/a/../b=x", "/a/./b=x", "/a b=x", "/a?b=x", "/a%2e=x",
     "bad_host/=x", "*/=x", "a.*.com/=x", "-a.com/=x", "/x=./no-such-dir"],
)  # fmt: skip
def test_bad_app_values_name_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(STUB, {"app": [value]}, {})
    assert "for app (from --app)" in str(caught.value)


def test_app_tables_inherit_per_app_settings_but_not_which_app(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "api").mkdir()
    (tmp_path / "Ferrymanfile.toml").write_text(
        'thread_count = 4\nstartup_file = "main.py"\nmax_pool_size = 9\n'
        '[[app]]\nroot = "web"\nprefix = "/web"\n'
        '[[app]]\nroot = "api"\nprefix = "/api"\nhost = "a.test"\nthread_count = 2\n'
        'envvar = { A = "1" }\n'
    )
    config, _ = resolve(tmp_path, {}, {})
    apps = site_apps(config)
    assert [(a.prefix, a.hosts) for a in apps] == [("/", ()), ("/web", ()), ("/api", ("a.test",))]
    main, web, api = (a.config for a in apps)
    assert main.app_dir == tmp_path.resolve() and main.startup_file == "main.py"
    assert web.app_dir == (tmp_path / "web").resolve()
    assert (web.thread_count, web.startup_file, web.max_pool_size) == (4, None, 9)
    assert (api.thread_count, api.envvar) == (2, (("A", "1"),))
    assert api.origin("thread_count") == "the [[app]] table for api"
    assert web.origin("thread_count") == "Ferrymanfile.toml key thread_count"


def test_an_app_at_root_for_any_host_replaces_the_app_directory(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    config, _ = resolve(tmp_path, {"app": ["/=web"]}, {})
    (only,) = site_apps(config)
    assert only.config.app_dir == (tmp_path / "web").resolve()


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('prefix = "/x"', "root"),
        ('root = "."\nport = 80', "whole server"),
        ('root = "."\nthread_cont = 2', "not a setting"),
        ('root = "."\nthread_count = 0', "thread_count"),
        ('root = "."\nhost = "a.test"\nhosts = ["b.test"]', "app"),
        ('root = "."\nhosts = "a.test"', "app"),
    ],
)
def test_bad_app_tables(tmp_path: Path, table: str, words: str) -> None:
    (tmp_path / "Ferrymanfile.toml").write_text(f"[[app]]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        resolve(tmp_path, {}, {})
    assert words in str(caught.value)


def test_a_mounted_apps_own_ferrymanfile_is_ignored_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "Ferrymanfile.toml").write_text("thread_count = 7\n")
    config, warnings = resolve(tmp_path, {"app": ["/api=api"]}, {})
    assert [a.config.thread_count for a in site_apps(config)] == [1, 1]
    assert len(warnings) == 1 and "ignoring" in warnings[0] and "[[app]]" in warnings[0]


@pytest.mark.parametrize(
    ("prefix", "target", "streams"),
    [
        ("/", b"/upload", True),
        ("/", b"/upload/big?x=1", True),
        ("/", b"/%75pload", True),  # an encoded name is the same path
        ("/", b"/uploads", False),  # a segment boundary, as for mounts
        ("/", b"/other", False),
        ("/s", b"/s/upload", True),  # below the app's prefix, as the app sees paths
        ("/s", b"/upload", False),
    ],
)
def test_unbuffered_request_paths_are_matched_below_the_apps_prefix(
    prefix: str, target: bytes, streams: bool
) -> None:
    pool = Pool(10)
    sink = LogSink(sys.stderr.fileno(), owned=False)
    app = App(
        pool.add_group("app", GroupOptions()),
        Driver(),
        upstreams=Upstreams(),
        access_log=AccessLog(sink, False),
        rejection_response=reject,
        prefix=prefix,
        stream_paths=("/upload",),
    )
    assert app.streams_body(target) is streams
    whole = App(
        pool.add_group("all", GroupOptions()),
        Driver(),
        upstreams=Upstreams(),
        access_log=AccessLog(sink, False),
        rejection_response=reject,
        prefix=prefix,
        stream_bodies=True,
    )
    assert whole.streams_body(target)
