"""The pure parts of static file serving: target paths, ranges, Accept-Encoding, types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferryman.config import resolve
from ferryman.errors import ConfigError
from ferryman.http.static import accepted_encodings, content_type, parse_range, safe_relative


@pytest.mark.parametrize(
    ("rest", "relative"),
    [
        (b"/a.css", b"a.css"),
        (b"/css/site.css", b"css/site.css"),
        (b"/my%20file.txt", b"my file.txt"),
        (b"/caf%C3%A9.txt", "café.txt".encode()),
        (b"/.well-known/security.txt", b".well-known/security.txt"),
        (b"/100%25.txt", b"100%.txt"),
    ],
)
def test_plain_names_are_served(rest: bytes, relative: bytes) -> None:
    assert safe_relative(rest) == relative


@pytest.mark.parametrize(
    "rest",
    [
        b"/", b"", b"a.css", b"/css/", b"//etc/passwd", b"/a//b", b"/../x", b"/a/../x",
        b"/./x", b"/%2e%2e/x", b"/%2E%2e/x", b"/..%2fx", b"/a%2fb", b"/a%2Fb", b"/a\\b",
        b"/a%5cb", b"/a%00b", b"/a\x00b", b"/a%0ab", b"/a%7f", b"/%c0%ae%c0%ae/x",
        b"/%ff.txt", b"/.git/config", b"/.env", b"/a/.htaccess", b"/%2egit/config", b"/a%",
        b"/a%2", b"/a%zz",
    ],
)  # fmt: skip
def test_anything_else_is_refused(rest: bytes) -> None:
    assert safe_relative(rest) is None


@pytest.mark.parametrize(
    ("value", "size", "span"),
    [
        (b"bytes=0-99", 1000, (0, 99)),
        (b"bytes=0-0", 1000, (0, 0)),
        (b"bytes=990-", 1000, (990, 999)),
        (b"bytes=900-5000", 1000, (900, 999)),
        (b"bytes=-10", 1000, (990, 999)),
        (b"bytes=-5000", 1000, (0, 999)),
        (b"BYTES = 1-2", 1000, (1, 2)),
        (b"bytes=1000-", 1000, False),
        (b"bytes=1000-2000", 1000, False),
        (b"bytes=-0", 1000, False),
        (b"bytes=-5", 0, False),
        (b"bytes=0-", 0, False),
        (b"bytes=5-1", 1000, None),
        (b"bytes=0-1,5-6", 1000, None),
        (b"items=0-1", 1000, None),
        (b"bytes=a-b", 1000, None),
        (b"bytes=", 1000, None),
        (b"bytes=-", 1000, None),
        (b"bytes=+1-2", 1000, None),
    ],
)
def test_ranges(value: bytes, size: int, span: tuple[int, int] | bool | None) -> None:
    assert parse_range(value, size) == span


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (b"gzip, deflate, br", {b"gzip", b"deflate", b"br"}),
        (b"br;q=0, gzip;q=0.5", {b"gzip"}),
        (b"BR ; Q=1", {b"br"}),
        (b"*", {b"*", b"br", b"gzip"}),
        (b"*, br;q=0", {b"*", b"gzip"}),
        (b"identity", {b"identity"}),
        (b"gzip;q=nonsense", set()),
        (b"", set()),
    ],
)
def test_accept_encoding(value: bytes, accepted: set[bytes]) -> None:
    assert accepted_encodings(value) == accepted


def test_content_types() -> None:
    assert content_type(b"site.css") == b"text/css; charset=utf-8"
    assert content_type(b"APP.JS") in (  # the name of JavaScript's type moved in Python 3.12
        b"text/javascript; charset=utf-8",
        b"application/javascript; charset=utf-8",
    )
    assert content_type(b"data.json") == b"application/json; charset=utf-8"
    assert content_type(b"logo.svg") == b"image/svg+xml; charset=utf-8"
    assert content_type(b"photo.png") == b"image/png"
    assert content_type(b"archive.tar.gz") == b"application/gzip"
    assert content_type(b"blob") == b"application/octet-stream"
    assert content_type(b"blob.unknownext") == b"application/octet-stream"


def test_static_dir_setting(tmp_path: Path) -> None:
    def static_dir(cli: dict[str, Any], env: dict[str, str]) -> tuple[tuple[str, str], ...]:
        return resolve(tmp_path, cli, env)[0].static_dir

    assert static_dir({"static_dir": ["/static=staticfiles"]}, {}) == (("/static", "staticfiles"),)
    assert static_dir({}, {"FERRYMAN_STATIC_DIR": "/a=x /b/=y/z"}) == (("/a", "x"), ("/b/", "y/z"))
    (tmp_path / "Ferrymanfile.toml").write_text('[static_dir]\n"/static" = "staticfiles"\n')
    assert static_dir({}, {}) == (("/static", "staticfiles"),)
    (tmp_path / "Ferrymanfile.toml").unlink()
    for bad in ("staticfiles", "static=dir", "/static=", "/st atic=x", "/s?x=y", "/s%20=x"):
        with pytest.raises(ConfigError, match="static_dir"):
            static_dir({"static_dir": [bad]}, {})
