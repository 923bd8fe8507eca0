"""Request targets: absolute-form is checked and reduced to origin-form plus an authority."""

from __future__ import annotations

import pytest

from ferryman.http.target import TargetError, absolute_to_origin


@pytest.mark.parametrize(
    ("target", "origin", "authority"),
    [
        (b"http://example.com/a/b?q=1", b"/a/b?q=1", b"example.com"),
        (b"HTTPS://Example.com:8443/", b"/", b"Example.com:8443"),
        (b"http://example.com", b"/", b"example.com"),
        (b"http://example.com?q", b"/?q", b"example.com"),
        (b"http://example.com:/p", b"/p", b"example.com"),  # an empty port is no port
        (b"http://[::1]:3000/x", b"/x", b"[::1]:3000"),
        (b"http://10.0.0.1/x", b"/x", b"10.0.0.1"),
        (b"http://a-b.c_d~e%41/", b"/", b"a-b.c_d~e%41"),
    ],
)
def test_absolute_form_becomes_origin_form(target: bytes, origin: bytes, authority: bytes) -> None:
    assert absolute_to_origin(target) == (origin, authority)


@pytest.mark.parametrize(
    "target",
    [
        b"s://]ufd/:",  # the corpus probe: a broken authority
        b"ftp://example.com/file",  # not http(s)
        b"http://user@example.com/",  # userinfo
        b"http://user:pw@example.com/",
        b"http:///path",  # no host
        b"http://example.com:99999/",  # port out of range
        b"http://example.com:8o/",  # not a number
        b"http://[zz::1]/",
        b"example.com:80",  # authority-form
        b"//example.com/",
        b"http:example.com/",
    ],
)
def test_broken_absolute_forms_are_refused(target: bytes) -> None:
    with pytest.raises(TargetError):
        absolute_to_origin(target)
