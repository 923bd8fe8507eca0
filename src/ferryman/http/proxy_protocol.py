"""The PROXY protocol header (HAProxy's, versions 1 and 2): a sans-IO reader.

A load balancer in TCP mode (HAProxy's ``send-proxy``/``send-proxy-v2``, AWS NLB, GCP
and others) sends one header at the very start of each connection, naming the client
it relays; the HTTP request follows. This module reads that header from bytes and
nothing else: no socket, no clock. ``ProxyHeaderReader.feed`` takes the bytes as they
come (in any pieces) and returns the header once it is whole; ``rest`` then holds the
bytes after it (the start of the HTTP request, when both came in one packet).

The specification: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

What is accepted (anything else raises ``ProxyHeaderError``, as early as it can be
told: a connection that does not start with a header is refused at its first bytes):

* v1: ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n`` (``TCP6`` likewise), single
  spaces, addresses in their canonical text form, decimal ports 0-65535 without
  leading zeros; or ``PROXY UNKNOWN`` with anything up to the CRLF (ignored). At
  most 107 bytes with the CRLF (the specification's bound).
* v2: the 12-byte signature, version 2 with command LOCAL (the balancer's own
  connection, e.g. a health check) or PROXY; families UNSPEC, INET, INET6, UNIX with
  protocol UNSPEC or STREAM (DGRAM is not what relays an HTTP connection); the address
  block long enough for its family; TLVs after it, each checked to fit and skipped.
  The length after the fixed 16 bytes is bounded (``MAX_V2_LENGTH``).

Only INET/INET6 over STREAM name a client (``ProxyHeader.source``); every other form
(v1 UNKNOWN, v2 LOCAL, UNSPEC, UNIX, a protocol left UNSPEC) says "use the connection's
own peer", and ``ProxyHeader.local`` tells a v2 LOCAL (the balancer itself talking)
from the rest (a client the balancer could not name).
"""

from __future__ import annotations

import ipaddress
from typing import Final

#: The v2 header's first 12 bytes.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: The v1 header's first 6 bytes.
V1_PREFIX: Final = b"PROXY "
#: The longest v1 header, CRLF included (the specification's worst case, TCP6).
MAX_V1_LENGTH: Final = 107
#: The most bytes after a v2 header's fixed 16 (address block and TLVs). The
#: specification allows 65535; real senders stay well below (addresses are at most 216
#: bytes, cloud balancers add a few short TLVs): beyond this the header is refused rather
#: than buffered.
MAX_V2_LENGTH: Final = 2048
_V2_FIXED: Final = 16
_LOCAL: Final = 0x20
_PROXY: Final = 0x21
_AF_UNSPEC: Final = 0x0
_AF_INET: Final = 0x1
_AF_INET6: Final = 0x2
_AF_UNIX: Final = 0x3
_PROTO_UNSPEC: Final = 0x0
_PROTO_STREAM: Final = 0x1
#: Address block sizes per family (v2): two addresses and two ports.
_ADDRESS_SIZES: Final = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header this reader accepts; the message says why."""


class ProxyHeader:
    """A complete PROXY header: who the balancer says the client is."""

    __slots__ = ("destination", "length", "local", "source", "version")

    def __init__(
        self,
        version: int,
        length: int,
        source: tuple[str, int] | None,
        destination: tuple[str, int] | None,
        *,
        local: bool = False,
    ) -> None:
        #: 1 or 2.
        self.version = version
        #: The header's size in bytes (what the connection's first bytes were).
        self.length = length
        #: (address, port) of the client the balancer relays; None: use the peer.
        self.source = source
        #: (address, port) the client connected to, on the balancer; None when unknown.
        self.destination = destination
        #: A v2 LOCAL command: the balancer's own connection (a health check), not a
        #: relayed client.
        self.local = local

    def __repr__(self) -> str:
        return (
            f"ProxyHeader(v{self.version}, {self.length} bytes, source={self.source}, "
            f"destination={self.destination}, local={self.local})"
        )


class ProxyHeaderReader:
    """Reads one PROXY header from bytes fed in any pieces.

    ``feed`` returns None while the header is incomplete, the header once it is whole
    (then ``rest`` holds what came after it), and raises ``ProxyHeaderError`` as soon
    as the bytes cannot be a header. What it buffers is bounded by the longest header
    (``MAX_V1_LENGTH``, or 16 + ``MAX_V2_LENGTH``).
    """

    __slots__ = ("_buffer", "rest")

    def __init__(self) -> None:
        self._buffer = b""
        #: The bytes after the header, once it is whole.
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        buffer = self._buffer + data if self._buffer else data
        found = parse(buffer)
        if found is None:
            self._buffer = buffer  # bounded: parse() raises past the longest header
            return None
        self._buffer = b""
        self.rest = buffer[found.length :]
        return found


def parse(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of ``data``; None if ``data`` is a correct but
    incomplete start of one; ProxyHeaderError if it cannot be one."""
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    return _parse_v1(data)


