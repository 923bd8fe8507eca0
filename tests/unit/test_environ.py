"""The request as the app sees it: header keys, the target, the host and the environ block."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from ferryman.config import ProxyNetworks
from ferryman.http import environ as environ_module
from ferryman.http.environ import (
    BadTarget,
    build_environ,
    header_key,
    is_client_claim,
    split_host,
    split_target,
)
from ferryman.http.request import RequestHead, forwarded_client


def networks(*specs: str) -> ProxyNetworks:
    return tuple(ipaddress.ip_network(s) for s in specs)


PROXIES = networks("127.0.0.1", "10.0.0.0/8", "::1")

# -- header_key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        (b"X-Foo", b"HTTP_X_FOO"),
        (b"x-foo", b"HTTP_X_FOO"),
        (b"Host", b"HTTP_HOST"),
        (b"Accept-Encoding", b"HTTP_ACCEPT_ENCODING"),
        (b"X-123", b"HTTP_X_123"),
        (b"Content-Type", b"CONTENT_TYPE"),
        (b"content-type", b"CONTENT_TYPE"),
        (b"Content-Length", b"CONTENT_LENGTH"),
        (b"CONTENT-LENGTH", b"CONTENT_LENGTH"),
        (b"Content-MD5", b"HTTP_CONTENT_MD5"),
    ],
)
def test_header_key(name: bytes, key: bytes) -> None:
    """A header becomes HTTP_<NAME>, upper case, '-' as '_'; Content-Type/-Length lose HTTP_."""
    assert header_key(name) == key


@pytest.mark.parametrize(
    "name",
    [
        b"X_Foo",  # would pose as X-Foo
        b"Content_Length",
        b"_",
        b"X Foo",
        b"X.Foo",
        b"X:Foo",
        b"X-Foo\n",
        b"X-Fo\xc3\xb6",
        b"X-Foo\0",
        b"",
    ],
)
def test_header_key_drops_other_names(name: bytes) -> None:
    """Names with '_' or any character outside letters, digits and '-' are dropped."""
    assert header_key(name) is None


def test_header_key_is_stable_across_calls() -> None:
    """Asking twice (the second answer may come from a cache) gives the same key."""
    assert header_key(b"X-Twice") == header_key(b"X-Twice") == b"HTTP_X_TWICE"
    assert header_key(b"X_Twice") is None
    assert header_key(b"X_Twice") is None


# -- split_target ------------------------------------------------------------------------

TARGETS = [
    # (target, PATH_INFO, QUERY_STRING)
    (b"/", b"/", b""),
    (b"/a/b", b"/a/b", b""),
    (b"/a%20b", b"/a b", b""),
    (b"/caf%C3%A9", b"/caf\xc3\xa9", b""),
    (b"/a%2Fb", b"/a/b", b""),
    (b"/100%", b"/100%", b""),
    (b"/a%zzb", b"/a%zzb", b""),
    (b"/p?q=%20x&y=%2F", b"/p", b"q=%20x&y=%2F"),
    (b"/p%20q?a%20b", b"/p q", b"a%20b"),
    (b"/p?", b"/p", b""),
    (b"/p?a?b", b"/p", b"a?b"),
    (b"/p?q=%00", b"/p", b"q=%00"),
    (b"/p#frag", b"/p", b""),
    (b"/p?q=1#frag", b"/p", b"q=1"),
    (b"/p?#frag", b"/p", b""),
    (b"/p#frag?x=1", b"/p", b""),  # '?' inside the fragment starts no query
    (b"/p%23x", b"/p#x", b""),  # an escaped '#' is part of the path
    (b"http://example.com/a/b?x=1", b"/a/b", b"x=1"),
    (b"https://example.com:8443/a%20b", b"/a b", b""),
    (b"http://example.com", b"/", b""),
    (b"http://example.com/", b"/", b""),
    (b"http://example.com?x=1", b"/", b"x=1"),
    (b"http://example.com?next=/a", b"/", b"next=/a"),  # the authority ends at '?'
    (b"*", b"*", b""),
]


@pytest.mark.parametrize(("target", "path", "query"), TARGETS)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    """The path is percent-decoded, the query kept raw, the fragment dropped."""
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    "target", [b"/a%00b", b"/%00", b"http://example.com/x%00", b"example.com/x", b"", b"?q"]
)
def test_split_target_refuses(target: bytes) -> None:
    """A path that decodes to NUL, or a target that is neither a path nor a URL, is refused."""
    with pytest.raises(BadTarget):
        split_target(target)


# -- split_host --------------------------------------------------------------------------

HOSTS = [
    # (Host header, default port, SERVER_NAME, SERVER_PORT)
    (b"example.com", b"80", b"example.com", b"80"),
    (b"example.com:8080", b"80", b"example.com", b"8080"),
    (b"example.com", b"443", b"example.com", b"443"),
    (b"127.0.0.1:3000", b"80", b"127.0.0.1", b"3000"),
    (b"[::1]:8080", b"80", b"[::1]", b"8080"),
    (b"[::1]", b"80", b"[::1]", b"80"),
    (b"[2001:db8::1]:443", b"80", b"[2001:db8::1]", b"443"),
    (b"::1", b"80", b"::1", b"80"),
    (b"example.com:http", b"80", b"example.com:http", b"80"),
]


@pytest.mark.parametrize(("host", "default", "name", "port"), HOSTS)
def test_split_host(host: bytes, default: bytes, name: bytes, port: bytes) -> None:
    """name:port splits at the last colon; bracketed IPv6 keeps its brackets; no port, default."""
    assert split_host(host, default) == (name, port)


# -- forwarded_client --------------------------------------------------------------------

FORWARDED = [
    # (X-Forwarded-For, client)
    (b"203.0.113.7", b"203.0.113.7"),
    (b"203.0.113.7, 10.0.0.2", b"203.0.113.7"),
    (b"198.51.100.1, 203.0.113.7, 10.0.0.2, 127.0.0.1", b"203.0.113.7"),
    (b"203.0.113.7,10.0.0.2", b"203.0.113.7"),
    (b"spoofed, 203.0.113.7", b"203.0.113.7"),
    (b"2001:db8::5, ::1", b"2001:db8::5"),
    (b"10.0.0.3, 10.0.0.2", b"10.0.0.3"),  # all trusted: the farthest hop
    (b"  203.0.113.7  ,  ", b"203.0.113.7"),
]


@pytest.mark.parametrize(("xff", "client"), FORWARDED)
def test_forwarded_client_is_the_rightmost_untrusted_hop(xff: bytes, client: bytes) -> None:
    """Hops appended by trusted proxies are skipped from the right; the next one is the client."""
    assert forwarded_client(xff, PROXIES) == client


def test_forwarded_client_without_trusted_networks() -> None:
    """With no trusted networks the last hop is the client."""
    assert forwarded_client(b"198.51.100.1, 10.0.0.2", ()) == b"10.0.0.2"


@pytest.mark.parametrize("xff", [b"", b" ", b",", b" , ,"])
def test_forwarded_client_of_an_empty_list(xff: bytes) -> None:
    """An X-Forwarded-For with no hops names no client."""
    assert forwarded_client(xff, PROXIES) is None


# -- build_environ -----------------------------------------------------------------------


def decode(block: bytes) -> dict[bytes, bytes]:
    """The environ block as a dict, checking it is well formed (pairs, each key once)."""
    items = block.split(b"\0")
    assert len(items) % 2 == 0, "an odd number of NUL-separated items"
    keys = items[0::2]
    assert len(set(keys)) == len(keys), f"a key appears twice: {keys}"
    return dict(zip(keys, items[1::2], strict=True))


def environ(
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    method: bytes = b"GET",
    target: bytes = b"/",
    body_length: int = 0,
    trusted: bool = False,
    scheme: bytes = b"http",
    remote_addr: bytes = b"10.0.0.2",
    server_port: bytes = b"3000",
) -> dict[bytes, bytes]:
    """The environ for a request, its head made as the front makes it."""
    host = next((value for name, value in headers if name.lower() == b"host"), b"")
    head = RequestHead(
        method,
        target,
        b"1.1",
        list(headers),
        host=host,
        peer_addr=remote_addr,
        peer_port=b"54321",
        trusted=trusted,
        server_name=b"127.0.0.1",
        server_port=server_port,
        scheme=scheme,
    )
    if trusted:
        head.believe_proxy(PROXIES)
    return decode(build_environ(head, body_length))


def test_request_line_and_peer() -> None:
    """The CGI keys come from the request line, the peer and the listening address."""
    env = environ(method=b"POST", target=b"/a%20b?x=%20", body_length=3)
    assert env[b"REQUEST_METHOD"] == b"POST"
    assert env[b"REQUEST_URI"] == b"/a%20b?x=%20"
    assert env[b"PATH_INFO"] == b"/a b"
    assert env[b"QUERY_STRING"] == b"x=%20"
    assert env[b"SERVER_PROTOCOL"] == b"HTTP/1.1"
    assert env[b"SERVER_NAME"] == b"127.0.0.1"
    assert env[b"SERVER_PORT"] == b"3000"
    assert env[b"REMOTE_ADDR"] == b"10.0.0.2"
    assert env[b"REMOTE_PORT"] == b"54321"
    assert env[b"ferryman.url_scheme"] == b"http"


def test_headers_become_http_keys() -> None:
    """Headers appear under their keys; Content-Type has no HTTP_ prefix."""
    env = environ([(b"Host", b"example.com:8080"), (b"Content-Type", b"text/plain")])
    assert env[b"HTTP_HOST"] == b"example.com:8080"
    assert env[b"CONTENT_TYPE"] == b"text/plain"
    assert b"HTTP_CONTENT_TYPE" not in env
    assert (env[b"SERVER_NAME"], env[b"SERVER_PORT"]) == (b"example.com", b"8080")


def test_host_without_port_uses_the_schemes_port() -> None:
    """A Host header without a port gives SERVER_PORT 80 for http and 443 for https."""
    assert environ([(b"Host", b"example.com")])[b"SERVER_PORT"] == b"80"
    assert environ([(b"Host", b"example.com")], scheme=b"https")[b"SERVER_PORT"] == b"443"


@pytest.mark.parametrize(
    ("headers", "key", "value"),
    [
        ([(b"X-A", b"1"), (b"x-a", b"2")], b"HTTP_X_A", b"1, 2"),
        ([(b"Accept", b"a"), (b"Accept", b"b"), (b"Accept", b"c")], b"HTTP_ACCEPT", b"a, b, c"),
        ([(b"Cookie", b"a=1"), (b"Cookie", b"b=2")], b"HTTP_COOKIE", b"a=1; b=2"),
        ([(b"Cookie", b"a=1; c=3"), (b"cookie", b"b=2")], b"HTTP_COOKIE", b"a=1; c=3; b=2"),
    ],
)
def test_duplicate_headers_are_joined(
    headers: list[tuple[bytes, bytes]], key: bytes, value: bytes
) -> None:
    """Repeated headers are joined with ', ' in order; cookies with '; '."""
    assert environ(headers)[key] == value


def test_names_that_could_pose_as_others_are_dropped() -> None:
    """X_Forwarded_For cannot pose as X-Forwarded-For, even from a trusted proxy."""
    env = environ(
        [(b"X_Forwarded_For", b"6.6.6.6"), (b"X-Real", b"1"), (b"Bad Name", b"x")],
        trusted=True,
    )
    assert env[b"REMOTE_ADDR"] == b"10.0.0.2"
    assert b"HTTP_X_FORWARDED_FOR" not in env
    assert env[b"HTTP_X_REAL"] == b"1"
    assert not any(b"BAD" in key for key in env)


@pytest.mark.parametrize(
    ("headers", "body_length"),
    [
        ([(b"Transfer-Encoding", b"chunked")], 5),
        ([(b"Expect", b"100-continue"), (b"Content-Length", b"5")], 5),
        ([(b"Transfer-Encoding", b"gzip, chunked"), (b"Expect", b"100-continue")], 0),
    ],
)
def test_transfer_encoding_and_expect_are_consumed(
    headers: list[tuple[bytes, bytes]], body_length: int
) -> None:
    """The app gets a de-chunked body of known length, and 100-continue is already answered."""
    env = environ(headers, body_length=body_length)
    assert b"HTTP_TRANSFER_ENCODING" not in env
    assert b"HTTP_EXPECT" not in env
    assert env[b"CONTENT_LENGTH"] == str(body_length).encode()


CONTENT_LENGTH_CASES = [
    # (headers, body length, CONTENT_LENGTH or None for absent)
    ([], 0, None),
    ([(b"Content-Type", b"text/plain")], 0, None),
    ([], 7, b"7"),
    ([(b"Content-Length", b"0")], 0, b"0"),
    ([(b"Content-Length", b"12")], 12, b"12"),
    ([(b"Content-Length", b"12"), (b"Content-Length", b"12")], 12, b"12"),
    ([(b"Transfer-Encoding", b"chunked")], 0, b"0"),
    ([(b"Transfer-Encoding", b"chunked")], 100, b"100"),
]


@pytest.mark.parametrize(("headers", "body_length", "expected"), CONTENT_LENGTH_CASES)
def test_content_length(
    headers: list[tuple[bytes, bytes]], body_length: int, expected: bytes | None
) -> None:
    """CONTENT_LENGTH is the body's length, present if there is a body or a framing header."""
    assert environ(headers, body_length=body_length).get(b"CONTENT_LENGTH") == expected


