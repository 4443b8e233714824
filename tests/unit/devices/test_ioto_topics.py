"""Tests for thinghub.devices.ioto_topics with payloads as the Ioto agent sends them.

Payloads are copied from the agent's observed wire behaviour (docs/faces/ioto-internals.md)
and from the agent's own format strings (sync.c ioSyncDown / ioFlushSync, mqtt.c ioSetMetric /
ioGetMetric / ioSet / ioSetNum / ioSetBool).
"""

from __future__ import annotations

import json
import time

import pytest

from thinghub.devices import ioto_topics as t
from thinghub.devices.ioto_topics import ChangeCommand, PublishKind, Statistic
from thinghub.domain.errors import Forbidden, Invalid, TooLarge

DEV = "JT08FFQXWQ"
ACC = "4f1c2d3e-0000-4000-8000-00000000abcd"
NOW = 1_760_000_000.0  # 2025-10-09T08:53:20Z


# --- subscriptions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic_filter",
    [
        f"ioto/device/{DEV}/#",
        "ioto/account/all/#",
        f"ioto/account/{ACC}/#",
        f"ioto/device/{DEV}/sync/+",
        f"ioto/device/{DEV}/provision/+",
        f"ioto/device/{DEV}/mqtt/throttle",
        f"ioto/device/{DEV}/metric/get/+",
        "ioto/account/all/sync/+",
        f"$aws/things/{DEV}/shadow/name/default/get/accepted",
        f"$aws/things/{DEV}/shadow/name/default/update/rejected",
    ],
)
def test_the_agents_subscriptions_are_allowed(topic_filter: str) -> None:
    assert t.allowed_subscription(topic_filter, device_id=DEV, account_id=ACC)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "ioto/#",
        "ioto/device/+/#",
        "ioto/device/OTHER/#",
        f"ioto/device/{DEV}x/#",
        "ioto/account/+/#",
        "ioto/account/other-account/#",
        "ioto/service/#",
        "$aws/things/OTHER/shadow/name/x/get/accepted",
        "$aws/things/+/shadow/name/x/get/accepted",
        f"$aws/things/{DEV}x/shadow/#",
        "$aws/#",
        "devices/x/messages/devicebound/#",
    ],
)
def test_other_subscriptions_are_refused(topic_filter: str) -> None:
    assert not t.allowed_subscription(topic_filter, device_id=DEV, account_id=ACC)


def test_without_an_account_only_device_and_all_topics() -> None:
    assert t.allowed_subscription(f"ioto/device/{DEV}/#", device_id=DEV, account_id=None)
    assert not t.allowed_subscription(f"ioto/account/{ACC}/#", device_id=DEV, account_id=None)


# --- publish topics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "kind", "service", "seq"),
    [
        (
            f"$aws/rules/IotoDevice/ioto/service/{DEV}/db/syncDown",
            PublishKind.SYNC_DOWN,
            "db/syncDown",
            None,
        ),
        (
            f"$aws/rules/IotoDevice/ioto/service/{DEV}/db/syncToDynamo",
            PublishKind.SYNC_TO_DYNAMO,
            "db/syncToDynamo",
            None,
        ),
        (
            f"$aws/rules/IotoDevice/ioto/service/{DEV}/metric/set",
            PublishKind.METRIC_SET,
            "metric/set",
            None,
        ),
        (
            f"$aws/rules/IotoDevice/ioto/service/{DEV}/store/set",
            PublishKind.STORE_SET,
            "store/set",
            None,
        ),
        (f"ioto/service/{DEV}/db/syncDown", PublishKind.SYNC_DOWN, "db/syncDown", None),
        (f"ioto/service/{DEV}/metric/get/100", PublishKind.REQUEST, "metric/get", 100),
        (f"ioto/service/{DEV}/store/get/2147483647", PublishKind.REQUEST, "store/get", 2147483647),
    ],
)
def test_publish_topics(topic: str, kind: PublishKind, service: str, seq: int | None) -> None:
    publish = t.parse_publish_topic(topic, device_id=DEV)
    assert (publish.kind, publish.service, publish.seq, publish.device_id) == (
        kind,
        service,
        seq,
        DEV,
    )


def test_another_devices_topic_is_forbidden() -> None:
    with pytest.raises(Forbidden) as info:
        t.parse_publish_topic("$aws/rules/IotoDevice/ioto/service/OTHER/db/syncDown", device_id=DEV)
    assert info.value.field == "topic"


