"""The admin API's credentials check, on its own: the two accounts, and every comparison
made in constant time (hmac.compare_digest), whatever part of the credentials is wrong."""

from __future__ import annotations

import base64
import hmac
from typing import Any

import pytest

from ferryman.admin import AdminApi
from ferryman.http.request import RequestHead
from ferryman.pool import Pool

PASSWORDS = {"readonly": "ro-secret-123", "admin": "admin-secret-456"}


def api() -> AdminApi:
    # Only the credentials are under test: no app, no front, no driver.
    return AdminApi(
        pool=Pool(1),
        apps=[],
        driver=None,  # type: ignore[arg-type]
        front=None,  # type: ignore[arg-type]
        instance_name="test",
        passwords=PASSWORDS,
        shutdown=lambda: None,
    )


def head(
    authorization: bytes | None, method: bytes = b"GET", target: bytes = b"/ping"
) -> RequestHead:
    headers = [(b"Host", b"x")]
    if authorization is not None:
        headers.append((b"Authorization", authorization))
    return RequestHead(
        method, target, b"1.1", headers, b"x", b"127.0.0.1", b"1", False, b"x", b"80"
    )


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    ("authorization", "user"),
    [
        (None, None),
        (b"", None),
        (b"Bearer abc", None),
        (b"Basic !!!not-base64!!!", None),
        (b"Basic " + base64.b64encode(b"no-colon"), None),
        (basic("readonly", "wrong"), None),
        (basic("admin", PASSWORDS["readonly"]), None),  # another account's password
        (basic("nobody", PASSWORDS["admin"]), None),
        (basic("readonly", PASSWORDS["readonly"] + "x"), None),
        (basic("readonly", PASSWORDS["readonly"]), "readonly"),
        (basic("admin", PASSWORDS["admin"]), "admin"),
        (b"basic " + base64.b64encode(b"admin:admin-secret-456"), "admin"),  # scheme: any case
    ],
)
def test_the_credentials_name_one_account_or_none(
    authorization: bytes | None, user: str | None
) -> None:
    assert api()._user(head(authorization)) == user


def test_every_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on hmac.compare_digest: user names and passwords of every account are compared
    through it, for right and wrong credentials alike (no early exit on the first mismatch)."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    subject = api()
    for credentials in (basic("admin", "wrong"), basic("readonly", PASSWORDS["readonly"])):
        calls.clear()
        subject._user(head(credentials))
        compared = {bytes(b) for _, b in calls}
        assert compared == {b"readonly", b"admin", *(p.encode() for p in PASSWORDS.values())}


def test_no_credentials_get_401_with_a_challenge_and_nothing_else() -> None:
    answer = api()(head(None), 0.0)
    assert answer.status == 401
    assert answer.headers.startswith(b'WWW-Authenticate: Basic realm="Ferryman admin"')
    assert b"pool" not in answer.body  # nothing about the server before the credentials


def test_the_read_only_account_may_not_act() -> None:
    answer = api()(head(basic("readonly", PASSWORDS["readonly"]), b"POST", b"/shutdown"), 0.0)
    assert answer.status == 403
