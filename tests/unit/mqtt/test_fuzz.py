"""Property tests: no input makes the codec or a session raise anything but RemoteProtocolError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinghub.mqtt import (
    SUBACK_FAILURE,
    ClientSession,
    ClientState,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    ProtocolViolation,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    RemoteProtocolError,
    ServerSession,
    ServerState,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
    decode,
    encode,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Strategies for valid packets ---------------------------------------------------------------

_chars = st.characters(codec="utf-8", exclude_characters="\x00")
_level = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/+#\x00"), max_size=6)
topic_names = st.lists(_level, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(_level, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "#"


packet_ids = st.integers(1, 0xFFFF)
qos_levels = st.integers(0, 2)
payloads = st.binary(max_size=300)


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    clean = draw(st.booleans())
    client_id = draw(st.text(alphabet=_chars, min_size=0 if clean else 1, max_size=23))
    username = draw(st.none() | st.text(alphabet=_chars, max_size=40))
    password = draw(st.none() | st.binary(max_size=40)) if username is not None else None
    will = draw(st.none() | st.builds(Will, topic_names, payloads, qos_levels, st.booleans()))
    level = 3 if client_id and draw(st.booleans()) else 4
    keepalive = draw(st.integers(0, 0xFFFF))
    return Connect(client_id, username, password, keepalive, clean, will, level)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(qos_levels)
    packet_id = draw(packet_ids) if qos else None
    dup = draw(st.booleans()) if qos else False
    return Publish(draw(topic_names), draw(payloads), qos, draw(st.booleans()), dup, packet_id)


connacks = st.one_of(
    st.builds(Connack, st.booleans(), st.just(0)),
    st.builds(Connack, st.just(False), st.integers(1, 5)),
)

packets_strategy: st.SearchStrategy[Packet] = st.one_of(
    connects(),
    connacks,
    publishes(),
    st.builds(Puback, packet_ids),
    st.builds(Pubrec, packet_ids),
    st.builds(Pubrel, packet_ids),
    st.builds(Pubcomp, packet_ids),
    st.builds(
        Subscribe,
        packet_ids,
        st.lists(st.tuples(topic_filters(), qos_levels), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(
        Suback,
        packet_ids,
        st.lists(st.sampled_from((0, 1, 2, SUBACK_FAILURE)), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(
        Unsubscribe, packet_ids, st.lists(topic_filters(), min_size=1, max_size=5).map(tuple)
    ),
    st.builds(Unsuback, packet_ids),
    st.just(Pingreq()),
    st.just(Pingresp()),
    st.just(Disconnect()),
)


# --- The property -------------------------------------------------------------------------------


def _decode_or_error(data: bytes) -> tuple[Packet, int] | RemoteProtocolError | None:
    try:
        return decode(data)
    except RemoteProtocolError as exc:
        return exc


def check_decode(data: bytes) -> None:
    """decode() returns None or a packet it can encode again, or raises RemoteProtocolError.

    Whatever follows a complete packet (or a malformed one) must not change the outcome: the
    codec never reads past the remaining length.
    """
    result = _decode_or_error(data)
    if isinstance(result, RemoteProtocolError):
        assert result.reason
        assert result.connack_code in (None, 1, 2)
        followed = _decode_or_error(data + b"\x00\xff\x80")
        assert isinstance(followed, RemoteProtocolError)
        assert followed.reason == result.reason
        return
    if result is None:
        return
    assert _decode_or_error(data + b"\x00\xff\x80") == result
    packet, size = result
    assert 2 <= size <= len(data)
    again = encode(packet)  # a decoded packet is always valid enough to send
    assert decode(again) == (packet, len(again))


def check_stream(data: bytes, chunk: int) -> None:
    """The incremental decoder agrees with the property, however the bytes are split."""
    decoder = Decoder()
    try:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start : start + chunk])
            for packet in decoder:
                encode(packet)
    except RemoteProtocolError:
        pass


def check_server(data: bytes, chunk: int) -> None:
    """A server session turns any bytes into events, never into an exception."""
    server = ServerSession()
    for start in range(0, len(data), chunk):
        server.receive_data(data[start : start + chunk], float(start))
        while (event := server.next_event()) is not None:
            if isinstance(event, ProtocolViolation):
                assert server.state is ServerState.CLOSED
        if server.state is ServerState.AWAIT_ACCEPT:
            server.accept()
        server.data_to_send()


def check_client(data: bytes, chunk: int) -> None:
    """A client session turns any bytes from its server into events, never an exception."""
    client = ClientSession()
    client.connect("fuzz")
    client.subscribe([("a/#", 1)])
    client.publish("a", b"x", 1)
    for start in range(0, len(data), chunk):
        client.receive_data(data[start : start + chunk])
        while (event := client.next_event()) is not None:
            if isinstance(event, ProtocolViolation):
                assert client.state is ClientState.CLOSED
        client.data_to_send()


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check_decode(data)
    check_stream(data, 7)
    check_server(data, 5)
    check_client(encode(Connack(False, 0)) + data, 5)


@FUZZ
@given(st.integers(0, 15), st.integers(0, 15), st.binary(max_size=60))
def test_random_bodies_behind_every_header(packet_type: int, flags: int, body: bytes) -> None:
    # Random bytes rarely form a plausible fixed header; make every type/flags pair likely.
    data = bytes(((packet_type << 4) | flags, len(body))) + body
    check_decode(data)
    check_server(encode(Connect("fuzz")) + data, 3)


@FUZZ
@given(packets_strategy)
def test_round_trip(packet: Packet) -> None:
    data = encode(packet)
    assert decode(data) == (packet, len(data))
    assert encode(packet) == data
    for size in range(len(data)):
        assert decode(data[:size]) is None


@FUZZ
@given(packets_strategy, st.data())
def test_bit_flips(packet: Packet, data: st.DataObject) -> None:
    raw = bytearray(encode(packet))
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= 1 << data.draw(st.integers(0, 7))
    check_decode(bytes(raw))
    check_stream(bytes(raw), 2)


@FUZZ
@given(packets_strategy, st.data())
def test_truncations_and_insertions(packet: Packet, data: st.DataObject) -> None:
    raw = encode(packet)
    cut = data.draw(st.integers(0, len(raw)))
    check_decode(raw[:cut])
    check_decode(raw[:cut] + raw[cut + 1 :])  # one byte dropped
    extra = data.draw(st.binary(min_size=1, max_size=3))
    check_decode(raw[:cut] + extra + raw[cut:])  # bytes inserted


@FUZZ
@given(packets_strategy, st.data())
def test_length_field_edits(packet: Packet, data: st.DataObject) -> None:
    raw = encode(packet)
    body_start = 2
    while raw[body_start - 1] & 0x80:
        body_start += 1
    body = raw[body_start:]
    # Short lengths often cut a packet just where one of its fields ends.
    new_length = data.draw(st.integers(0, min(len(body), 12)) | st.integers(0, len(body) + 4))
    length_bytes = bytearray()
    value = new_length
    while True:
        byte, value = value & 0x7F, value >> 7
        length_bytes.append(byte | (0x80 if value else 0))
        if not value:
            break
    check_decode(raw[:1] + bytes(length_bytes) + body)
    # And an inner 2-byte length (topic, string or packet id) set to a random value.
    if len(body) >= 2:
        at = data.draw(st.integers(0, len(body) - 2))
        inner = data.draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        check_decode(raw[:body_start] + body[:at] + inner + body[at + 2 :])


@FUZZ
@given(st.lists(packets_strategy, min_size=1, max_size=6), st.integers(1, 9), st.data())
def test_mutated_streams_into_a_server(packets: list[Packet], chunk: int, d: st.DataObject) -> None:
    stream = bytearray(encode(Connect("fuzz")) + b"".join(encode(p) for p in packets))
    index = d.draw(st.integers(0, len(stream) - 1))
    stream[index] = d.draw(st.integers(0, 255))
    check_server(bytes(stream), chunk)
    check_stream(bytes(stream), chunk)
    from_server = encode(Connack(False, 0)) + bytes(stream[len(encode(Connect("fuzz"))) :])
    check_client(from_server, chunk)
