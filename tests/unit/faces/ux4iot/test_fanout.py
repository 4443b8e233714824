"""Fan-out planning (faces/ux4iot/fanout.py): one event, the payloads and who gets each."""

from __future__ import annotations

import itertools

from thinghub.faces.ux4iot.fanout import (
    ConnectionChanged,
    Emit,
    MessageArrived,
    TwinChanged,
    plan,
)
from thinghub.faces.ux4iot.grants import Grant, GrantType, Subscription, SubscriptionType
from thinghub.faces.ux4iot.grants import WireProtocol as P
from thinghub.faces.ux4iot.payloads import iso_ms, twin_document
from thinghub.faces.ux4iot.sessions import SessionTable

TS = 1_714_564_800.5
ISO = iso_ms(TS)
TEL = SubscriptionType.TELEMETRY


def setup() -> tuple[SessionTable, list[str]]:
    counter = itertools.count()
    t = SessionTable(new_id=lambda: f"s{next(counter)}")
    ids = [t.create(TS).id for _ in range(4)]
    return t, ids


def as_map(emits: list[Emit]) -> dict[frozenset[str], dict[str, object]]:
    return {frozenset(e.session_ids): e.payload for e in emits}


def test_nobody_watching_means_nothing_to_send() -> None:
    t, _ = setup()
    assert plan(t, MessageArrived("a", "d", TS, {"temp": 1})) == []
    assert plan(t, ConnectionChanged("a", "d", TS, True)) == []
    assert plan(t, TwinChanged("a", "d", TS, twin_document(1, {}, {}))) == []


def test_telemetry_goes_per_key_group_and_d2c_gets_the_whole_body() -> None:
    t, (s0, s1, s2, s3) = setup()
    for sid in (s0, s1, s2):
        t.grant(sid, "a", Grant("d", GrantType.TELEMETRY), TS)
    t.subscribe(s0, Subscription("d", TEL, "temp"), TS)
    t.subscribe(s1, Subscription("d", TEL, "hum"), TS)
    t.subscribe(s2, Subscription("d", TEL), TS)
    t.grant(s3, "a", Grant("d", GrantType.D2C_MESSAGES), TS)
    t.subscribe(s3, Subscription("d", SubscriptionType.D2C_MESSAGES), TS)
    body = {"temp": 21.5, "hum": 40, "co2": 400}
    assert as_map(plan(t, MessageArrived("a", "d", TS, body))) == {
        frozenset({s0}): {"deviceId": "d", "timestamp": ISO, "telemetry": {"temp": 21.5}},
        frozenset({s1}): {"deviceId": "d", "timestamp": ISO, "telemetry": {"hum": 40}},
        frozenset({s2}): {"deviceId": "d", "timestamp": ISO, "telemetry": body},
        frozenset({s3}): {"deviceId": "d", "timestamp": ISO, "message": body},
    }
    # A message without any subscribed key reaches only the all-keys and d2c watchers.
    assert set(as_map(plan(t, MessageArrived("a", "d", TS, {"co2": 1})))) == {
        frozenset({s2}),
        frozenset({s3}),
    }
    # Text bodies have no keys; d2c still carries them. Undecodable bodies go nowhere.
    assert as_map(plan(t, MessageArrived("a", "d", TS, "hello"))) == {
        frozenset({s3}): {"deviceId": "d", "timestamp": ISO, "message": "hello"}
    }
    assert plan(t, MessageArrived("a", "d", TS, None)) == []
    # Same device id in another account: nobody.
    assert plan(t, MessageArrived("b", "d", TS, body)) == []


def test_connection_state_shape_follows_each_sessions_protocol() -> None:
    t, (s0, s1, _, _) = setup()
    t.grant(s0, "a", Grant("d", GrantType.CONNECTION_STATE), TS)
    t.subscribe(s0, Subscription("d", SubscriptionType.CONNECTION_STATE), TS)
    t.grant(s1, "a", Grant("d", GrantType.CONNECTION_STATE), TS, P.V2)
    assert as_map(plan(t, ConnectionChanged("a", "d", TS, False))) == {
        frozenset({s0}): {"deviceId": "d", "timestamp": ISO, "connectionState": False},
        frozenset({s1}): {
            "deviceId": "d",
            "timestamp": ISO,
            "connectionState": {"connected": False},
        },
    }


def test_twin_changes_go_out_once_to_v2_and_v4_alike() -> None:
    t, (s0, s1, _, _) = setup()
    t.grant(s0, "a", Grant("d", GrantType.DEVICE_TWIN), TS)
    t.subscribe(s0, Subscription("d", SubscriptionType.DEVICE_TWIN), TS)
    t.grant(s1, "a", Grant("d", GrantType.DEVICE_TWIN), TS, P.V2)
    twin = twin_document(4, {"fw": "2"}, {"fan": 1})
    (emit,) = plan(t, TwinChanged("a", "d", TS, twin))
    assert set(emit.session_ids) == {s0, s1}
    assert emit.payload == {"deviceId": "d", "timestamp": ISO, "deviceTwin": twin}


def test_a_revoked_grant_stops_the_next_event() -> None:
    t, (s0, _, _, _) = setup()
    t.grant(s0, "a", Grant("d", GrantType.TELEMETRY, "temp"), TS)
    t.subscribe(s0, Subscription("d", TEL, "temp"), TS)
    assert len(plan(t, MessageArrived("a", "d", TS, {"temp": 1}))) == 1
    t.revoke(s0, "a", Grant("d", GrantType.TELEMETRY, "temp"), TS)
    assert plan(t, MessageArrived("a", "d", TS, {"temp": 2})) == []
