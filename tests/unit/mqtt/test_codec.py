"""Codec: a round trip per packet type, every truncated prefix, and a table of malformed bytes."""

from __future__ import annotations

import re
import struct

import pytest

from thinghub.mqtt import (
    MAX_CLIENT_ID_BYTES,
    MAX_PACKET_BYTES,
    MAX_SUBSCRIPTIONS_PER_PACKET,
    MAX_TOPIC_BYTES,
    SUBACK_FAILURE,
    Connack,
    ConnackCode,
    Connect,
    Decoder,
    Disconnect,
    LocalProtocolError,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    RemoteProtocolError,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
    decode,
    encode,
)

AZURE_USERNAME = "localhost/thermo-1/?api-version=2020-09-30&model-id=dtmi%3Acom%3Aexample%3B1"
AZURE_PASSWORD = b"SharedAccessSignature sr=localhost%2Fdevices%2Fthermo-1&sig=abc%3D&se=1700000000"

PACKETS: list[Packet] = [
    Connect("thermo-1"),
    Connect("", keepalive_s=0),
    Connect("thermo-1", AZURE_USERNAME, AZURE_PASSWORD, 60, False),
    Connect("thermo-1", AZURE_USERNAME, None, 1740, False),
    Connect("x", "u", b"", 65535, True, Will("last/will", b"gone", 2, True)),
    Connect("x", None, None, 10, True, Will("w", b"", 0, False)),
    Connect("legacy", None, None, 30, True, None, 3),
    Connack(False, 0),
    Connack(True, 0),
    Connack(False, ConnackCode.NOT_AUTHORIZED),
    Publish("devices/thermo-1/messages/events/", b'{"temperature": 44}', 1, False, False, 1),
    Publish("a", b""),
    Publish("a/b", b"x", 0, True),
    Publish("a/b", b"\x00\xff" * 100, 2, True, True, 65535),
    Publish("ünï/主题", b"y" * 20_000, 1, False, True, 300),
    Puback(1),
    Pubrec(2),
    Pubrel(3),
    Pubcomp(65535),
    Subscribe(7, (("devices/thermo-1/messages/devicebound/#", 1),)),
    Subscribe(8, (("#", 0), ("+/x/+", 1), ("$iothub/twin/res/#", 2))),
    Suback(7, (1,)),
    Suback(8, (0, 1, 2, SUBACK_FAILURE)),
    Unsubscribe(9, ("a/#",)),
    Unsubscribe(10, ("a", "b/+")),
    Unsuback(9),
    Pingreq(),
    Pingresp(),
    Disconnect(),
]


def _ids(packet: Packet) -> str:
    return type(packet).__name__


@pytest.mark.parametrize("packet", PACKETS, ids=_ids)
def test_round_trip(packet: Packet) -> None:
    data = encode(packet)
    assert decode(data) == (packet, len(data))
    assert decode(bytearray(data)) == (packet, len(data))
    assert decode(memoryview(data)) == (packet, len(data))
    # Whatever follows the packet is left alone.
    assert decode(data + b"\xc0\x00garbage") == (packet, len(data))


@pytest.mark.parametrize("packet", PACKETS, ids=_ids)
def test_every_truncated_prefix_needs_more(packet: Packet) -> None:
    data = encode(packet)
    for size in range(len(data)):
        assert decode(data[:size]) is None, size


def test_every_packet_type_is_covered() -> None:
    assert {type(p) for p in PACKETS} == {
        Connect,
        Connack,
        Publish,
        Puback,
        Pubrec,
        Pubrel,
        Pubcomp,
        Subscribe,
        Suback,
        Unsubscribe,
        Unsuback,
        Pingreq,
        Pingresp,
        Disconnect,
    }


