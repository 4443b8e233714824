"""Tests for thinghub.faces.itwin.framing: the TCP stream of JSON values and its encoder."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinghub.faces.itwin.framing import (
    INVALID_REQUEST,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    NEED_DATA,
    PARSE_ERROR,
    FrameDecoder,
    FrameError,
    decode_message,
    encode_frame,
    encode_message,
)

AUTHENTICATE = b'{"jsonrpc":"2.0","method":"authenticate","params":{"code":"k"},"id":0}'
GET_DATA = (
    b'{"jsonrpc": "2.0", "method": "getData", "id": 1, "params": {"sensor": '
    b'"/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor", "metric": "dx", "unit": "m",'
    b' "params": {"ZERO_DATE": {"value": "2017-03-01T22:00:00.000Z"}}}}'
)


def frames_of(decoder: FrameDecoder) -> list[Any]:
    out = []
    while (value := decoder.next_frame()) is not NEED_DATA:
        out.append(value)
    return out


def decode_all(data: bytes, step: int) -> list[Any]:
    decoder = FrameDecoder()
    out: list[Any] = []
    for i in range(0, len(data), step):
        decoder.receive_data(data[i : i + step])
        out += frames_of(decoder)
    return out


# -- the seed's reader, reimplemented as printed (bytes, as Python 3's recv returns) ----------


class OneByteSocket:
    """recv(1) over fixed bytes; raises at the end instead of returning b"" forever."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def recv(self, size: int) -> bytes:
        if self.pos >= len(self.data):
            raise EOFError("the reader wanted more bytes than the server sent")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def decodeOneJsonFrame(socket: OneByteSocket) -> bytes:  # noqa: N802 - the seed's name
    frame = b""
    count = 0
    while True:
        byte = socket.recv(1)
        if byte == b"{":
            count = count + 1
        elif byte == b"}":
            count = count - 1
        frame = frame + byte
        if count == 0:
            return frame


# -- decoding ---------------------------------------------------------------------------------


def test_back_to_back_requests_without_delimiter() -> None:
    # The seed's Python client sends authenticate and getData without waiting.
    assert decode_all(AUTHENTICATE + GET_DATA, 4096) == [
        orjson.loads(AUTHENTICATE),
        orjson.loads(GET_DATA),
    ]


@pytest.mark.parametrize("frame", [AUTHENTICATE, GET_DATA, b'{"a":"}{\\"\\\\","b":[{}]}'])
def test_every_truncated_prefix_needs_more(frame: bytes) -> None:
    for cut in range(len(frame)):
        decoder = FrameDecoder()
        decoder.receive_data(frame[:cut])
        assert decoder.next_frame() is NEED_DATA, cut
        decoder.receive_data(frame[cut:])
        assert decoder.next_frame() == orjson.loads(frame)
        assert decoder.next_frame() is NEED_DATA


def test_byte_at_a_time_with_whitespace_between_values() -> None:
    stream = b"  " + AUTHENTICATE + b"\r\n\t " + GET_DATA + b"\n[1,2]\n"
    assert decode_all(stream, 1) == [
        orjson.loads(AUTHENTICATE),
        orjson.loads(GET_DATA),
        [1, 2],
    ]


def test_whitespace_between_values_is_not_held() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b" \n" * 10_000)
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 0


def test_utf8_split_at_every_byte() -> None:
    frame = '{"NAME":"Tilt é € 😀","notation":"∆T"}'.encode()
    for cut in range(1, len(frame)):
        decoder = FrameDecoder()
        decoder.receive_data(frame[:cut])
        assert decoder.next_frame() is NEED_DATA
        decoder.receive_data(frame[cut:])
        assert decoder.next_frame() == {"NAME": "Tilt é € 😀", "notation": "∆T"}


def test_brackets_and_escapes_inside_strings_do_not_count() -> None:
    frame = b'{"a":"{[}]\\"{","b":"\\\\","c":"\\u007b"}'
    decoder = FrameDecoder(max_depth=1)
    decoder.receive_data(frame + frame)
    assert frames_of(decoder) == [{"a": '{[}]"{', "b": "\\", "c": "{"}] * 2


