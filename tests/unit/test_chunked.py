"""ChunkedBody: RFC 9112 chunked framing, decoded by the front, fed whole or byte by byte."""

from __future__ import annotations

import pytest

from ferryman.http.chunked import ChunkedBody, ChunkError


def decode(data: bytes, split: int = 0, max_trailer: int = 4096) -> tuple[bytes, int]:
    """(the body, how many bytes of data were the body) feeding data in pieces of
    ``split`` bytes (0: whole)."""
    decoder = ChunkedBody(max_trailer)
    body = bytearray()
    pieces = [data] if not split else [data[i : i + split] for i in range(0, len(data), split)]
    used = 0
    for piece in pieces:
        taken = decoder.feed(piece, body.extend)
        used += taken
        if decoder.done:
            break
    assert decoder.done, "the body did not end"
    return bytes(body), used


GOOD = [
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n00\r\n\r\n", b"0123456789"),
    (b"5;a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 ; a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\t;\ta\t=\tb\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b'5;a="x; \\"y\\""\r\nhello\r\n0;last\r\n\r\n', b"hello"),
    (b"5;a;b;c=d\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 \r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Other:\r\n\r\n", b"hello"),
    (b"0\r\n\r\n", b""),
    (b"000000000000000000000000000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n", None),
]


@pytest.mark.parametrize(("data", "body"), [g for g in GOOD if g[1] is not None])
@pytest.mark.parametrize("split", [0, 1, 2, 7])
def test_valid_chunked_bodies_decode(data: bytes, body: bytes, split: int) -> None:
    decoded, used = decode(data + b"GET / HTTP/1.1\r\n", split)
    assert decoded == body
    assert used == len(data)  # the next request is not eaten


BAD = [
    b"x\r\nhello\r\n0\r\n\r\n",  # not hex
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",  # no whitespace before the size
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"10000000000000000\r\n",  # 17 hex digits: overflow
    b"5\nhello\r\n0\r\n\r\n",  # bare LF
    b"5\r\r\nhello\r\n0\r\n\r\n",  # bare CR
    b"5;\r\nhello\r\n0\r\n\r\n",  # an extension without a name
    b"5; a b\r\nhello\r\n0\r\n\r\n",
    b'5;a="unterminated\r\nhello\r\n0\r\n\r\n',
    b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
    b"5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n",
    b"5\r\nhello\r\n0\r\n continued\r\n\r\n",  # obs-fold
    b"5\r\nhello\r\n0\r\nX-A: a\x01b\r\n\r\n",
    b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",  # framing in the trailer
    b"5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n",
]


@pytest.mark.parametrize("data", BAD)
@pytest.mark.parametrize("split", [0, 1])
def test_broken_framing_is_refused_with_400(data: bytes, split: int) -> None:
    with pytest.raises(ChunkError) as caught:
        decode(data, split)
    assert caught.value.status == 400


def test_a_long_size_line_is_refused() -> None:
    with pytest.raises(ChunkError) as caught:
        decode(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 100)
    assert caught.value.status == 400


def test_a_large_trailer_section_gets_431() -> None:
    trailers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(50))
    with pytest.raises(ChunkError) as caught:
        decode(b"0\r\n" + trailers + b"\r\n", 64, max_trailer=1024)
    assert caught.value.status == 431


def test_a_big_chunk_is_handed_on_in_the_pieces_it_came_in() -> None:
    pieces: list[bytes] = []
    decoder = ChunkedBody(4096)
    decoder.feed(b"100000\r\n" + b"a" * 1000, pieces.append)
    decoder.feed(b"b" * (0x100000 - 1000), pieces.append)
    assert [len(p) for p in pieces] == [1000, 0x100000 - 1000]
    assert not decoder.done
