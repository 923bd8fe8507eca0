"""plan_head: what an app's response head becomes on the wire, and which heads are refused."""

from __future__ import annotations

import pytest

from ferryman.http.exchange import INVALID_FIELDS, INVALID_STATUS, plan_head


def test_a_plain_head_is_planned() -> None:
    status, prefix, date, server, suffix, no_body, length, chunked, close = plan_head(
        b"200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n", False, b"1.1", False
    )
    assert (status, length, chunked, close, no_body) == (200, 5, False, False, False)
    assert prefix == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    assert date and server
    assert suffix == b"\r\n"


@pytest.mark.parametrize(
    "block",
    [
        b"X-A: a\x0bb\r\n",
        b"X-A: \x1b[31mred\r\n",
        b"X-A: del\x7f\r\n",
        b"X-A: nul\x00\r\n",
        b"X-A: bare\rcr\r\n",
        b"X-A: bare\nlf\r\n",
        b"Bad Name: v\r\n",
        b": no name\r\n",
        b"no colon\r\n",
        b"X-A: no line end",
    ],
)
def test_a_head_with_an_invalid_field_is_refused(block: bytes) -> None:
    """Control characters other than tab, or a line that is not a field: never forwarded."""
    plan = plan_head(b"200 OK\r\n" + block, False, b"1.1", False)
    assert plan[0] == INVALID_FIELDS


@pytest.mark.parametrize("line", [b"20 OK", b"abc OK", b"200", b"200 O\x0bK", b"600 Odd"])
def test_an_invalid_status_line_is_refused(line: bytes) -> None:
    assert plan_head(line + b"\r\n", False, b"1.1", False)[0] == INVALID_STATUS


def test_tabs_and_obs_text_are_allowed() -> None:
    plan = plan_head(b"200 OK\r\nX-A: a\tb\xe9\r\n", False, b"1.1", False)
    assert plan[0] == 200