KNOWN_BYTES: list[tuple[Packet, bytes]] = [
    # The Azure SDK's CONNECT flags byte is 0xC0: username, password, clean session 0 (spec §1.1).
    (
        Connect("d", "u", b"p", 60, False),
        b"\x10\x13\x00\x04MQTT\x04\xc0\x00\x3c\x00\x01d\x00\x01u\x00\x01p",
    ),
    (Connect("d", "u", None, 60, False), b"\x10\x10\x00\x04MQTT\x04\x80\x00\x3c\x00\x01d\x00\x01u"),
    (
        Connect("c", None, None, 0, True, None, 3),
        b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x00\x00\x01c",
    ),
    (Connack(True, 0), b"\x20\x02\x01\x00"),
    (Publish("a/b", b"hi", 1, True, True, 10), b"\x3b\x09\x00\x03a/b\x00\x0ahi"),
    (Publish("t", b"x" * 200), b"\x30\xcb\x01\x00\x01t" + b"x" * 200),
    (Pubrel(1), b"\x62\x02\x00\x01"),
    (Subscribe(1, (("a", 1),)), b"\x82\x06\x00\x01\x00\x01a\x01"),
    (Suback(1, (0x80,)), b"\x90\x03\x00\x01\x80"),
    (Unsubscribe(1, ("a",)), b"\xa2\x05\x00\x01\x00\x01a"),
    (Disconnect(), b"\xe0\x00"),
]


@pytest.mark.parametrize(("packet", "data"), KNOWN_BYTES, ids=[_ids(p) for p, _ in KNOWN_BYTES])
def test_known_wire_bytes(packet: Packet, data: bytes) -> None:
    assert encode(packet) == data
    assert decode(data) == (packet, len(data))


@pytest.mark.parametrize(
    ("body_size", "header"),
    [
        (3, b"\x30\x03"),
        (127, b"\x30\x7f"),
        (128, b"\x30\x80\x01"),
        (16_383, b"\x30\xff\x7f"),
        (16_384, b"\x30\x80\x80\x01"),
    ],
)
def test_remaining_length_boundaries(body_size: int, header: bytes) -> None:
    packet = Publish("t", b"p" * (body_size - 3))  # 2-byte length + 1-byte topic
    data = encode(packet)
    assert data.startswith(header)
    assert len(data) == len(header) + body_size
    assert decode(data) == (packet, len(data))


def test_remaining_length_of_three_and_four_bytes() -> None:
    big = Publish("t", b"p" * 2_097_152)
    data = encode(big)
    assert data[1:5] == b"\x83\x80\x80\x01"  # 2_097_155 needs 4 bytes (§2.2.3)
    assert decode(data, max_packet_bytes=len(data)) == (big, len(data))


def test_non_minimal_remaining_length_is_accepted() -> None:
    # §2.2.3 of 3.1.1 does not forbid it (MQTT 5 does); be liberal in what we accept.
    assert decode(b"\xc0\x80\x00") == (Pingreq(), 3)


def _connect_bytes(
    *,
    name: bytes = b"MQTT",
    level: int = 4,
    flags: int = 0x02,
    keepalive: int = 60,
    payload: bytes = b"\x00\x02id",
) -> bytes:
    body = (
        struct.pack(">H", len(name)) + name + bytes((level, flags)) + struct.pack(">H", keepalive)
    )
    body += payload
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


def _s(text: bytes) -> bytes:
    return struct.pack(">H", len(text)) + text