@pytest.mark.parametrize(
    "topic",
    [
        f"ioto/device/{DEV}/sync/SYNC",
        f"ioto/service/{DEV}",
        f"ioto/service/{DEV}/unknown/thing",
        f"$aws/rules/IotoDevice/ioto/service/{DEV}/metric/get/100",
        f"ioto/service/{DEV}/metric/get/99999999999",
        f"ioto/service/{DEV}/a b/1",
        f"ioto/service/{DEV}/request",
        "ioto/service//db/syncDown",
    ],
)
def test_bad_publish_topics(topic: str) -> None:
    with pytest.raises(Invalid) as info:
        t.parse_publish_topic(topic, device_id=DEV)
    assert info.value.field == "topic"


def test_reply_and_cloud_topics() -> None:
    assert t.reply_topic(DEV, "metric/get", 100) == f"ioto/device/{DEV}/metric/get/100"
    assert t.sync_topic(DEV, t.SyncKind.SYNCDOWN) == f"ioto/device/{DEV}/sync/SYNCDOWN"
    assert t.sync_topic(DEV, t.SyncKind.UPSERT) == f"ioto/device/{DEV}/sync/UPSERT"
    assert t.release_topic(DEV) == f"ioto/device/{DEV}/provision/release"
    assert t.throttle_topic(DEV) == f"ioto/device/{DEV}/mqtt/throttle"
    # Every cloud -> device topic falls under the agent's master subscription.
    for topic in (t.reply_topic(DEV, "metric/get", 1), t.release_topic(DEV), t.throttle_topic(DEV)):
        assert topic.startswith(f"ioto/device/{DEV}/")


# --- device messages ------------------------------------------------------------------------


def test_sync_down_first_and_later() -> None:
    assert t.parse_sync_down(b'{"timestamp":"1970-01-01T00:00:00.000Z"}').since == 0.0
    assert t.parse_sync_down(b'{"timestamp":"2025-10-09T08:53:20.000Z"}').since == NOW
    for bad in (b"{}", b'{"timestamp": 5}', b'{"timestamp": "yesterday"}', b"[]"):
        with pytest.raises(Invalid):
            t.parse_sync_down(bad)


SYNC_TO_DYNAMO = (
    b'{"seq":7,"changes":[{"cmd":"upsert","key":"s#counter","item":{"key":"counter","value":"42",'
    b'"type":"number","deviceId":"JT08FFQXWQ","accountId":"4f1c2d3e-0000-4000-8000-00000000abcd",'
    b'"sk":"s#counter","_type":"Store","updated":"2025-10-09T08:53:20.000Z"}},'
    b'{"cmd":"remove","key":"l#01J9","item":{"sk":"l#01J9","_type":"Log"}}]}'
)


def test_sync_to_dynamo_as_the_agent_sends_it() -> None:
    batch = t.parse_sync_to_dynamo(SYNC_TO_DYNAMO)
    assert batch.seq == 7
    assert batch.keys == ("s#counter", "l#01J9")
    first, second = batch.changes
    assert (first.cmd, first.model, first.item["value"]) == (ChangeCommand.UPSERT, "Store", "42")
    assert t.store_value(first.item["value"], first.item["type"]) == 42
    assert (second.cmd, second.model) == (ChangeCommand.REMOVE, "Log")
    empty = t.parse_sync_to_dynamo(b'{"seq":1,"changes":[]}')
    assert empty.changes == ()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"changes":[]}', "seq"),
        (b'{"seq":-1,"changes":[]}', "seq"),
        (b'{"seq":true,"changes":[]}', "seq"),
        (b'{"seq":1}', "changes"),
        (b'{"seq":1,"changes":{}}', "changes"),
        (b'{"seq":1,"changes":[5]}', "changes[0]"),
        (b'{"seq":1,"changes":[{"cmd":"drop","key":"k","item":{}}]}', "changes[0].cmd"),
        (b'{"seq":1,"changes":[{"cmd":"upsert","key":"","item":{}}]}', "changes[0].key"),
        (b'{"seq":1,"changes":[{"cmd":"upsert","key":"k","item":"x"}]}', "changes[0].item"),
        (
            b'{"seq":1,"changes":[{"cmd":"upsert","key":"k","item":{}}, {"cmd":"x"}]}',
            "changes[1].cmd",
        ),
    ],
)
def test_bad_sync_batches_name_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(Invalid) as info:
        t.parse_sync_to_dynamo(payload)
    assert info.value.field == field


