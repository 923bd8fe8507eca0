"""plan_head: what an app's response head becomes on the wire, and which heads are refused."""

from __future__ import annotations

import pytest

from ferryman.http.exchange import INVALID_FIELDS, INVALID_STATUS, plan_head


def test_a_plain_head_is_planned() -> None:
    status, prefix, date, server, suffix, no_body, length, chunked, close, streaming = plan_head(
        b"200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n", False, b"1.1", False
    )
    assert (status, length, chunked, close, no_body, streaming) == (
        200,
        5,
        False,
        False,
        False,
        False,
    )
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


@pytest.mark.parametrize(
    "block",
    [
        b"Content-Type: text/event-stream\r\n",
        b"Content-Type: text/event-stream; charset=utf-8\r\n",
        b"X-Accel-Buffering: no\r\n",
        b"X-A: 1\r\nx-accel-buffering:  no \r\nX-B: 2\r\n",
    ],
)
def test_streaming_responses_are_recognised(block: bytes) -> None:
    """Server-sent events and X-Accel-Buffering: no pass through unbuffered; the latter
    is Ferryman's instruction and does not reach the client."""
    plan = plan_head(b"200 OK\r\n" + block, False, b"1.1", False)
    assert plan[9] is True
    assert b"accel" not in plan[1].lower()


def test_x_accel_buffering_yes_is_buffered_and_removed() -> None:
    plan = plan_head(b"200 OK\r\nX-Accel-Buffering: yes\r\nX-B: 2\r\n", False, b"1.1", False)
    assert plan[9] is False
    assert plan[1] == b"HTTP/1.1 200 OK\r\nX-B: 2\r\n"