MALFORMED: list[tuple[str, bytes, str, int | None]] = [
    # Fixed header (§2.2).
    ("type 0", b"\x00\x00", "reserved packet type", None),
    ("type 15", b"\xf0\x00", "reserved packet type", None),
    ("PINGREQ flags", b"\xc1\x00", "§2.2.2", None),
    ("CONNECT flags", b"\x18\x00", "§2.2.2", None),
    ("PUBREL flags 0", b"\x60\x02\x00\x01", "§2.2.2", None),
    ("SUBSCRIBE flags 0", b"\x80\x06\x00\x01\x00\x01a\x00", "§2.2.2", None),
    ("UNSUBSCRIBE flags 0", b"\xa0\x05\x00\x01\x00\x01a", "§2.2.2", None),
    ("remaining length 5 bytes", b"\xc0\xff\xff\xff\xff\x01", "longer than 4 bytes", None),
    ("remaining length 4 bytes, more", b"\x30\x80\x80\x80\x80", "longer than 4 bytes", None),
    # PUBLISH (§3.3).
    ("PUBLISH QoS 3", b"\x36\x05\x00\x01a\x00\x01", "QoS 3", None),
    ("PUBLISH DUP on QoS 0", b"\x38\x03\x00\x01a", "DUP", None),
    ("PUBLISH '#' topic", b"\x30\x03\x00\x01#", "wildcard", None),
    ("PUBLISH '+' topic", b"\x30\x05\x00\x03a/+", "wildcard", None),
    ("PUBLISH empty topic", b"\x30\x02\x00\x00", "empty", None),
    ("PUBLISH no topic length", b"\x30\x01\x00", "past the end", None),
    ("PUBLISH topic past end", b"\x30\x03\x00\x05a", "past the end", None),
    ("PUBLISH invalid UTF-8", b"\x30\x03\x00\x01\xff", "UTF-8", None),
    ("PUBLISH overlong UTF-8", b"\x30\x04\x00\x02\xc0\xaf", "UTF-8", None),
    ("PUBLISH surrogate", b"\x30\x05\x00\x03\xed\xa0\x80", "UTF-8", None),
    ("PUBLISH U+0000", b"\x30\x05\x00\x03a\x00b", "U+0000", None),
    ("PUBLISH packet id 0", b"\x32\x05\x00\x01a\x00\x00", "packet id 0", None),
    ("PUBLISH half a packet id", b"\x32\x04\x00\x01a\x00", "past the end", None),
    ("PUBLISH no packet id", b"\x32\x03\x00\x01a", "past the end", None),
    # Acknowledgements (§3.4 - §3.7, §3.11).
    ("PUBACK packet id 0", b"\x40\x02\x00\x00", "packet id 0", None),
    ("PUBACK short", b"\x40\x01\x00", "must be 2", None),
    ("PUBACK trailing byte", b"\x40\x03\x00\x01\x00", "must be 2", None),
    ("PUBREC packet id 0", b"\x50\x02\x00\x00", "packet id 0", None),
    ("PUBCOMP long", b"\x70\x04\x00\x01\x00\x01", "must be 2", None),
    ("UNSUBACK packet id 0", b"\xb0\x02\x00\x00", "packet id 0", None),
    # Empty packets (§3.12 - §3.14).
    ("PINGREQ with body", b"\xc0\x01\x00", "must be 0", None),
    ("PINGRESP with body", b"\xd0\x01\x00", "must be 0", None),
    ("DISCONNECT with body", b"\xe0\x02\x00\x00", "must be 0", None),
    # CONNACK (§3.2).
    ("CONNACK reserved flags", b"\x20\x02\x02\x00", "§3.2.2.1", None),
    ("CONNACK reserved code", b"\x20\x02\x00\x06", "reserved return code", None),
    ("CONNACK present + refused", b"\x20\x02\x01\x05", "§3.2.2-4", None),
    ("CONNACK short", b"\x20\x01\x00", "must be 2", None),
    # SUBSCRIBE / SUBACK / UNSUBSCRIBE (§3.8 - §3.10).
    ("SUBSCRIBE no filters", b"\x82\x02\x00\x01", "§3.8.3-3", None),
    ("SUBSCRIBE packet id 0", b"\x82\x06\x00\x00\x00\x01a\x00", "packet id 0", None),
    ("SUBSCRIBE QoS 3", b"\x82\x06\x00\x01\x00\x01a\x03", "§3.8.3-4", None),
    ("SUBSCRIBE reserved bits", b"\x82\x06\x00\x01\x00\x01a\x41", "§3.8.3-4", None),
    ("SUBSCRIBE no QoS byte", b"\x82\x05\x00\x01\x00\x01a", "past the end", None),
    ("SUBSCRIBE bad '#'", b"\x82\x07\x00\x01\x00\x02a#\x00", "§4.7.1-2", None),
    ("SUBSCRIBE bad '+'", b"\x82\x07\x00\x01\x00\x02a+\x00", "§4.7.1-3", None),
    ("SUBSCRIBE empty filter", b"\x82\x05\x00\x01\x00\x00\x00", "empty", None),
    ("SUBACK reserved code", b"\x90\x03\x00\x01\x03", "§3.9.3-2", None),
    ("SUBACK no codes", b"\x90\x02\x00\x01", "without return codes", None),
    ("UNSUBSCRIBE no filters", b"\xa2\x02\x00\x01", "§3.10.3-2", None),
    ("UNSUBSCRIBE bad filter", b"\xa2\x05\x00\x01\x00\x01\x00", "U+0000", None),
    # CONNECT (§3.1): protocol version answers CONNACK 1 (§3.1.2-2).
    ("CONNECT MQTT 5", _connect_bytes(level=5), "§3.1.2-2", 1),
    ("CONNECT MQTT level 3", _connect_bytes(level=3), "§3.1.2-2", 1),
    ("CONNECT MQIsdp level 4", _connect_bytes(name=b"MQIsdp", level=4), "§3.1.2-2", 1),
    ("CONNECT unknown protocol", _connect_bytes(name=b"MQTX"), "§3.1.2-1", None),
    ("CONNECT protocol not UTF-8", _connect_bytes(name=b"MQ\xff"), "UTF-8", None),
    ("CONNECT reserved flag", _connect_bytes(flags=0x03), "§3.1.2-3", None),
    ("CONNECT reserved flag only", _connect_bytes(flags=0x01), "§3.1.2-3", None),
    (
        "CONNECT reserved flag, SDK's other flags",  # what the Azure SDK sends, plus bit 0
        _connect_bytes(flags=0xC1, payload=_s(b"id") + _s(b"u") + _s(b"p")),
        "§3.1.2-3",
        None,
    ),
    (
        "CONNECT 3.1 reserved flag",
        _connect_bytes(name=b"MQIsdp", level=3, flags=0x03),
        "§3.1.2-3",
        None,
    ),
    ("CONNECT password only", _connect_bytes(flags=0x42), "§3.1.2-22", None),
    ("CONNECT will QoS 3", _connect_bytes(flags=0x1E), "§3.1.2-14", None),
    ("CONNECT will QoS, no will", _connect_bytes(flags=0x0A), "§3.1.2-13", None),
    ("CONNECT will retain, no will", _connect_bytes(flags=0x22), "§3.1.2-13", None),
    ("CONNECT truncated header", b"\x10\x07\x00\x04MQTT\x04", "past the end", None),
    ("CONNECT no keep alive", b"\x10\x08\x00\x04MQTT\x04\x02", "past the end", None),
    ("CONNECT no client id", _connect_bytes(payload=b""), "past the end", None),
    ("CONNECT client id past end", _connect_bytes(payload=b"\x00\x05ab"), "past the end", None),
    ("CONNECT client id not UTF-8", _connect_bytes(payload=_s(b"\xfe")), "UTF-8", None),
    ("CONNECT client id U+0000", _connect_bytes(payload=_s(b"a\x00")), "U+0000", None),
    ("CONNECT trailing bytes", _connect_bytes(payload=_s(b"id") + b"\x00"), "trailing", None),
    ("CONNECT username missing", _connect_bytes(flags=0x82), "past the end", None),
    (
        "CONNECT password missing",
        _connect_bytes(flags=0xC2, payload=_s(b"id") + _s(b"u")),
        "past the end",
        None,
    ),
    ("CONNECT will missing", _connect_bytes(flags=0x06), "past the end", None),
    (
        "CONNECT will topic wildcard",
        _connect_bytes(flags=0x06, payload=_s(b"id") + _s(b"a/#") + _s(b"m")),
        "wildcard",
        None,
    ),
    # Client id policy answers CONNACK 2 (§3.1.3-8, §3.1.3-9).
    ("CONNECT empty id, persistent", _connect_bytes(flags=0x00, payload=_s(b"")), "§3.1.3-8", 2),
    (
        "CONNECT empty id, MQIsdp",
        _connect_bytes(name=b"MQIsdp", level=3, payload=_s(b"")),
        "§3.1.3-8",
        2,
    ),
]


