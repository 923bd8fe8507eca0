"""The PROXY protocol header reader (http/proxy_protocol.py): every form, every split."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest

from ferryman.config import UNIX_PEERS, resolve
from ferryman.errors import ConfigError
from ferryman.http.proxy_protocol import (
    MAX_V1_LENGTH,
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    parse,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(
    command: int = 0x21,
    family: int = 0x11,
    block: bytes = b"",
    *,
    length: int | None = None,
    version: int = 2,
) -> bytes:
    """A v2 header: signature, version/command, family/protocol, length, block."""
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([version << 4 | command & 0xF, family]) + struct.pack(
        "!H", size
    ) + block  # fmt: skip


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def read_whole(data: bytes) -> ProxyHeader:
    reader = ProxyHeaderReader()
    header = reader.feed(data)
    assert header is not None
    assert reader.rest == b""
    return header


def read_split(data: bytes, at: int) -> tuple[ProxyHeader | None, bytes]:
    """Feed ``data`` in two pieces cut at ``at``; the header and the rest."""
    reader = ProxyHeaderReader()
    first = reader.feed(data[:at])
    if first is not None:
        return first, reader.rest + data[at:]
    return reader.feed(data[at:]), reader.rest


def feed_in_two(data: bytes, at: int) -> None:
    """Feed ``data`` cut at ``at``; fails the test if a header comes of it."""
    reader = ProxyHeaderReader()
    assert reader.feed(data[:at]) is None
    assert reader.feed(data[at:]) is None


# -- well-formed headers ----------------------------------------------------------------


def test_v1_tcp4() -> None:
    header = read_whole(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n")
    assert header.version == 1
    assert header.source == ("203.0.113.7", 56324)
    assert header.destination == ("192.0.2.1", 443)
    assert not header.local
    assert header.length == 44


def test_v1_tcp6() -> None:
    header = read_whole(b"PROXY TCP6 2001:db8::1 2001:DB8::2 65535 0\r\n")
    assert header.source == ("2001:db8::1", 65535)
    assert header.destination == ("2001:db8::2", 0)


def test_v1_unknown_uses_the_peer() -> None:
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        header = read_whole(line)
        assert header.source is None
        assert header.destination is None
        assert not header.local


def test_v1_longest_header_is_accepted() -> None:
    addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {addr} {addr} 65535 65535\r\n".encode()
    assert read_whole(line).source == (addr, 65535)
    # The specification's worst case: UNKNOWN with the longest addresses.
    line = f"PROXY UNKNOWN {addr} {addr} 65535 65535\r\n".encode()
    assert len(line) == MAX_V1_LENGTH
    assert read_whole(line).source is None


def test_v2_proxy_ipv4() -> None:
    header = read_whole(v2(block=inet4("198.51.100.22", "10.0.0.1", 40000, 80)))
    assert header.version == 2
    assert header.source == ("198.51.100.22", 40000)
    assert header.destination == ("10.0.0.1", 80)
    assert not header.local
    assert header.length == 16 + 12


def test_v2_proxy_ipv6() -> None:
    header = read_whole(v2(family=0x21, block=inet6("2001:db8::7", "::1", 1, 65535)))
    assert header.source == ("2001:db8::7", 1)
    assert header.destination == ("::1", 65535)


def test_v2_local_uses_the_peer() -> None:
    header = read_whole(v2(command=0x0, family=0x00))
    assert header.local
    assert header.source is None
    # LOCAL: the address block, if any, is ignored (HAProxy's health checks send one).
    header = read_whole(v2(command=0x0, family=0x11, block=inet4("1.2.3.4", "5.6.7.8", 1, 2)))
    assert header.local
    assert header.source is None


def test_v2_unix_and_unspec_name_no_client() -> None:
    unix_block = b"/run/client.sock".ljust(108, b"\0") + b"/run/haproxy.sock".ljust(108, b"\0")
    header = read_whole(v2(family=0x31, block=unix_block))
    assert header.source is None
    assert not header.local
    header = read_whole(v2(family=0x00))
    assert header.source is None
    assert not header.local
    # INET with an unspecified protocol: a relayed connection of unknown kind.
    header = read_whole(v2(family=0x10, block=inet4("1.2.3.4", "5.6.7.8", 1, 2)))
    assert header.source is None


def test_v2_tlvs_are_skipped() -> None:
    tlvs = tlv(0x01, b"h2") + tlv(0x04, b"\0" * 30) + tlv(0xEA, b"vpce-0123") + tlv(0x20, b"")
    header = read_whole(v2(block=inet4("192.0.2.9", "192.0.2.10", 1234, 443) + tlvs))
    assert header.source == ("192.0.2.9", 1234)
    assert header.length == 16 + 12 + len(tlvs)


def test_v2_longest_allowed_header() -> None:
    block = inet4("192.0.2.9", "192.0.2.10", 1, 2)
    block += tlv(0x04, b"\0" * (MAX_V2_LENGTH - len(block) - 3))
    assert len(block) == MAX_V2_LENGTH
    assert read_whole(v2(block=block)).source == ("192.0.2.9", 1)


def test_the_bytes_after_the_header_are_the_rest() -> None:
    for header in (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        v2(block=inet4("1.2.3.4", "5.6.7.8", 1, 2)),
    ):
        reader = ProxyHeaderReader()
        found = reader.feed(header + REQUEST + REQUEST)
        assert found is not None
        assert found.source == ("1.2.3.4", 1)
        assert reader.rest == REQUEST + REQUEST


GOOD = [
    b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(block=inet4("198.51.100.22", "10.0.0.1", 40000, 80) + tlv(0x02, b"example.com")),
    v2(family=0x21, block=inet6("2001:db8::7", "::1", 1, 65535)),
    v2(command=0x0, family=0x00),
]


@pytest.mark.parametrize("data", GOOD, ids=range(len(GOOD)))
def test_split_at_every_byte_boundary(data: bytes) -> None:
    whole = parse(data)
    assert whole is not None
    for at in range(len(data) + 1):
        header, rest = read_split(data + REQUEST, at)
        assert header is not None, at
        assert (header.source, header.local, header.length) == (
            whole.source,
            whole.local,
            whole.length,
        ), at
        assert rest == REQUEST, at


@pytest.mark.parametrize("data", GOOD, ids=range(len(GOOD)))
def test_byte_by_byte(data: bytes) -> None:
    reader = ProxyHeaderReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) is None, i
    header = reader.feed(data[-1:] + b"G")
    assert header is not None
    assert reader.rest == b"G"


# -- malformed headers ---------------------------------------------------------------------

_ADDR6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

BAD_V1 = {
    "http request": REQUEST,
    "lower case": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "no space": b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "unknown protocol": b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "no protocol": b"PROXY \r\n",
    "missing field": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "extra field": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "two spaces": b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    "tab": b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
    "trailing space": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "bad ipv4": b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "leading zero ipv4": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "ipv6 for tcp4": b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
    "ipv4 for tcp6": b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    "bad ipv6": b"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n",
    "scoped ipv6": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "host name": b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
    "port too big": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "negative port": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "port with sign": b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "port leading zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    "port not a number": b"PROXY TCP4 1.2.3.4 5.6.7.8 http 2\r\n",
    "empty port": b"PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n",
    "bare lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "bare cr": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n",
    "unknown bare lf": b"PROXY UNKNOWN\n",
    "port too long": f"PROXY TCP6 {_ADDR6} {_ADDR6} 65535 655350\r\n".encode(),
    "too long": f"PROXY UNKNOWN {_ADDR6} {_ADDR6} 65535 655350\r\n".encode(),
    "too long unknown": b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",
    "no crlf in 107 bytes": b"PROXY TCP4 " + b"1" * 200,
    "non-ascii address": "PROXY TCP4 1.2.3.\u0664 5.6.7.8 1 2\r\n".encode(),
}

_GOOD4 = inet4("1.2.3.4", "5.6.7.8", 1, 2)
BAD_V2 = {
    "bad signature": V2_SIGNATURE[:-1] + b"X" + b"\x21\x11\x00\x0c" + _GOOD4,
    "version 1": v2(block=_GOOD4, version=1),
    "version 3": v2(block=_GOOD4, version=3),
    "unknown command": v2(command=0x2, block=_GOOD4),
    "unknown family": v2(family=0x41, block=_GOOD4),
    "dgram": v2(family=0x12, block=_GOOD4),
    "unknown protocol": v2(family=0x13, block=_GOOD4),
    "ipv4 block too short": v2(block=_GOOD4[:11]),
    "ipv6 block too short": v2(family=0x21, block=inet6("::1", "::2", 1, 2)[:35]),
    "unix block too short": v2(family=0x31, block=b"\0" * 215),
    "too long": v2(block=_GOOD4 + tlv(0x04, b"\0" * MAX_V2_LENGTH)),
    "huge length": v2(length=65535),
    "tlv past the end": v2(block=_GOOD4 + b"\x04\x00\x05abc"),
    "tlv cut in its length": v2(block=_GOOD4 + b"\x04\x00"),
    "local tlv past the end": v2(command=0x0, family=0x00, block=b"\x04\x00\x09"),
}


@pytest.mark.parametrize(
    "data", list(BAD_V1.values()) + list(BAD_V2.values()), ids=[*BAD_V1, *BAD_V2]
)
def test_malformed_headers_are_refused_in_any_pieces(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)
    # Fed in two pieces at every boundary (with a request after it, as a client would
    # send), the reader refuses it too: never returns a header.
    for at in range(len(data) + 1):
        with pytest.raises(ProxyHeaderError):
            feed_in_two(data + REQUEST, at)


def test_refused_at_the_first_wrong_byte() -> None:
    """A connection that does not start with a header is refused at once, not when the
    longest header would have ended (an HTTP request is refused at its first byte)."""
    for first in (b"G", b"p", b"\r\n\r\n\x00\r\nX", b"PROXY\t", b"\x16\x03\x01"):
        with pytest.raises(ProxyHeaderError, match="does not start with a PROXY header"):
            ProxyHeaderReader().feed(first)
    with pytest.raises(ProxyHeaderError, match="version"):
        ProxyHeaderReader().feed(V2_SIGNATURE + b"\x11")
    with pytest.raises(ProxyHeaderError, match="family"):
        ProxyHeaderReader().feed(V2_SIGNATURE + b"\x21\x51")
    with pytest.raises(ProxyHeaderError, match="at most"):
        ProxyHeaderReader().feed(v2(length=MAX_V2_LENGTH + 1))


def test_what_is_buffered_is_bounded() -> None:
    """Incomplete starts wait; past the longest header, they are refused."""
    reader = ProxyHeaderReader()
    assert reader.feed(b"PROXY TCP4 " + b"1" * (MAX_V1_LENGTH - 12)) is None
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        reader.feed(b"1")
    reader = ProxyHeaderReader()
    assert reader.feed(v2(length=MAX_V2_LENGTH) + b"\0" * (MAX_V2_LENGTH - 1)) is None
    assert parse(b"") is None


# -- the setting ------------------------------------------------------------------------------


def test_proxy_protocol_needs_trusted_proxies(tmp_path: Path) -> None:
    """On without any trusted proxy, every connection would be refused: a start error."""
    for cli, env in (
        ({"proxy_protocol": True}, {}),
        ({}, {"FERRYMAN_PROXY_PROTOCOL": "1"}),
    ):
        with pytest.raises(ConfigError) as info:
            resolve(tmp_path, cli, env)
        message = str(info.value)
        assert "\n" not in message
        assert "invalid value true for proxy_protocol" in message
        assert "trusted_proxies" in message
        assert info.value.exit_code == 2


def test_proxy_protocol_with_trusted_proxies(tmp_path: Path) -> None:
    config, _ = resolve(tmp_path, {"proxy_protocol": True, "trusted_proxies": ["10.0.0.0/8"]}, {})
    assert config.proxy_protocol
    config, _ = resolve(
        tmp_path, {}, {"FERRYMAN_PROXY_PROTOCOL": "true", "FERRYMAN_TRUSTED_PROXIES": "unix"}
    )
    assert config.proxy_protocol
    assert config.trusted_proxies == (UNIX_PEERS,)
    config, _ = resolve(tmp_path, {}, {})
    assert not config.proxy_protocol
