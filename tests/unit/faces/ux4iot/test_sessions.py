"""The session table (faces/ux4iot/sessions.py): lifecycle, grants, subscriptions, the index."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from thinghub.domain.errors import Forbidden, NotFound, RateLimited
from thinghub.faces.ux4iot.grants import (
    Grant,
    GrantType,
    Subscription,
    SubscriptionType,
    WireProtocol,
)
from thinghub.faces.ux4iot.sessions import SESSION_IDLE_S, Audience, SessionTable

TEL = SubscriptionType.TELEMETRY
CONN = SubscriptionType.CONNECTION_STATE
TWIN = SubscriptionType.DEVICE_TWIN
D2C = SubscriptionType.D2C_MESSAGES
V2, V4 = WireProtocol.V2, WireProtocol.V4
T0 = 1_000_000.0


def tel(device: str, key: str | None = None) -> Subscription:
    return Subscription(device, TEL, key)


def tel_grant(device: str, key: str | None = None) -> Grant:
    return Grant(device, GrantType.TELEMETRY, key)


def table(**kwargs: Any) -> SessionTable:
    counter = itertools.count()
    return SessionTable(new_id=lambda: f"s{next(counter)}", **kwargs)


def groups(result: tuple[Audience, ...]) -> dict[tuple[WireProtocol, Any], set[str]]:
    return {(a.protocol, a.telemetry_keys): set(a.session_ids) for a in result}


# -- lifecycle ---------------------------------------------------------------------------------


def test_sessions_are_opaque_uuids_by_default() -> None:
    ids = {SessionTable().create(T0).id for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


def test_a_new_session_is_unbound_v4_and_empty() -> None:
    t = table()
    info = t.create(T0)
    assert (info.account_id, info.protocol, info.grants, info.subscriptions) == (None, V4, 0, 0)
    assert t.get(info.id, T0) == info
    assert t.get("nope", T0) is None


def test_an_idle_session_is_gone_at_once_and_swept_later() -> None:
    t = table(idle_s=60)
    a, b = t.create(T0).id, t.create(T0).id
    assert t.touch(b, T0 + 50)
    assert t.get(a, T0 + 60) is not None  # exactly idle_s is still alive
    assert t.get(a, T0 + 61) is None  # lazily dropped
    assert len(t) == 1
    assert t.expire(T0 + 50 + 61) == [b]
    assert len(t) == 0


def test_a_connected_socket_keeps_a_session_alive() -> None:
    t = table(idle_s=60)
    sid = t.create(T0).id
    assert t.attach(sid, T0 + 10) is not None
    assert t.expire(T0 + 10_000) == []
    t.detach(sid, T0 + 10_000)
    assert t.get(sid, T0 + 10_050) is not None
    assert t.expire(T0 + 10_061) == [sid]


def test_two_sockets_keep_it_until_the_last_one_leaves() -> None:
    t = table(idle_s=60)
    sid = t.create(T0).id
    t.attach(sid, T0)
    t.attach(sid, T0)
    t.detach(sid, T0 + 100)
    assert t.expire(T0 + 1000) == []
    t.detach(sid, T0 + 1000)
    t.detach(sid, T0 + 1000)  # one too many does not go negative
    assert t.get(sid, T0 + 1000).sockets == 0  # type: ignore[union-attr]


def test_attach_refuses_unknown_and_expired_sessions() -> None:
    t = table()
    sid = t.create(T0).id
    assert t.attach("unknown", T0) is None
    assert t.attach(sid, T0 + SESSION_IDLE_S + 1) is None


def test_the_session_count_is_bounded_and_idle_ones_make_room() -> None:
    t = table(max_sessions=2, idle_s=60)
    t.create(T0)
    t.create(T0 + 30)
    with pytest.raises(RateLimited, match="limit 2"):
        t.create(T0 + 40)
    assert t.create(T0 + 70).id == "s2"  # the first one idled out and was swept


def test_delete_is_scoped_to_the_binding_account() -> None:
    t = table()
    bound, unbound = t.create(T0).id, t.create(T0).id
    t.grant(bound, "acct-a", tel_grant("d"), T0)
    assert not t.delete(bound, "acct-b")
    assert t.get(bound, T0) is not None
    assert t.delete(unbound, "acct-b")  # nobody owns it yet
    assert t.delete(bound, "acct-a")
    assert not t.delete(bound, "acct-a")
    assert len(t) == 0


def test_delete_account_drops_only_that_accounts_sessions_and_their_index() -> None:
    t = table()
    a1, a2, b1 = (t.create(T0).id for _ in range(3))
    for sid, acct in ((a1, "a"), (a2, "a"), (b1, "b")):
        t.grant(sid, acct, tel_grant("d"), T0)
        t.subscribe(sid, tel("d", "k"), T0)
    assert t.delete_account("a") == sorted([a1, a2])
    assert t.get(b1, T0) is not None
    assert t.audience("a", "d", TEL) == ()
    assert groups(t.audience("b", "d", TEL)) == {(V4, frozenset({"k"})): {b1}}
    assert t.delete_account("a") == []


# -- grants ------------------------------------------------------------------------------------


def test_the_first_grant_binds_and_other_accounts_see_no_session() -> None:
    t = table()
    sid = t.create(T0).id
    assert t.grant(sid, "a", tel_grant("d"), T0) is None  # v4: no implied subscription
    assert t.get(sid, T0).account_id == "a"  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="unknown session") as caught:
        t.grant(sid, "b", tel_grant("d"), T0)
    assert caught.value.field == "sessionId"
    with pytest.raises(NotFound):
        t.revoke(sid, "b", tel_grant("d"), T0)
    with pytest.raises(NotFound):
        t.grant("missing", "a", tel_grant("d"), T0)


def test_grants_are_idempotent_and_counted() -> None:
    t = table()
    sid = t.create(T0).id
    for _ in range(3):
        t.grant(sid, "a", tel_grant("d", "k"), T0)
    assert t.get(sid, T0).grants == 1  # type: ignore[union-attr]


def test_allows_and_granted_keys() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d", "temp"), T0)
    t.grant(sid, "a", tel_grant("d", "hum"), T0)
    t.grant(sid, "a", Grant("d", GrantType.DIRECT_METHOD, method_name="reboot"), T0)
    t.grant(sid, "a", Grant("d", GrantType.DESIRED_PROPERTIES), T0)
    assert t.granted_telemetry_keys(sid, "d", T0) == frozenset({"temp", "hum"})
    assert t.granted_telemetry_keys(sid, "other", T0) == frozenset()
    assert t.allows(sid, Grant("d", GrantType.DIRECT_METHOD, method_name="reboot"), T0)
    assert not t.allows(sid, Grant("d", GrantType.DIRECT_METHOD, method_name="wipe"), T0)
    assert t.allows(sid, Grant("d", GrantType.DESIRED_PROPERTIES), T0)
    assert not t.allows(sid, Grant("d2", GrantType.DESIRED_PROPERTIES), T0)
    t.grant(sid, "a", tel_grant("d"), T0)
    assert t.granted_telemetry_keys(sid, "d", T0) is None  # all keys
    with pytest.raises(NotFound):
        t.allows("missing", Grant("d", GrantType.DESIRED_PROPERTIES), T0)


def test_the_grant_count_is_bounded() -> None:
    t = table(max_grants=2)
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d", "1"), T0)
    t.grant(sid, "a", tel_grant("d", "2"), T0)
    t.grant(sid, "a", tel_grant("d", "2"), T0)  # a repeat needs no room
    with pytest.raises(RateLimited, match="2 grants"):
        t.grant(sid, "a", tel_grant("d", "3"), T0)


# -- subscriptions -----------------------------------------------------------------------------


def test_a_subscription_needs_a_covering_grant() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d", "temp"), T0)
    t.subscribe(sid, tel("d", "temp"), T0)
    with pytest.raises(Forbidden, match="no grant for telemetry 'hum' of device 'd'") as caught:
        t.subscribe(sid, tel("d", "hum"), T0)
    assert caught.value.field == "type"
    with pytest.raises(Forbidden):
        t.subscribe(sid, tel("d"), T0)  # all keys needs the all-keys grant
    with pytest.raises(Forbidden):
        t.subscribe(sid, Subscription("d", CONN), T0)
    with pytest.raises(Forbidden):
        t.unsubscribe(sid, Subscription("d", CONN), T0)
    with pytest.raises(NotFound):
        t.subscribe("missing", tel("d", "temp"), T0)
    assert t.subscriptions(sid, T0) == {tel("d", "temp")}


def test_unsubscribe_is_idempotent_and_empties_the_index() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", Grant("d", GrantType.CONNECTION_STATE), T0)
    t.subscribe(sid, Subscription("d", CONN), T0)
    assert t.watched_devices() == 1
    t.unsubscribe(sid, Subscription("d", CONN), T0)
    t.unsubscribe(sid, Subscription("d", CONN), T0)
    assert t.audience("a", "d", CONN) == ()
    assert t.watched_devices() == 0


def test_revoking_drops_the_subscriptions_no_other_grant_covers() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d"), T0)
    t.grant(sid, "a", tel_grant("d", "temp"), T0)
    t.grant(sid, "a", Grant("d", GrantType.D2C_MESSAGES), T0)
    for sub in (tel("d", "temp"), tel("d", "hum"), tel("d"), Subscription("d", D2C)):
        t.subscribe(sid, sub, T0)
    removed = t.revoke(sid, "a", tel_grant("d"), T0)
    assert set(removed) == {tel("d", "hum"), tel("d")}
    assert t.subscriptions(sid, T0) == {tel("d", "temp"), Subscription("d", D2C)}
    assert groups(t.audience("a", "d", TEL)) == {(V4, frozenset({"temp"})): {sid}}
    assert t.revoke(sid, "a", tel_grant("d", "temp"), T0) == [tel("d", "temp")]
    assert t.audience("a", "d", TEL) == ()
    assert t.revoke(sid, "a", tel_grant("d", "temp"), T0) == []  # idempotent
    assert groups(t.audience("a", "d", D2C)) == {(V4, None): {sid}}


def test_subscription_count_is_bounded() -> None:
    t = table(max_subscriptions=2)
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d"), T0)
    t.subscribe(sid, tel("d", "1"), T0)
    t.subscribe(sid, tel("d", "2"), T0)
    t.subscribe(sid, tel("d", "2"), T0)
    with pytest.raises(RateLimited, match="more than 2 subscriptions"):
        t.subscribe(sid, tel("d", "3"), T0)


def test_bulk_subscribe_skips_ungranted_and_answers_what_it_applied() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d", "a"), T0)
    t.grant(sid, "a", tel_grant("d", "b"), T0)
    asked = [(sid, tel("d", "a")), (sid, tel("d", "x")), (sid, tel("d", "b"))]
    assert t.subscribe_many(asked, T0) == [(sid, tel("d", "a")), (sid, tel("d", "b"))]
    assert t.subscriptions(sid, T0) == {tel("d", "a"), tel("d", "b")}
    assert t.subscribe_many([], T0) == []
    assert t.unsubscribe_many(asked, T0) == [(sid, tel("d", "a")), (sid, tel("d", "b"))]
    assert t.subscriptions(sid, T0) == frozenset()


def test_bulk_calls_apply_nothing_when_a_session_is_unknown() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d"), T0)
    with pytest.raises(NotFound, match="'gone'"):
        t.subscribe_many([(sid, tel("d", "a")), ("gone", tel("d", "b"))], T0)
    assert t.subscriptions(sid, T0) == frozenset()
    t.subscribe(sid, tel("d", "a"), T0)
    with pytest.raises(NotFound):
        t.unsubscribe_many([(sid, tel("d", "a")), ("gone", tel("d", "b"))], T0)
    assert t.subscriptions(sid, T0) == {tel("d", "a")}


def test_bulk_subscribe_over_the_limit_applies_nothing() -> None:
    t = table(max_subscriptions=2)
    sid = t.create(T0).id
    t.grant(sid, "a", tel_grant("d"), T0)
    with pytest.raises(RateLimited):
        t.subscribe_many([(sid, tel("d", k)) for k in "abc"], T0)
    assert t.subscriptions(sid, T0) == frozenset()


# -- v2 ----------------------------------------------------------------------------------------


def test_a_v2_grant_marks_the_session_and_is_the_subscription() -> None:
    t = table()
    sid = t.create(T0).id
    implied = t.grant(sid, "a", tel_grant("d", "temp"), T0, V2)
    assert implied == tel("d", "temp")
    assert t.get(sid, T0).protocol is V2  # type: ignore[union-attr]
    assert t.subscriptions(sid, T0) == {tel("d", "temp")}
    # Granting again (the client's resubscribe) answers the subscription again.
    assert t.grant(sid, "a", tel_grant("d", "temp"), T0, V2) == tel("d", "temp")
    assert t.grant(sid, "a", Grant("d", GrantType.DESIRED_PROPERTIES), T0, V2) is None
    assert groups(t.audience("a", "d", TEL)) == {(V2, frozenset({"temp"})): {sid}}
    assert t.revoke(sid, "a", tel_grant("d", "temp"), T0) == [tel("d", "temp")]


def test_turning_v2_regroups_the_devices_it_watches() -> None:
    t = table()
    sid = t.create(T0).id
    t.grant(sid, "a", Grant("d", GrantType.CONNECTION_STATE), T0)
    t.subscribe(sid, Subscription("d", CONN), T0)
    assert groups(t.audience("a", "d", CONN)) == {(V4, None): {sid}}  # cached now
    t.grant(sid, "a", Grant("e", GrantType.CONNECTION_STATE), T0, V2)
    assert groups(t.audience("a", "d", CONN)) == {(V2, None): {sid}}


# -- the fan-out index -------------------------------------------------------------------------


def test_audience_groups_sessions_by_identical_payload() -> None:
    t = table()
    ids = [t.create(T0).id for _ in range(6)]
    for sid in ids:
        t.grant(sid, "a", tel_grant("d"), T0)
    t.grant(ids[5], "a", Grant("d", GrantType.DIRECT_METHOD), T0, V2)  # marks it v2 only
    for sid in ids[:2]:
        t.subscribe(sid, tel("d", "temp"), T0)
    t.subscribe(ids[2], tel("d", "temp"), T0)
    t.subscribe(ids[2], tel("d", "hum"), T0)
    t.subscribe(ids[3], tel("d"), T0)
    t.subscribe(ids[3], tel("d", "temp"), T0)  # all keys wins over one key
    t.subscribe(ids[5], tel("d", "temp"), T0)
    assert groups(t.audience("a", "d", TEL)) == {
        (V4, frozenset({"temp"})): {ids[0], ids[1]},
        (V4, frozenset({"temp", "hum"})): {ids[2]},
        (V4, None): {ids[3]},
        (V2, frozenset({"temp"})): {ids[5]},
    }
    assert t.audience("a", "d", CONN) == ()
    assert t.audience("other-account", "d", TEL) == ()
    assert t.audience("a", "other-device", TEL) == ()


def test_audience_is_cached_until_that_device_changes() -> None:
    t = table()
    a, b = t.create(T0).id, t.create(T0).id
    for sid in (a, b):
        t.grant(sid, "acct", tel_grant("d"), T0)
        t.grant(sid, "acct", tel_grant("e"), T0)
    t.subscribe(a, tel("d", "k"), T0)
    t.subscribe(a, tel("e", "k"), T0)
    first = t.audience("acct", "d", TEL)
    assert t.audience("acct", "d", TEL) is first
    t.subscribe(b, tel("e", "k"), T0)  # another device: d's answer stays
    assert t.audience("acct", "d", TEL) is first
    t.subscribe(b, tel("d", "k"), T0)
    assert groups(t.audience("acct", "d", TEL)) == {(V4, frozenset({"k"})): {a, b}}


class _NoScan(dict[str, Any]):
    """A session dict that fails on any walk over it: lookups by id only."""

    def __iter__(self) -> Any:
        raise AssertionError("the fan-out walked all sessions")

    def values(self) -> Any:
        raise AssertionError("the fan-out walked all sessions")

    def items(self) -> Any:
        raise AssertionError("the fan-out walked all sessions")


def test_audience_answers_from_the_index_without_walking_all_sessions() -> None:
    t = table()
    watchers = []
    for i in range(3000):
        sid = t.create(T0).id
        device = "hot" if i % 3 == 0 else f"cold-{i}"
        t.grant(sid, "a", tel_grant(device), T0)
        t.subscribe(sid, tel(device, "k"), T0)
        if device == "hot":
            watchers.append(sid)
    t._sessions = _NoScan(t._sessions)  # any scan of all sessions now fails the test
    result = t.audience("a", "hot", TEL)
    assert groups(result) == {(V4, frozenset({"k"})): set(watchers)}
    assert len(watchers) == 1000
    assert t.audience("a", "cold-1", TEL)[0].session_ids == ("s1",)


def test_a_thousand_sessions_on_one_device_with_the_same_key_are_one_group() -> None:
    t = table()
    for _ in range(1000):
        sid = t.create(T0).id
        t.grant(sid, "a", tel_grant("d", "temp"), T0, V2)
    (group,) = t.audience("a", "d", TEL)
    assert (group.protocol, group.telemetry_keys, len(group.session_ids)) == (
        V2,
        frozenset({"temp"}),
        1000,
    )


def test_dropping_a_session_removes_it_from_every_device_it_watched() -> None:
    t = table(idle_s=60)
    sid = t.create(T0).id
    for device in ("d", "e"):
        t.grant(sid, "a", Grant(device, GrantType.DEVICE_TWIN), T0)
        t.subscribe(sid, Subscription(device, TWIN), T0)
    assert t.watched_devices() == 2
    assert t.expire(T0 + 61) == [sid]
    assert t.watched_devices() == 0
    assert t.audience("a", "d", TWIN) == ()