@pytest.mark.parametrize(
    ("data", "reason", "connack_code"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed(data: bytes, reason: str, connack_code: int | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert reason in info.value.reason
    assert info.value.connack_code == connack_code
    # The incremental decoder reports the same error, however the bytes are split.
    with pytest.raises(RemoteProtocolError) as split:
        _decode_byte_by_byte(data)
    assert split.value.reason == info.value.reason


def _decode_byte_by_byte(data: bytes) -> list[Packet]:
    decoder = Decoder()
    out: list[Packet] = []
    for byte in data:
        decoder.feed(bytes((byte,)))
        out.extend(decoder)
    return out


def test_malformed_table_has_unique_names() -> None:
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


def test_client_id_limit() -> None:
    at_limit = Connect("d" * MAX_CLIENT_ID_BYTES)
    assert decode(encode(at_limit)) is not None
    too_long = encode(Connect("d" * (MAX_CLIENT_ID_BYTES + 1)))
    with pytest.raises(RemoteProtocolError) as info:
        decode(too_long)
    assert info.value.connack_code == ConnackCode.IDENTIFIER_REJECTED
    assert "MAX_CLIENT_ID_BYTES" in info.value.reason


def test_empty_client_id_with_clean_session_is_allowed() -> None:
    # §3.1.3-6: the server assigns an id; that is the adapter's job.
    data = encode(Connect("", clean_session=True))
    assert decode(data) == (Connect(""), len(data))


def test_malformed_connect_is_closed_not_answered_even_with_a_bad_id() -> None:
    # A structurally broken CONNECT is closed without CONNACK, even if its id is also bad.
    data = _connect_bytes(flags=0x00, payload=_s(b"") + b"\x00")
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.connack_code is None


def test_topic_limit() -> None:
    at_limit = Publish("t" * MAX_TOPIC_BYTES, b"")
    assert decode(encode(at_limit)) is not None
    with pytest.raises(RemoteProtocolError, match="MAX_TOPIC_BYTES"):
        decode(encode(Publish("t" * (MAX_TOPIC_BYTES + 1), b"")))
    with pytest.raises(RemoteProtocolError, match="MAX_TOPIC_BYTES"):
        decode(encode(Subscribe(1, (("t" * (MAX_TOPIC_BYTES + 1), 0),))))


def test_subscription_count_limit() -> None:
    filters = tuple((f"t/{i}", 1) for i in range(MAX_SUBSCRIPTIONS_PER_PACKET))
    assert decode(encode(Subscribe(1, filters))) is not None
    with pytest.raises(RemoteProtocolError, match="MAX_SUBSCRIPTIONS_PER_PACKET"):
        decode(encode(Subscribe(1, (*filters, ("x", 0)))))
    names = tuple(f for f, _ in filters)
    with pytest.raises(RemoteProtocolError, match="MAX_SUBSCRIPTIONS_PER_PACKET"):
        decode(encode(Unsubscribe(1, (*names, "x"))))


def test_packet_size_limit_is_checked_from_the_header_alone() -> None:
    payload_limit = MAX_PACKET_BYTES - 1 - 3 - 3 - 2  # type byte, length field, topic, packet id
    fits = encode(Publish("t", b"x" * payload_limit, 1, packet_id=1))
    assert len(fits) == MAX_PACKET_BYTES
    assert decode(fits) is not None
    too_big = encode(Publish("t", b"x" * (payload_limit + 1), 1, packet_id=1))
    with pytest.raises(RemoteProtocolError, match="limit") as info:
        decode(too_big[:4])  # only the fixed header has arrived
    assert info.value.connack_code is None
    with pytest.raises(RemoteProtocolError):
        decode(b"\x30\xff\xff\xff\x7f")  # the protocol maximum, 256 MiB
    assert decode(too_big[:4], max_packet_bytes=len(too_big)) is None


def test_telemetry_at_the_azure_sdk_limit_fits() -> None:
    # The SDK refuses bodies over 256 KiB; a maximal one with a long property bag must pass.
    topic = "devices/thermo-1/messages/events/" + "k=v&" * 100
    data = encode(Publish(topic, b"x" * 262_144, 1, packet_id=1))
    assert decode(data) is not None


class TestDecoder:
    def test_byte_by_byte(self) -> None:
        stream = b"".join(encode(p) for p in PACKETS)
        decoder = Decoder()
        out: list[Packet] = []
        for byte in stream:
            decoder.feed(bytes((byte,)))
            out.extend(decoder)
        assert out == PACKETS
        assert decoder.buffered_bytes == 0
        assert decoder.next_packet() is None

    def test_one_chunk(self) -> None:
        stream = b"".join(encode(p) for p in PACKETS)
        decoder = Decoder()
        decoder.feed(bytearray(stream + b"\x30"))
        assert list(decoder) == PACKETS
        assert decoder.buffered_bytes == 1

    def test_many_small_packets_in_one_chunk(self) -> None:
        one = encode(Publish("devices/d/messages/events/", b"{}", 1, packet_id=5))
        decoder = Decoder()
        decoder.feed(memoryview(one * 10_000))
        assert sum(1 for _ in decoder) == 10_000

    def test_error_is_sticky(self) -> None:
        decoder = Decoder()
        decoder.feed(encode(Pingreq()) + b"\x00\x00")
        assert decoder.next_packet() == Pingreq()
        with pytest.raises(RemoteProtocolError) as first:
            decoder.next_packet()
        decoder.feed(encode(Pingreq()))
        with pytest.raises(RemoteProtocolError) as again:
            decoder.next_packet()
        assert again.value is first.value

    def test_own_limit(self) -> None:
        decoder = Decoder(max_packet_bytes=10)
        decoder.feed(encode(Publish("t", b"123456")))
        with pytest.raises(RemoteProtocolError, match="10-byte limit"):
            decoder.next_packet()


ENCODE_ERRORS: list[tuple[Packet, str]] = [
    (Publish("a", b"", 3, packet_id=1), "QoS"),
    (Publish("a", b"", 1), "packet id"),
    (Publish("a", b"", 1, packet_id=0), "packet id"),
    (Publish("a", b"", 1, packet_id=65536), "packet id"),
    (Publish("a", b"", 0, packet_id=1), "QoS 0"),
    (Publish("a", b"", 0, dup=True), "QoS 0"),
    (Publish("a/#", b""), "topic"),
    (Publish("", b""), "topic"),
    (Publish("a\x00", b""), "topic"),
    (Publish("\ud800", b""), "surrogate"),
    (Connect("", clean_session=False), "clean_session"),
    (Connect("x", None, b"pw"), "username"),
    (Connect("x", keepalive_s=65536), "keep alive"),
    (Connect("x", protocol_level=5), "protocol level"),
    (Connect("x", will=Will("a/+", b"")), "will topic"),
    (Connect("x", will=Will("a", b"", 3)), "will QoS"),
    (Connect("x\x00"), "U+0000"),
    (Connack(True, 1), "session present"),
    (Connack(False, 6), "reserved"),
    (Puback(0), "packet id"),
    (Subscribe(1, ()), "at least one"),
    (Subscribe(1, (("a", 3),)), "QoS"),
    (Subscribe(1, (("a#", 0),)), "'#'"),
    (Suback(1, ()), "at least one"),
    (Suback(1, (3,)), "0x80"),
    (Unsubscribe(1, ()), "at least one"),
    (Unsubscribe(1, ("",)), "empty"),
]


@pytest.mark.parametrize(
    ("packet", "message"), ENCODE_ERRORS, ids=[repr(p) for p, _ in ENCODE_ERRORS]
)
def test_encode_refuses_invalid_packets(packet: Packet, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        encode(packet)


def test_encode_refuses_non_packets() -> None:
    with pytest.raises(TypeError):
        encode("PINGREQ")  # type: ignore[arg-type]


def test_protocol_error_fields() -> None:
    error = RemoteProtocolError("bad", 2)
    assert (error.reason, error.connack_code, str(error)) == ("bad", 2, "bad")
    assert "connack_code=2" in repr(error)


def test_decoded_publish_sets_every_field() -> None:
    """The decoder builds Publish through its slots (no frozen __init__): every field of the
    class must be in the list it sets, and the result equals the dataclass's own."""
    from dataclasses import fields

    from thinghub.mqtt.codec import _PUBLISH_FIELDS

    assert tuple(f.name for f in fields(Publish)) == _PUBLISH_FIELDS
    for publish in (
        Publish("a/b", b"{}", 1, True, True, 7),
        Publish("devices/d/messages/events/", b"x", 0, False, False, None),
    ):
        decoded = decode(encode(publish))
        assert decoded is not None
        assert decoded[0] == publish
        assert hash(decoded[0]) == hash(publish)
        assert repr(decoded[0]) == repr(publish)