def test_backslash_at_the_end_of_a_read() -> None:
    frame = b'{"a":"x\\"}"}'
    cut = frame.index(b"\\") + 1
    decoder = FrameDecoder()
    decoder.receive_data(frame[:cut])
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(frame[cut:])
    assert decoder.next_frame() == {"a": 'x"}'}


@pytest.mark.parametrize(
    "garbage",
    [
        b"x",
        b"123",
        b'"a string"',
        b"null",
        b"{]",
        b'{"a":}',
        b"{'a':1}",
        b'{"a":NaN}',
        b'{"a":1,}',
        b'{"a":"\xff"}',
        b"{}x{}",
        b"[1 2]",
    ],
)
def test_unparseable_bytes_are_a_parse_error_and_no_resync(garbage: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(garbage)
    with pytest.raises(FrameError) as caught:
        frames_of(decoder)
    assert caught.value.code == PARSE_ERROR
    decoder.receive_data(AUTHENTICATE)
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_a_value_before_garbage_is_still_delivered() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(AUTHENTICATE + b"garbage")
    assert decoder.next_frame() == orjson.loads(AUTHENTICATE)
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_oversize_complete_frame_is_refused() -> None:
    decoder = FrameDecoder(max_frame_bytes=64)
    decoder.receive_data(b'{"a":"' + b"x" * 64 + b'"}')
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert caught.value.code == INVALID_REQUEST
    assert "64" in caught.value.message


def test_oversize_incomplete_frame_is_refused_before_its_end() -> None:
    decoder = FrameDecoder(max_frame_bytes=64)
    decoder.receive_data(b'{"a":"' + b"x" * 40)
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(b"x" * 40)  # still no end in sight, and past the limit
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert caught.value.code == INVALID_REQUEST
    assert decoder.buffered == 0


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    frame = b'{"a":"' + b"x" * 54 + b'"}'
    assert len(frame) == 62
    decoder = FrameDecoder(max_frame_bytes=62)
    decoder.receive_data(frame)
    assert decoder.next_frame() == {"a": "x" * 54}


def test_depth_limit_is_checked_by_the_scan() -> None:
    decoder = FrameDecoder(max_depth=3)
    decoder.receive_data(b'{"a":[{"b":1}]}')
    assert decoder.next_frame() == {"a": [{"b": 1}]}
    decoder.receive_data(b'{"a":[{"b":[1]}]}')
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert caught.value.code == INVALID_REQUEST


def test_deep_nesting_never_reaches_a_recursive_parser() -> None:
    # Far deeper than Python's recursion limit: refused by the scan, not by a RecursionError.
    decoder = FrameDecoder()
    decoder.receive_data(b"[" * 200_000)
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert f"{MAX_DEPTH}" in caught.value.message


def test_default_limits_are_named_and_sane() -> None:
    assert MAX_FRAME_BYTES >= 1024 * 1024
    assert 16 <= MAX_DEPTH < 1000


def test_decoder_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_bytes=1)
    with pytest.raises(ValueError):
        FrameDecoder(max_depth=0)


# -- one WebSocket message --------------------------------------------------------------------


def test_decode_message_reads_one_value() -> None:
    assert decode_message(AUTHENTICATE.decode()) == orjson.loads(AUTHENTICATE)
    assert decode_message(b" \n" + GET_DATA + b"\n") == orjson.loads(GET_DATA)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (AUTHENTICATE + AUTHENTICATE, PARSE_ERROR),
        (AUTHENTICATE[:-1], PARSE_ERROR),
        (b"", PARSE_ERROR),
        (b"42", PARSE_ERROR),
        (b"[" * 100 + b"]" * 100, INVALID_REQUEST),
    ],
)
def test_decode_message_refuses(message: bytes, code: int) -> None:
    with pytest.raises(FrameError) as caught:
        decode_message(message)
    assert caught.value.code == code


def test_decode_message_size_limit() -> None:
    with pytest.raises(FrameError) as caught:
        decode_message(b'{"a":"' + b"x" * 100 + b'"}', max_frame_bytes=50)
    assert caught.value.code == INVALID_REQUEST