# -- version 1 ----------------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | None:
    start = data[: len(V1_PREFIX)]
    if start != V1_PREFIX[: len(start)]:
        raise ProxyHeaderError("the connection does not start with a PROXY header")
    end = data.find(b"\r\n", 0, MAX_V1_LENGTH)
    if end < 0:
        stray = data.find(b"\n", 0, MAX_V1_LENGTH)
        if stray >= 0:
            raise ProxyHeaderError("PROXY v1 header line does not end with CRLF")
        if len(data) >= MAX_V1_LENGTH:
            raise ProxyHeaderError(f"PROXY v1 header longer than {MAX_V1_LENGTH} bytes")
        if data.find(b"\r", 0, len(data) - 1) >= 0:
            raise ProxyHeaderError("PROXY v1 header has a CR not followed by LF")
        return None
    line = data[:end]
    length = end + 2
    fields = line.split(b" ")
    protocol = fields[1] if len(fields) > 1 else b""
    if protocol == b"UNKNOWN":
        # The specification: anything up to the CRLF is to be ignored, and the peer used.
        return ProxyHeader(1, length, None, None)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 header names no known protocol (TCP4, TCP6, UNKNOWN)")
    if len(fields) != 6:
        raise ProxyHeaderError("PROXY v1 header does not have 6 fields separated by one space")
    version = 4 if protocol == b"TCP4" else 6
    source = _v1_address(fields[2], version)
    destination = _v1_address(fields[3], version)
    source_port = _v1_port(fields[4])
    destination_port = _v1_port(fields[5])
    return ProxyHeader(1, length, (source, source_port), (destination, destination_port))


def _v1_address(text: bytes, version: int) -> str:
    try:
        decoded = text.decode("ascii")
        address = ipaddress.ip_address(decoded)
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"PROXY v1 header has an invalid address {text!r}") from None
    if address.version != version:
        raise ProxyHeaderError(
            f"PROXY v1 header has an IPv{address.version} address for TCP{version}"
        )
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ProxyHeaderError(f"PROXY v1 header has an address with a scope {text!r}")
    return str(address)


def _v1_port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyHeaderError(f"PROXY v1 header has an invalid port {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 header has an invalid port {text!r}")
    return port


# -- version 2 ----------------------------------------------------------------------------


def _parse_v2(data: bytes) -> ProxyHeader | None:
    start = data[: len(V2_SIGNATURE)]
    if start != V2_SIGNATURE[: len(start)]:
        raise ProxyHeaderError("the connection does not start with a PROXY header")
    if len(data) < _V2_FIXED:
        # Judge the command and family bytes as soon as they are here.
        if len(data) > 12:
            _v2_command(data[12])
        if len(data) > 13:
            _v2_family(data[13])
        return None
    command = _v2_command(data[12])
    family, protocol = _v2_family(data[13])
    size = int.from_bytes(data[14:16], "big")
    if size > MAX_V2_LENGTH:
        raise ProxyHeaderError(
            f"PROXY v2 header of {size} bytes after the fixed part (at most {MAX_V2_LENGTH})"
        )
    length = _V2_FIXED + size
    if len(data) < length:
        return None
    block = data[_V2_FIXED:length]
    needed = _ADDRESS_SIZES[family]
    if command == _PROXY and size < needed:
        raise ProxyHeaderError(
            f"PROXY v2 header's address block is {size} bytes, its family needs {needed}"
        )
    if command == _LOCAL:
        # The balancer's own connection: the specification says to ignore the address
        # block (whatever it holds) and use the real endpoints.
        _check_tlvs(block, min(needed, size))
        return ProxyHeader(2, length, None, None, local=True)
    _check_tlvs(block, needed)
    if protocol != _PROTO_STREAM or family not in (_AF_INET, _AF_INET6):
        return ProxyHeader(2, length, None, None)  # a client the balancer cannot name
    if family == _AF_INET:
        src: str = str(ipaddress.IPv4Address(block[0:4]))
        dst: str = str(ipaddress.IPv4Address(block[4:8]))
        ports = block[8:12]
    else:
        src = str(ipaddress.IPv6Address(block[0:16]))
        dst = str(ipaddress.IPv6Address(block[16:32]))
        ports = block[32:36]
    source_port = int.from_bytes(ports[0:2], "big")
    destination_port = int.from_bytes(ports[2:4], "big")
    return ProxyHeader(2, length, (src, source_port), (dst, destination_port))


def _v2_command(byte: int) -> int:
    if byte >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {byte >> 4} (only 2 is defined)")
    if byte not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {byte & 0xF}")
    return byte


def _v2_family(byte: int) -> tuple[int, int]:
    family, protocol = byte >> 4, byte & 0xF
    if family not in _ADDRESS_SIZES:
        raise ProxyHeaderError(f"PROXY v2 header with unknown address family {family}")
    if protocol not in (_PROTO_UNSPEC, _PROTO_STREAM):
        raise ProxyHeaderError(f"PROXY v2 header with protocol {protocol} (not a stream)")
    return family, protocol


def _check_tlvs(block: bytes, offset: int) -> None:
    """Each TLV after the address block (type, 2-byte length, value) must fit in it."""
    end = len(block)
    while offset < end:
        if end - offset < 3:
            raise ProxyHeaderError("PROXY v2 header ends inside a TLV's type and length")
        size = int.from_bytes(block[offset + 1 : offset + 3], "big")
        offset += 3 + size
        if offset > end:
            raise ProxyHeaderError("PROXY v2 header has a TLV longer than the header")
