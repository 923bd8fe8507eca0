"""The session protocol: frames read back however the bytes arrive, and the loader agrees."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferryman.http import session_protocol as protocol
from ferryman.http.session_protocol import (
    FRAME_ABORT,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEAD,
    FRAME_HEAD_RESPONSE,
    MAX_FRAME_PAYLOAD,
    REQUEST_HEAD,
    FrameReader,
    ProtocolError,
    encode_request,
)

from .loader_copy import wsgi_loader

Frame = tuple[bytes, bytes]

FRAMES: list[Frame] = [
    (FRAME_HEAD_RESPONSE, b"200 OK\r\nContent-Type: text/plain\r\n"),
    (FRAME_BODY, b"hello"),
    (FRAME_BODY, b""),
    (FRAME_BODY, bytes(range(256)) * 3),
    (FRAME_BODY, FRAME_HEAD.pack(FRAME_END, 0)),  # a payload that looks like a frame head
    (FRAME_END, b""),
    (FRAME_HEAD_RESPONSE, b"204 No Content\r\n"),
    (FRAME_ABORT, b"the app raised mid-response"),
]


def encode(frames: list[Frame]) -> bytes:
    return b"".join(FRAME_HEAD.pack(kind, len(payload)) + payload for kind, payload in frames)


STREAM = encode(FRAMES)


def read_in_pieces(pieces: list[bytes]) -> tuple[list[Frame], int]:
    """The frames read from the pieces fed in order, and the bytes left pending."""
    reader = FrameReader()
    frames: list[Frame] = []
    for piece in pieces:
        frames.extend(reader.feed(piece))
    return frames, reader.pending


def test_whole_stream() -> None:
    """Fed at once, the stream gives every frame in order, nothing pending."""
    assert read_in_pieces([STREAM]) == (FRAMES, 0)


def test_one_byte_at_a_time() -> None:
    """Fed one byte at a time, the stream gives the same frames."""
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert read_in_pieces(pieces) == (FRAMES, 0)


def test_split_at_every_offset() -> None:
    """Split in two at any offset, the stream gives the same frames."""
    for cut in range(len(STREAM) + 1):
        assert read_in_pieces([STREAM[:cut], STREAM[cut:]]) == (FRAMES, 0), f"cut at {cut}"


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_split_anywhere_many_times(cuts: list[int]) -> None:
    """Split at any set of offsets (empty pieces too), the stream gives the same frames."""
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert read_in_pieces(pieces) == (FRAMES, 0)


@pytest.mark.parametrize("kept", [1, FRAME_HEAD.size - 1, FRAME_HEAD.size, FRAME_HEAD.size + 3])
def test_incomplete_frame_is_held_back(kept: int) -> None:
    """Bytes of a frame not yet complete are pending and produce no frame."""
    first = encode(FRAMES[:1])
    tail = encode(FRAMES[1:2])[:kept]
    reader = FrameReader()
    assert reader.feed(first + tail) == FRAMES[:1]
    assert reader.pending == kept
    assert reader.feed(b"") == []
    assert reader.pending == kept


def test_oversized_frame_is_a_protocol_error() -> None:
    """A frame head announcing more than MAX_FRAME_PAYLOAD bytes is refused at once."""
    with pytest.raises(ProtocolError):
        FrameReader().feed(FRAME_HEAD.pack(FRAME_BODY, MAX_FRAME_PAYLOAD + 1))


def test_oversized_frame_after_good_ones() -> None:
    """An oversized head after complete frames, or arriving byte by byte, is still refused."""
    reader = FrameReader()
    reader.feed(encode(FRAMES[:2]))
    bad = FRAME_HEAD.pack(FRAME_BODY, 2**32 - 1)
    for byte in bad[:-1]:
        assert reader.feed(bytes([byte])) == []
    with pytest.raises(ProtocolError):
        reader.feed(bad[-1:])


def test_largest_frame_is_allowed() -> None:
    """A head announcing exactly MAX_FRAME_PAYLOAD bytes waits for its payload."""
    reader = FrameReader()
    assert reader.feed(FRAME_HEAD.pack(FRAME_BODY, MAX_FRAME_PAYLOAD)) == []
    assert reader.pending == FRAME_HEAD.size


@given(
    st.binary(max_size=2000),
    st.integers(min_value=0, max_value=2**64 - 1),
)
def test_encode_request_round_trips(environ: bytes, body_length: int) -> None:
    """The request head carries the environ's length and the body length, then the environ."""
    data = encode_request(environ, body_length)
    environ_length, length = REQUEST_HEAD.unpack(data[: REQUEST_HEAD.size])
    assert (environ_length, length) == (len(environ), body_length)
    assert data[REQUEST_HEAD.size :] == environ


def test_encode_request_layout() -> None:
    """The head is a big-endian u32 and u64: 12 bytes before the environ."""
    assert encode_request(b"A\0b", 5) == b"\0\0\0\3" + b"\0" * 7 + b"\5" + b"A\0b"


# -- the loader's copy -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["REQUEST_HEAD", "FRAME_HEAD"])
def test_loader_structs_match(name: str) -> None:
    """The loader packs the request and frame heads exactly as the core does."""
    core = getattr(protocol, name)
    loader = getattr(wsgi_loader(), name)
    assert (loader.format, loader.size) == (core.format, core.size)


@pytest.mark.parametrize("name", ["FRAME_HEAD_RESPONSE", "FRAME_BODY", "FRAME_END", "FRAME_ABORT"])
def test_loader_frame_types_match(name: str) -> None:
    """The loader's frame type bytes are the core's."""
    assert getattr(wsgi_loader(), name) == getattr(protocol, name)


def test_loader_frames_fit_the_core_limit() -> None:
    """The loader's body frames are never larger than the core accepts."""
    assert 0 < wsgi_loader().MAX_FRAME <= MAX_FRAME_PAYLOAD


def test_loader_frames_are_read_by_the_core() -> None:
    """A head, body and end frame built by the loader read back through FrameReader."""
    loader = wsgi_loader()
    data = loader.frame(FRAME_HEAD_RESPONSE, b"200 OK\r\n") + b"".join(loader.body_frames(b"xyz"))
    data += loader.END_FRAME
    assert read_in_pieces([data]) == (
        [(FRAME_HEAD_RESPONSE, b"200 OK\r\n"), (FRAME_BODY, b"xyz"), (FRAME_END, b"")],
        0,
    )