def test_payload_bounds() -> None:
    with pytest.raises(TooLarge):
        t.parse_json(b" " * (t.MAX_PAYLOAD_BYTES + 1))
    deep = b"[" * (t.MAX_DEPTH + 1) + b"]" * (t.MAX_DEPTH + 1)
    with pytest.raises(Invalid) as info:
        t.parse_json(deep)
    assert "deeper" in info.value.message
    t.parse_json(b"[" * t.MAX_DEPTH + b"]" * t.MAX_DEPTH)
    assert t.parse_json(b'["[[[[[[[[[[[[[[[[[[[[[[[[[[\\"["]') == ["[" * 26 + '"[']
    too_many = {
        "seq": 1,
        "changes": [{"cmd": "upsert", "key": "k", "item": {}}] * (t.MAX_CHANGES + 1),
    }
    with pytest.raises(Invalid) as info:
        t.parse_sync_to_dynamo(json.dumps(too_many).encode())
    assert info.value.field == "changes"
    for bad in (b"\xff", b"{", b'{"value": NaN}', b'{"value": Infinity}'):
        with pytest.raises(Invalid):
            t.parse_json(bad)


def test_metric_set_as_the_agent_sends_it() -> None:
    # mqtt.c ioSetMetric: "{"metric":"%s","value":%g,"dimensions":%s,"buffer":{"elapsed":%d}}"
    metric = t.parse_metric_set(
        b'{"metric":"temp","value":21.5,"dimensions":[{"Device":"${deviceId}"}],"buffer":{"elapsed":0}}',
        device_id=DEV,
    )
    assert (metric.metric, metric.value, metric.buffer_elapsed_s) == ("temp", 21.5, 0.0)
    assert metric.dimensions == ({"Device": DEV},)


def test_metric_dimensions_forms() -> None:
    one_object = t.parse_metric_set(
        b'{"metric":"m","value":1,"dimensions":{"Device":"${deviceId}","Fan":2}}', device_id=DEV
    )
    assert one_object.dimensions == ({"Device": DEV, "Fan": "2"},)
    several = t.parse_metric_set(
        b'{"metric":"m","value":1,"dimensions":[{"Device":"${deviceId}"},{}]}', device_id=DEV
    )
    assert several.dimensions == ({"Device": DEV}, {})
    default = t.parse_metric_set(b'{"metric":"m","value":-3}', device_id=DEV)
    assert default.dimensions == ({"Device": DEV},) and default.buffer_elapsed_s is None
    kept = t.parse_metric_set(
        b'{"metric":"m","value":1,"dimensions":{"A":"${other}"}}', device_id=DEV
    )
    assert kept.dimensions == ({"A": "${other}"},)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"value":1}', "metric"),
        (b'{"metric":"","value":1}', "metric"),
        (b'{"metric":"m"}', "value"),
        (b'{"metric":"m","value":"1"}', "value"),
        (b'{"metric":"m","value":true}', "value"),
        (b'{"metric":"m","value":1,"dimensions":[]}', "dimensions"),
        (b'{"metric":"m","value":1,"dimensions":"Device"}', "dimensions"),
        (b'{"metric":"m","value":1,"dimensions":[5]}', "dimensions[0]"),
        (b'{"metric":"m","value":1,"dimensions":[{"a":[1]}]}', "dimensions[0].a"),
        (b'{"metric":"m","value":1,"buffer":{"elapsed":"x"}}', "buffer.elapsed"),
        (b'{"metric":"m","value":1,"buffer":3}', "buffer"),
        (b'{"metric":"m","value":1e999}', "value"),
    ],
)
def test_bad_metric_set_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(Invalid) as info:
        t.parse_metric_set(payload, device_id=DEV)
    assert info.value.field == field


def test_agent_nan_metric_is_not_json() -> None:
    # "%g" of NaN is "nan": the agent can send this; it is refused, not stored.
    with pytest.raises(Invalid) as info:
        t.parse_metric_set(b'{"metric":"m","value":nan,"dimensions":[{}]}', device_id=DEV)
    assert info.value.field == "payload"


def test_metric_get_as_the_agent_sends_it_and_the_reply() -> None:
    # mqtt.c ioGetMetric default dimensions: {"Device":"${deviceId}"} (one object)
    request = t.parse_metric_get(
        b'{"metric":"temp","dimensions":{"Device":"${deviceId}"},"period":3600,"statistic":"avg"}',
        device_id=DEV,
    )
    assert request == t.MetricGet("temp", ({"Device": DEV},), 3600, Statistic.AVG)
    assert t.format_metric_reply(4.2) == b"4.2"
    assert t.format_metric_reply(42) == b"42.0"
    assert t.format_metric_reply(None) == b"nan"
    assert t.format_metric_reply(float("inf")) == b"nan"
    assert float(t.format_metric_reply(1e-7)) == 1e-7
    for payload, field in (
        (b'{"metric":"m","period":0,"statistic":"avg"}', "period"),
        (b'{"metric":"m","period":60,"statistic":"median"}', "statistic"),
        (b'{"metric":"m","period":1.5,"statistic":"avg"}', "period"),
    ):
        with pytest.raises(Invalid) as info:
            t.parse_metric_get(payload, device_id=DEV)
        assert info.value.field == field