FORWARDED_HEADERS = [
    (b"Host", b"internal:3000"),
    (b"X-Forwarded-For", b"203.0.113.7, 10.0.0.1"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Host", b"www.example.com"),
    (b"Forwarded", b"for=203.0.113.7;proto=https"),
    (b"X-Real-IP", b"203.0.113.7"),
    (b"X-Forwarded-Port", b"443"),
    (b"X-Forwarded-Ssl", b"on"),
]


def test_forwarded_headers_honoured_from_a_trusted_peer() -> None:
    """From a trusted proxy, X-Forwarded-For/-Proto/-Host set the client, scheme and host."""
    env = environ(FORWARDED_HEADERS, trusted=True)
    assert env[b"REMOTE_ADDR"] == b"203.0.113.7"
    assert env[b"ferryman.url_scheme"] == b"https"
    assert env[b"HTTP_HOST"] == b"www.example.com"
    assert (env[b"SERVER_NAME"], env[b"SERVER_PORT"]) == (b"www.example.com", b"443")


def test_forwarded_headers_ignored_from_an_untrusted_peer() -> None:
    """From any other peer, forwarded headers change nothing and do not reach the app, so
    an app that believes them (ProxyFix, SECURE_PROXY_SSL_HEADER) cannot be lied to."""
    env = environ(FORWARDED_HEADERS, trusted=False)
    assert env[b"REMOTE_ADDR"] == b"10.0.0.2"
    assert env[b"ferryman.url_scheme"] == b"http"
    assert env[b"HTTP_HOST"] == b"internal:3000"
    assert (env[b"SERVER_NAME"], env[b"SERVER_PORT"]) == (b"internal", b"3000")
    for key in (b"HTTP_X_FORWARDED_FOR", b"HTTP_X_FORWARDED_PROTO", b"HTTP_X_FORWARDED_HOST",
                b"HTTP_FORWARDED", b"HTTP_X_REAL_IP", b"HTTP_X_FORWARDED_PORT",
                b"HTTP_X_FORWARDED_SSL"):  # fmt: skip
        assert key not in env


@pytest.mark.parametrize(
    ("real", "proto", "scheme"),
    [
        (b"http", b"https", b"https"),
        (b"http", b"HTTPS", b"https"),
        (b"http", b" https , http", b"https"),
        (b"https", b"http", b"http"),
        (b"http", b"ftp", b"http"),  # neither http nor https: the real scheme stays
        (b"http", b"", b"http"),
    ],
)
def test_forwarded_proto(real: bytes, proto: bytes, scheme: bytes) -> None:
    """Only http or https, the first entry of X-Forwarded-Proto, replaces the real scheme."""
    env = environ([(b"X-Forwarded-Proto", proto)], trusted=True, scheme=real)
    assert env[b"ferryman.url_scheme"] == scheme


def test_forwarded_host_takes_the_first_entry() -> None:
    """A multi-entry X-Forwarded-Host uses the first (the original) host, with its port."""
    env = environ(
        [(b"Host", b"internal"), (b"X-Forwarded-Host", b"a.example:8443, b.example")],
        trusted=True,
    )
    assert env[b"HTTP_HOST"] == b"a.example:8443"
    assert (env[b"SERVER_NAME"], env[b"SERVER_PORT"]) == (b"a.example", b"8443")


def test_bad_target_is_refused_by_build_environ() -> None:
    """A target that decodes to NUL cannot be turned into an environ."""
    with pytest.raises(BadTarget):
        environ(target=b"/a%00")


def test_every_x_forwarded_field_is_a_claim_only_a_trusted_proxy_may_make() -> None:
    headers = [
        (b"Host", b"internal:3000"),
        (b"X-Forwarded-Prefix", b"/admin"),
        (b"X-Forwarded-Anything", b"x"),
        (b"Client-IP", b"203.0.113.7"),
        (b"X-Original-URL", b"/admin"),
    ]
    untrusted = environ(headers, trusted=False)
    trusted = environ(headers, trusted=True)
    for key in (b"HTTP_X_FORWARDED_PREFIX", b"HTTP_X_FORWARDED_ANYTHING", b"HTTP_CLIENT_IP",
                b"HTTP_X_ORIGINAL_URL"):  # fmt: skip
        assert key not in untrusted
        assert key in trusted
    assert is_client_claim(b"x-forwarded-prefix")
    assert is_client_claim(b"forwarded")
    assert not is_client_claim(b"x-forwarded")
    assert not is_client_claim(b"accept")


def test_caches_are_bounded_in_entries_and_bytes() -> None:
    """Unique long header names and hosts are never kept: the caches stay small."""
    pad = b"p" * 1000
    for i in range(3000):
        name = b"X-%d-%s" % (i, pad)
        assert header_key(name) == b"HTTP_" + name.upper().replace(b"-", b"_")
        environ([(b"Host", b"h%d%s" % (i, pad)), (b"X-S-%d" % i, b"v")], trusted=False)
    assert len(environ_module._KEY_CACHE) <= environ_module._CACHE_ENTRIES
    assert len(environ_module._HOST_CACHE) <= environ_module._CACHE_ENTRIES
    cached = [*environ_module._KEY_CACHE, *(h for h, _ in environ_module._HOST_CACHE)]
    assert max(map(len, cached)) <= environ_module._CACHE_KEY_BYTES