# -- encoding ---------------------------------------------------------------------------------


def test_encoder_is_compact_with_nothing_between_frames() -> None:
    out = encode_frame({"jsonrpc": "2.0", "id": 1, "result": {"data": {"a": 1.5}}})
    assert out == b'{"jsonrpc":"2.0","id":1,"result":{"data":{"a":1.5}}}'
    assert not out[:1].isspace() and not out[-1:].isspace()


def test_encoder_escapes_braces_inside_strings_only() -> None:
    message = {"NAME": "a}b{c", "x{": ["}", {"y": "\\}"}]}
    out = encode_frame(message)
    assert out.count(b"{") == out.count(b"}") == 2  # only the two objects
    assert orjson.loads(out) == message


def test_encoder_writes_nan_as_null() -> None:
    assert encode_frame({"v": float("nan")}) == b'{"v":null}'


def test_message_encoder_is_the_same_value_without_escaping() -> None:
    """encode_message (WebSocket: the frame delimits the message) leaves braces in strings
    as they are; the value is the one encode_frame writes."""
    message = {"jsonrpc": "2.0", "id": "{x}", "result": {"data": {"NAME": "a}b{c"}}}
    out = encode_message(message)
    assert out == b'{"jsonrpc":"2.0","id":"{x}","result":{"data":{"NAME":"a}b{c"}}}'
    assert orjson.loads(out) == orjson.loads(encode_frame(message)) == message
    assert encode_frame(message) != out  # the TCP form escapes them
    assert encode_message({"v": float("inf")}) == b'{"v":null}'


def test_seed_reader_reads_our_frames() -> None:
    messages = [
        {"jsonrpc": "2.0", "id": 0, "result": {"nextId": 1}},
        {"jsonrpc": "2.0", "id": 1, "result": {"data": {"2016-12-15T23:38:07.000Z": 77.5}}},
        {"jsonrpc": "2.0", "id": 1, "result": {"data": {"NAME": "}{ tricky {"}}},
        {"jsonrpc": "2.0", "id": 1, "result": {"requestStatus": "finished"}},
    ]
    socket = OneByteSocket(b"".join(encode_frame(m) for m in messages))
    for message in messages:
        assert orjson.loads(decodeOneJsonFrame(socket)) == message
    assert socket.pos == len(socket.data)


def test_a_newline_between_frames_would_break_the_seed_reader() -> None:
    # Why the encoder never writes whitespace between frames.
    socket = OneByteSocket(encode_frame({"a": 1}) + b"\n" + encode_frame({"b": 2}))
    assert orjson.loads(decodeOneJsonFrame(socket)) == {"a": 1}
    assert decodeOneJsonFrame(socket) == b"\n"


JSON_TEXT = st.text(alphabet=st.sampled_from('{}[]"\\/ab\n\té€😀,:'), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
    max_leaves=20,
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.lists(st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=4), min_size=1, max_size=4))
def test_any_objects_survive_encoder_seed_reader_and_decoder(messages: list[Any]) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    socket = OneByteSocket(stream)
    assert [orjson.loads(decodeOneJsonFrame(socket)) for _ in messages] == messages
    assert decode_all(stream, 7) == messages


@PROPERTY
@given(st.binary(max_size=64))
def test_any_bytes_give_values_need_data_or_frame_error(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_bytes=256, max_depth=8)
    decoder.receive_data(data)
    code = None
    try:
        frames_of(decoder)
    except FrameError as exc:
        code = exc.code
    assert code in (None, PARSE_ERROR, INVALID_REQUEST)


def test_container_count_is_bounded() -> None:
    decoder = FrameDecoder(max_containers=4)
    decoder.receive_data(b'{"a":[{},[]]}')  # four objects and arrays
    assert decoder.next_frame() == {"a": [{}, []]}
    decoder.receive_data(b'{"a":[{},[],{}]}')
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert caught.value.code == INVALID_REQUEST
    assert MAX_CONTAINERS >= 200_000  # an uploadData of 100,000 observations fits