def test_store_set_as_the_agent_sends_it() -> None:
    # mqtt.c ioSet / ioSetNum ("%lf") / ioSetBool ("%lf" of a bool)
    assert t.parse_store_set(b'{"key":"mode","value":"auto","type":"string"}') == t.StoreSet(
        "mode", "auto", "string"
    )
    assert t.parse_store_set(b'{"key":"n","value":42.000000,"type":"number"}').value == 42
    assert t.parse_store_set(b'{"key":"n","value":4.500000,"type":"number"}').value == 4.5
    assert t.parse_store_set(b'{"key":"b","value":1.000000,"type":"boolean"}').value is True
    assert t.parse_store_set(b'{"key":"b","value":0.000000,"type":"boolean"}').value is False
    for payload, field in (
        (b'{"value":1}', "key"),
        (b'{"key":"k","value":1,"type":"date"}', "type"),
        (b'{"key":"k","type":"number"}', "value"),
        (b'{"key":"k","value":"abc","type":"number"}', "value"),
        (b'{"key":"k","value":"maybe","type":"boolean"}', "value"),
    ):
        with pytest.raises(Invalid) as info:
            t.parse_store_set(payload)
        assert info.value.field == field


def test_store_values_from_sync_items() -> None:
    # With sync on, the agent writes '%g' text: {value: '42', type: 'number'}, '1' for true.
    assert t.store_value("42", "number") == 42
    assert t.store_value("2.5", "number") == 2.5
    assert t.store_value("1", "boolean") is True
    assert t.store_value("true", "boolean") is True
    assert t.store_value({"a": 1}, "object") == {"a": 1}
    assert t.store_value(5, "string") == "5"
    assert t.store_value("x", None) == "x"
    with pytest.raises(Invalid):
        t.store_value("inf", "number")


# --- cloud messages -------------------------------------------------------------------------


def test_syncdown_and_sync_acks_use_the_agents_date_form() -> None:
    assert json.loads(t.syncdown_ack(NOW)) == {"updated": "2025-10-09T08:53:20.000Z"}
    ack = json.loads(t.sync_ack(7, ("s#counter", "l#01J9"), NOW + 0.25))
    assert ack == {"seq": 7, "keys": ["s#counter", "l#01J9"], "updated": "2025-10-09T08:53:20.250Z"}
    # The agent compares these strings with strcmp: later times must sort later.
    times = [NOW, NOW + 0.001, NOW + 0.5, NOW + 1, NOW + 86_400]
    assert sorted(t.format_iso_ms(x) for x in times) == [t.format_iso_ms(x) for x in times]


def test_store_item_for_a_desired_property() -> None:
    item = t.store_item(
        account_id=ACC, device_id=DEV, key="mode", value=True, created=NOW, updated=NOW
    )
    assert item == {
        "sk": "s#mode",
        "_type": "Store",
        "accountId": ACC,
        "deviceId": DEV,
        "key": "mode",
        "value": "true",
        "type": "boolean",
        "created": "2025-10-09T08:53:20.000Z",
        "updated": "2025-10-09T08:53:20.000Z",
    }
    assert t.store_value(item["value"], item["type"]) is True
    for value, kind in (
        (3, "number"),
        (2.5, "number"),
        ("x", "string"),
        ({"a": 1}, "object"),
        (None, "object"),
    ):
        got = t.store_item(
            account_id=ACC, device_id=DEV, key="k", value=value, created=NOW, updated=NOW
        )
        assert got["type"] == kind and t.store_value(got["value"], kind) == value
    message = json.loads(t.sync_item_message(item))
    assert message["sk"] == "s#mode" and message["_type"] == "Store"


def test_command_item() -> None:
    item = t.command_item(
        account_id=ACC, device_id=DEV, command_id="01J9ZZ", command="reboot", args=None, created=NOW
    )
    assert item["sk"] == f"command#{ACC}#{DEV}#01J9ZZ"
    assert (item["_type"], item["command"], item["args"]) == ("Command", "reboot", {})
    assert item["updated"] == "2025-10-09T08:53:20.000Z"
    assert "description" not in item
    described = t.command_item(
        account_id=ACC,
        device_id=DEV,
        command_id="2",
        command="setLed",
        args={"on": True},
        created=NOW,
        description="from /v1",
    )
    assert described["description"] == "from /v1" and described["args"] == {"on": True}
    with pytest.raises(ValueError):
        t.sync_item_message({"sk": "x"})


def test_release_and_throttle_messages() -> None:
    assert t.release_message(NOW + 0.5) == b"1760000000500"
    assert json.loads(t.throttle_message(NOW)) == {"timestamp": 1_760_000_000_000}
    assert json.loads(t.throttle_message(NOW, close=True)) == {
        "timestamp": 1_760_000_000_000,
        "close": True,
    }


# --- named shadows ----------------------------------------------------------------------------


def test_shadow_topics_name_the_shadow_and_the_operation() -> None:
    request = t.parse_shadow_topic(f"$aws/things/{DEV}/shadow/name/default/get", device_id=DEV)
    assert request == t.ShadowRequest("default", t.ShadowOp.GET)
    assert t.shadow_reply_topic(DEV, request, accepted=False) == (
        f"$aws/things/{DEV}/shadow/name/default/get/rejected"
    )
    assert t.parse_shadow_topic(f"ioto/service/{DEV}/db/syncDown", device_id=DEV) is None
    with pytest.raises(Forbidden):
        t.parse_shadow_topic("$aws/things/OTHER/shadow/name/default/update", device_id=DEV)
    for bad in ("shadow/get", "shadow/name/default/list", "shadow/name/a b/get", "x"):
        with pytest.raises(Invalid):
            t.parse_shadow_topic(f"$aws/things/{DEV}/{bad}", device_id=DEV)


def test_the_agents_shadow_update_with_bare_keys_is_read() -> None:
    """publishShadow wraps jsonToString(json, JSON_QUOTES) in {"state":{"reported":...}}:
    strings are quoted, keys of letters, digits and _ are not."""
    update = t.parse_shadow_update(b'{"state":{"reported":{temp:"4:2",n_1:{"a b":"x\\"y:"}}}}')
    assert update.reported == {"temp": "4:2", "n_1": {"a b": 'x"y:'}}
    assert t.parse_shadow_update(b'{"state":{"reported":null},"clientToken":"c1"}') == (
        t.ShadowUpdate(None, "c1")
    )
    assert t.parse_shadow_request(b"") is None
    assert t.parse_shadow_request(b'{"clientToken":"c2"}') == "c2"


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"[]", b'{"state":{}}', b'{"state":{"desired":{"a":1}}}',
     b'{"state":{"reported":1}}', b'{"state":{"reported":{}},"clientToken":7}',
     b'{"state":{"reported":' + b'{"a":' * 9 + b"1" + b"}" * 9 + b"}}"],
)  # fmt: skip
def test_bad_shadow_updates_are_invalid(payload: bytes) -> None:
    with pytest.raises(Invalid):
        t.parse_shadow_update(payload)


def test_a_shadow_state_over_8_kib_is_too_large() -> None:
    with pytest.raises(TooLarge):
        t.parse_shadow_update(json.dumps({"state": {"reported": {"a": "x" * 9000}}}).encode())


def test_shadow_answers_are_as_aws_iot_writes_them() -> None:
    doc = json.loads(
        t.shadow_document({"a": {"b": 1}}, version=3, updated=NOW, now=NOW + 1, client_token="c")
    )
    assert doc == {
        "state": {"reported": {"a": {"b": 1}}},
        "metadata": {"reported": {"a": {"b": {"timestamp": int(NOW)}}}},
        "version": 3,
        "timestamp": int(NOW) + 1,
        "clientToken": "c",
    }
    assert json.loads(t.shadow_error(404, "No shadow", now=NOW, client_token=None)) == {
        "code": 404,
        "message": "No shadow",
        "timestamp": int(NOW),
    }
    assert json.loads(t.shadow_deleted(version=4, now=NOW, client_token=None)) == {
        "version": 4,
        "timestamp": int(NOW),
    }


def test_bare_key_reading_is_linear_in_the_payload() -> None:
    """A long run of key characters without a colon (or an unterminated string) is read in
    one pass: the regex tried every position of the run, quadratic (32 KB took 7.5 s of the
    event loop, a full 128 KB payload minutes). The bound is generous; quadratic misses it by
    far, so this is not a timing test of the normal case."""
    run = "a" * (t.MAX_PAYLOAD_BYTES - 64)
    for payload in ('{"state": x' + run, '{"state": "' + run):
        started = time.process_time()
        with pytest.raises(Invalid):
            t.parse_shadow_update(payload.encode())
        assert time.process_time() - started < 2.0
