"""The Ioto MQTT dialect's topics and messages (no I/O).

What the Embedthis Ioto agent puts on the wire after provisioning (MQTT 3.1.1, QoS 1, client
certificate, client id = device id):

Subscriptions (wildcard "master" subscriptions; the agent routes narrower topics itself):
    ioto/device/{id}/#   ioto/account/all/#   ioto/account/{accountId}/#

Device -> cloud (``$aws/rules/IotoDevice/`` is AWS IoT "basic ingest"; the same service
topics are accepted without it):
    $aws/rules/IotoDevice/ioto/service/{id}/db/syncDown       {"timestamp": ISO}
    $aws/rules/IotoDevice/ioto/service/{id}/db/syncToDynamo   {"seq", "changes": [...]}
    $aws/rules/IotoDevice/ioto/service/{id}/metric/set        {"metric", "value", ...}
    $aws/rules/IotoDevice/ioto/service/{id}/store/set         {"key", "value", "type"}
    ioto/service/{id}/{topic...}/{seq}                        a request (metric/get,
        store/get...), answered on ioto/device/{id}/{topic...}/{seq} in plain text

Cloud -> device:
    ioto/device/{id}/sync/SYNCDOWN            {"updated"} - the agent is not "ready" before it
    ioto/device/{id}/sync/SYNC                {"seq", "keys", "updated"} - acknowledges a batch
    ioto/device/{id}/sync/INSERT|UPSERT|MODIFY|REMOVE   one item with "sk", "updated", "_type"
    ioto/device/{id}/provision/release        a millisecond timestamp (ignored if > 10 s old)
    ioto/device/{id}/mqtt/throttle            {"timestamp" (ms), "close"?}

AWS IoT named shadows (``services.shadow: true``; the agent uses them only when provisioning
said ``cloudType: dedicated``, which thinghub says):
    $aws/things/{id}/shadow/name/{name}/get      (empty)  -> .../get/accepted|rejected
    $aws/things/{id}/shadow/name/{name}/update   {"state": {"reported": {...}}}
                                                          -> .../update/accepted|rejected
    $aws/things/{id}/shadow/name/{name}/delete   (empty)  -> .../delete/accepted|rejected

Times: the agent compares ``updated`` strings with ``strcmp`` against its own ISO dates
(``2025-10-09T08:53:20.000Z``, milliseconds), so every ``updated`` sent to it must have that
exact form (``format_iso_ms``), never the seven-digit form other faces use.

Every payload is bounded before it is parsed (bytes, JSON nesting, counts); errors are
``domain.errors.Invalid`` naming the field, or ``Forbidden`` for another device's topic.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from thinghub.domain.clock import format_ts_ms, parse_ts
from thinghub.domain.errors import Forbidden, Invalid, TooLarge

__all__ = [
    "MAX_CHANGES",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "Change",
    "ChangeCommand",
    "MetricGet",
    "MetricSet",
    "PublishKind",
    "ServicePublish",
    "ShadowOp",
    "ShadowRequest",
    "ShadowUpdate",
    "Statistic",
    "StoreSet",
    "SyncDown",
    "SyncKind",
    "SyncToDynamo",
    "allowed_subscription",
    "command_item",
    "format_iso_ms",
    "format_metric_reply",
    "format_store_reply",
    "parse_json",
    "parse_metric_get",
    "parse_metric_set",
    "parse_publish_topic",
    "parse_shadow_request",
    "parse_shadow_topic",
    "parse_shadow_update",
    "parse_store_get",
    "parse_store_set",
    "parse_sync_down",
    "parse_sync_to_dynamo",
    "release_message",
    "release_topic",
    "reply_topic",
    "shadow_deleted",
    "shadow_document",
    "shadow_error",
    "shadow_reply_topic",
    "store_item",
    "store_value",
    "subscription_bases",
    "sync_ack",
    "sync_item_message",
    "sync_topic",
    "syncdown_ack",
    "throttle_message",
    "throttle_topic",
]

# AWS IoT Core's message size limit, which the agent is built for (ioto.h IO_MESSAGE_SIZE).
MAX_PAYLOAD_BYTES = 128 * 1024
# JSON nesting checked before parsing; Store values and Command args are small objects.
MAX_DEPTH = 16
# A syncToDynamo batch is cut at the message size; 1,000 tiny changes still fit in 128 KiB.
MAX_CHANGES = 1000
MAX_SYNC_KEY_CHARS = 1024
# CloudWatch's limits: metric names up to 255 characters, 30 dimensions, values 1 KiB.
MAX_METRIC_NAME_CHARS = 255
MAX_DIMENSION_SETS = 30
MAX_DIMENSIONS = 30
MAX_DIMENSION_VALUE_CHARS = 1024
MAX_PERIOD_S = 366 * 24 * 3600
# The agent numbers requests from 100 and wraps at 2^31.
MAX_SEQ = 2**31 - 1

INGEST_PREFIX = "$aws/rules/IotoDevice/"
SHADOW_PREFIX = "$aws/things/"
# AWS IoT's shadow limits: a state document of 8 KB, nested 8 deep; names and client tokens
# of 64 characters.
MAX_SHADOW_STATE_BYTES = 8 * 1024
MAX_SHADOW_DEPTH = 8
MAX_CLIENT_TOKEN_CHARS = 64
_SHADOW_NAME_RE = re.compile(r"[A-Za-z0-9:_-]{1,64}")
DEVICE_ID_PLACEHOLDER = "${deviceId}"
_SEQ_RE = re.compile(r"[0-9]{1,10}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


# -- topics -----------------------------------------------------------------------------------


class SyncKind(StrEnum):
    SYNCDOWN = "SYNCDOWN"
    SYNC = "SYNC"
    INSERT = "INSERT"
    UPSERT = "UPSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"


def sync_topic(device_id: str, kind: SyncKind) -> str:
    return f"ioto/device/{device_id}/sync/{kind.value}"


def release_topic(device_id: str) -> str:
    return f"ioto/device/{device_id}/provision/release"


def throttle_topic(device_id: str) -> str:
    return f"ioto/device/{device_id}/mqtt/throttle"


def reply_topic(device_id: str, service: str, seq: int) -> str:
    """Where the answer to request ``ioto/service/{id}/{service}/{seq}`` goes."""
    return f"ioto/device/{device_id}/{service}/{seq}"


def subscription_bases(device_id: str, account_id: str | None) -> tuple[str, ...]:
    bases = [f"ioto/device/{device_id}", "ioto/account/all"]
    if account_id is not None:
        bases.append(f"ioto/account/{account_id}")
    return tuple(bases)


def allowed_subscription(topic_filter: str, *, device_id: str, account_id: str | None) -> bool:
    """Whether a device may subscribe to a filter.

    Allowed: the agent's three master subscriptions, and any narrower filter under them
    (``ioto/device/{id}/sync/+``), since they see nothing more. Refused: anything that could
    match another device's or account's topics (``ioto/device/+/#``, ``ioto/#``, ``#``),
    and everything else outside ``ioto/``. The device's own shadow topics
    (``$aws/things/{id}/shadow/...``) are allowed: the agent closes its connection when a
    subscription is refused, and it subscribes to its shadow's replies when shadows are on.
    """
    for base in (*subscription_bases(device_id, account_id), shadow_base(device_id)):
        if topic_filter == base or topic_filter.startswith(base + "/"):
            return True
    return False


def shadow_base(device_id: str) -> str:
    return f"{SHADOW_PREFIX}{device_id}/shadow"


class ShadowOp(StrEnum):
    GET = "get"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class ShadowRequest:
    """A publish to ``$aws/things/{id}/shadow/name/{name}/{op}``."""

    name: str
    op: ShadowOp


def parse_shadow_topic(topic: str, *, device_id: str) -> ShadowRequest | None:
    """Read a shadow request topic; None for a topic outside ``$aws/things/``.

    Raises:
        Forbidden: the topic names another thing (the thing name is the device id).
        Invalid: not a named shadow's get, update or delete (the classic, unnamed shadow is
            not served: the agent uses named shadows only).
    """
    if not topic.startswith(SHADOW_PREFIX):
        return None
    parts = topic.split("/")
    if len(parts) < 4 or parts[3] != "shadow" or not parts[2]:
        raise Invalid(f"not a shadow topic: {topic[:200]!r}", field="topic")
    if parts[2] != device_id:
        raise Forbidden(
            f"device {device_id!r} may not use the shadow of {parts[2][:128]!r}", field="topic"
        )
    if len(parts) != 7 or parts[4] != "name" or not _SHADOW_NAME_RE.fullmatch(parts[5]):
        raise Invalid(
            f"not a named shadow request ($aws/things/{{id}}/shadow/name/{{name}}/get|update|"
            f"delete): {topic[:200]!r}",
            field="topic",
        )
    try:
        op = ShadowOp(parts[6])
    except ValueError:
        raise Invalid(f"unknown shadow operation {parts[6][:64]!r}", field="topic") from None
    return ShadowRequest(parts[5], op)


def shadow_reply_topic(device_id: str, request: ShadowRequest, *, accepted: bool) -> str:
    outcome = "accepted" if accepted else "rejected"
    return f"{shadow_base(device_id)}/name/{request.name}/{request.op.value}/{outcome}"


class PublishKind(StrEnum):
    SYNC_DOWN = "db/syncDown"
    SYNC_TO_DYNAMO = "db/syncToDynamo"
    METRIC_SET = "metric/set"
    STORE_SET = "store/set"
    REQUEST = "request"


@dataclass(frozen=True, slots=True)
class ServicePublish:
    """A device's publish on a service topic.

    Attributes:
        kind: what it is; REQUEST for ``ioto/service/{id}/{service}/{seq}``.
        service: the topic below ``ioto/service/{id}/`` without the seq, e.g. ``metric/get``.
        seq: the request number to answer with, for a REQUEST.
    """

    kind: PublishKind
    device_id: str
    service: str
    seq: int | None = None


def parse_publish_topic(topic: str, *, device_id: str) -> ServicePublish:
    """Read a device's publish topic.

    Raises:
        Forbidden: the topic names another device (devices only act as themselves).
        Invalid: not an Ioto service topic (``field`` is ``topic``).
    """
    rest = topic.removeprefix(INGEST_PREFIX)
    parts = rest.split("/")
    if len(parts) < 4 or parts[:2] != ["ioto", "service"] or not parts[2]:
        raise Invalid(f"not an Ioto service topic: {topic[:200]!r}", field="topic")
    if parts[2] != device_id:
        raise Forbidden(
            f"device {device_id!r} may not publish for device {parts[2][:128]!r}", field="topic"
        )
    service_parts = parts[3:]
    if not all(_SEGMENT_RE.fullmatch(p) for p in service_parts) or len(service_parts) > 8:
        raise Invalid(f"malformed Ioto service topic: {topic[:200]!r}", field="topic")
    if rest == topic and len(service_parts) >= 2 and _SEQ_RE.fullmatch(service_parts[-1]):
        seq = int(service_parts[-1])
        if seq > MAX_SEQ:
            raise Invalid(f"request number {seq} is out of range", field="topic")
        return ServicePublish(PublishKind.REQUEST, device_id, "/".join(service_parts[:-1]), seq)
    service = "/".join(service_parts)
    try:
        kind = PublishKind(service)
    except ValueError:
        raise Invalid(f"unknown Ioto service topic {service!r}", field="topic") from None
    if kind is PublishKind.REQUEST:
        raise Invalid(f"unknown Ioto service topic {service!r}", field="topic")
    return ServicePublish(kind, device_id, service)


# -- JSON, bounded ----------------------------------------------------------------------------


def _check_depth(text: str, limit: int) -> None:
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise Invalid(f"JSON nested deeper than {limit} levels", field="payload")
        elif ch in "]}":
            depth -= 1


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# Outside strings, a run of letters, digits and ``_`` followed by a colon is a bare key. A
# run is tried from its start only (the look-behind) and nothing is given back once taken
# (possessive `*+`, `++`): linear time, where trying every position of a long run that ends
# without a colon was quadratic (a 32 KB payload held the event loop for seconds).
_BARE_KEY_RE = re.compile(
    r'"(?:[^"\\]|\\.)*+"|(?<![A-Za-z0-9_$])([A-Za-z0-9_$]++)(\s*+:)', re.DOTALL
)


def _quote_bare_keys(text: str) -> str:
    """The agent's ``JSON_QUOTES`` form as JSON: its JSON library quotes strings with double
    quotes but leaves keys of letters, digits and ``_`` bare (``{"state":{"reported":{temp:
    "42"}}}``, publishShadow), and writes control characters in strings as they are."""
    return _BARE_KEY_RE.sub(lambda m: f'"{m[1]}"{m[2]}' if m[1] else m[0], text)


def parse_json(payload: bytes, *, limit: int = MAX_PAYLOAD_BYTES, bare_keys: bool = False) -> Any:
    """Parse a payload after checking its size and nesting (NaN and Infinity refused).

    With ``bare_keys``, the agent's ``JSON_QUOTES`` form is read too (``_quote_bare_keys``).

    Raises:
        TooLarge: over ``limit`` bytes.
        Invalid: not UTF-8 JSON, or nested deeper than MAX_DEPTH (``field`` is ``payload``).
    """
    if len(payload) > limit:
        raise TooLarge(f"payload of {len(payload)} bytes is over {limit}", field="payload")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("payload is not UTF-8", field="payload") from exc
    _check_depth(text, MAX_DEPTH)
    try:
        if bare_keys:
            return json.loads(_quote_bare_keys(text), parse_constant=_no_constants, strict=False)
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise Invalid(f"payload is not JSON: {exc}", field="payload") from exc


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{field} must be a JSON object", field=field)
    return value


def _string(body: dict[str, Any], name: str, *, limit: int, field: str | None = None) -> str:
    value = body.get(name)
    where = field or name
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} must be a non-empty string, got {value!r:.80}", field=where)
    if len(value) > limit:
        raise Invalid(f"{where} is longer than {limit} characters", field=where)
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{field} must be a number, got {value!r:.80}", field=field)
    if not math.isfinite(value):
        raise Invalid(f"{field} must be finite", field=field)
    return float(value)


def _int(value: Any, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(
            f"{field} must be a whole number {low}..{high}, got {value!r:.80}", field=field
        )
    return value


# -- messages from the device -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncDown:
    since: float  # epoch seconds; the epoch itself on the first sync


def parse_sync_down(payload: bytes) -> SyncDown:
    body = _object(parse_json(payload), "payload")
    value = body.get("timestamp")
    if not isinstance(value, str):
        raise Invalid("timestamp must be an ISO-8601 time", field="timestamp")
    return SyncDown(parse_ts(value, "timestamp"))


class ChangeCommand(StrEnum):
    """The database operation behind a change (the agent's db trigger names)."""

    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Change:
    cmd: ChangeCommand
    key: str  # the item's local key; echoed in the SYNC acknowledgement
    item: dict[str, Any] = field(hash=False)

    @property
    def model(self) -> str | None:
        """The item's table (``_type``): Store, Log, Device..."""
        value = self.item.get("_type")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class SyncToDynamo:
    seq: int
    changes: tuple[Change, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(change.key for change in self.changes)


def parse_sync_to_dynamo(payload: bytes) -> SyncToDynamo:
    """``{"seq": N, "changes": [{"cmd", "key", "item"}]}``.

    Raises:
        Invalid: naming the field, e.g. ``changes[2].cmd``.
    """
    body = _object(parse_json(payload), "payload")
    seq = _int(body.get("seq"), "seq", low=0, high=MAX_SEQ)
    raw = body.get("changes")
    if not isinstance(raw, list):
        raise Invalid("changes must be an array", field="changes")
    if len(raw) > MAX_CHANGES:
        raise Invalid(f"more than {MAX_CHANGES} changes in one batch", field="changes")
    changes = []
    for i, entry in enumerate(raw):
        where = f"changes[{i}]"
        entry = _object(entry, where)
        try:
            cmd = ChangeCommand(str(entry.get("cmd")))
        except ValueError:
            raise Invalid(
                f"{where}.cmd must be one of {', '.join(c.value for c in ChangeCommand)}",
                field=f"{where}.cmd",
            ) from None
        key = _string(entry, "key", limit=MAX_SYNC_KEY_CHARS, field=f"{where}.key")
        item = _object(entry.get("item"), f"{where}.item")
        changes.append(Change(cmd, key, item))
    return SyncToDynamo(seq, tuple(changes))


def _dimension_sets(value: Any, device_id: str) -> tuple[dict[str, str], ...]:
    """``[{...}, ...]`` or one ``{...}``; ``{}`` is "no dimensions"; ``${deviceId}`` expanded."""
    if value is None:
        return ({"Device": device_id},)
    sets = [value] if isinstance(value, dict) else value
    if not isinstance(sets, list) or not sets:
        raise Invalid(
            "dimensions must be an object or a non-empty array of objects", field="dimensions"
        )
    if len(sets) > MAX_DIMENSION_SETS:
        raise Invalid(f"more than {MAX_DIMENSION_SETS} dimension sets", field="dimensions")
    out = []
    for i, entry in enumerate(sets):
        where = f"dimensions[{i}]"
        entry = _object(entry, where)
        if len(entry) > MAX_DIMENSIONS:
            raise Invalid(f"{where} has more than {MAX_DIMENSIONS} dimensions", field=where)
        dims: dict[str, str] = {}
        for name, raw in entry.items():
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise Invalid(
                    f"{where}.{name} must be a string or a number", field=f"{where}.{name}"
                )
            text = str(raw).replace(DEVICE_ID_PLACEHOLDER, device_id)
            if (
                not name
                or len(name) > MAX_METRIC_NAME_CHARS
                or len(text) > MAX_DIMENSION_VALUE_CHARS
            ):
                raise Invalid(f"{where}.{name[:64]} is too long or empty", field=where)
            dims[name] = text
        out.append(dims)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class MetricSet:
    metric: str
    value: float
    dimensions: tuple[dict[str, str], ...]  # expanded; ({},) means "no dimensions"
    buffer_elapsed_s: float | None  # the agent's hint to buffer in the cloud; not needed here


def parse_metric_set(payload: bytes, *, device_id: str) -> MetricSet:
    """``{"metric", "value", "dimensions", "buffer": {"elapsed"}}`` (ioSetMetric).

    The agent writes ``value`` with ``%g``, so a NaN arrives as ``nan``, which is not JSON:
    refused as a malformed payload.
    """
    body = _object(parse_json(payload), "payload")
    metric = _string(body, "metric", limit=MAX_METRIC_NAME_CHARS)
    value = _number(body.get("value"), "value")
    dimensions = _dimension_sets(body.get("dimensions"), device_id)
    elapsed = None
    if "buffer" in body and body["buffer"] is not None:
        buffer = _object(body["buffer"], "buffer")
        if "elapsed" in buffer:
            elapsed = _number(buffer["elapsed"], "buffer.elapsed")
    return MetricSet(metric, value, dimensions, elapsed)


class Statistic(StrEnum):
    """ioGetMetric's statistics (ioto.h), plus sum."""

    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    CURRENT = "current"


@dataclass(frozen=True, slots=True)
class MetricGet:
    metric: str
    dimensions: tuple[dict[str, str], ...]
    period_s: int
    statistic: Statistic


def parse_metric_get(payload: bytes, *, device_id: str) -> MetricGet:
    """``{"metric", "dimensions", "period", "statistic"}`` (ioGetMetric)."""
    body = _object(parse_json(payload), "payload")
    metric = _string(body, "metric", limit=MAX_METRIC_NAME_CHARS)
    dimensions = _dimension_sets(body.get("dimensions"), device_id)
    period = _int(body.get("period"), "period", low=1, high=MAX_PERIOD_S)
    try:
        statistic = Statistic(str(body.get("statistic")))
    except ValueError:
        raise Invalid(
            f"statistic must be one of {', '.join(s.value for s in Statistic)}", field="statistic"
        ) from None
    return MetricGet(metric, dimensions, period, statistic)


def format_metric_reply(value: float | None) -> bytes:
    """The plain-text answer to metric/get: a number, or ``nan`` when there is no data.

    The agent reads it with ``strtod``, which takes ``nan`` as NaN: ioGetMetric's documented
    "cannot be found" value.
    """
    if value is None or not math.isfinite(value):
        return b"nan"
    return repr(float(value)).encode("ascii")


def parse_store_get(payload: bytes) -> str:
    """``{"key"}`` (ioGet without sync, ioGetNum and ioGetBool always): the Store key."""
    body = _object(parse_json(payload), "payload")
    return _string(body, "key", limit=MAX_SYNC_KEY_CHARS)


def format_store_reply(value: Any) -> bytes:
    """The plain-text answer to store/get: the value as ioGet, ioGetNum (``strtod``) and
    ioGetBool (``true``/``false``) read it; nothing for a key the Store does not hold."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, float):
        return repr(value).encode("ascii")
    if isinstance(value, str):
        return value.encode("utf-8")
    return _dump(value)


@dataclass(frozen=True, slots=True)
class StoreSet:
    key: str
    value: Any
    type: str


def parse_store_set(payload: bytes) -> StoreSet:
    """``{"key", "value", "type"}`` (ioSet/ioSetNum/ioSetBool without sync)."""
    body = _object(parse_json(payload), "payload")
    key = _string(body, "key", limit=MAX_SYNC_KEY_CHARS)
    kind = body.get("type", "string")
    if kind not in _STORE_TYPES:
        raise Invalid(f"type must be one of {', '.join(_STORE_TYPES)}", field="type")
    if "value" not in body:
        raise Invalid("value is missing", field="value")
    return StoreSet(key, store_value(body["value"], kind), kind)


_STORE_TYPES = ("string", "number", "boolean", "object")


def store_value(value: Any, kind: Any) -> Any:
    """A Store item's value as the type it names.

    The agent sends numbers and booleans as text when syncing (``'%g'``: ``"42"``, ``"1"``)
    and as JSON numbers over store/set (``1.000000`` for true). Both are read here.

    Raises:
        Invalid: ``value`` does not fit ``type``.
    """
    if kind in (None, "string"):
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "number":
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise Invalid(f"value {value!r:.80} is not a number", field="value") from None
        else:
            number = _number(value, "value")
        if not math.isfinite(number):
            raise Invalid("value must be finite", field="value")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "1.0", "1.000000"):
            return True
        if text in ("false", "0", "0.0", "0.000000"):
            return False
        raise Invalid(f"value {value!r:.80} is not a boolean", field="value")
    if kind == "object":
        return value
    raise Invalid(f"type must be one of {', '.join(_STORE_TYPES)}", field="type")


@dataclass(frozen=True, slots=True)
class ShadowUpdate:
    reported: dict[str, Any] | None  # None: ``"reported": null`` deletes the reported state
    client_token: str | None


def _client_token(body: dict[str, Any]) -> str | None:
    token = body.get("clientToken")
    if token is None:
        return None
    if not isinstance(token, str) or len(token) > MAX_CLIENT_TOKEN_CHARS:
        raise Invalid(
            f"clientToken must be a string of at most {MAX_CLIENT_TOKEN_CHARS} characters",
            field="clientToken",
        )
    return token


def parse_shadow_request(payload: bytes) -> str | None:
    """A get or delete: empty (the agent) or ``{"clientToken"}``; answers the client token."""
    if not payload.strip():
        return None
    return _client_token(_object(parse_json(payload, bare_keys=True), "payload"))


def parse_shadow_update(payload: bytes) -> ShadowUpdate:
    """``{"state": {"reported": {...}}, "clientToken"?}`` in JSON or the agent's bare-key form.

    Only ``reported`` is taken: a device reports its state, and ``desired`` (set by apps on
    AWS) has no use here. A ``version`` is accepted and not checked.

    Raises:
        Invalid: not an object, no ``state.reported``, a ``desired``, over the depth.
        TooLarge: the state is over MAX_SHADOW_STATE_BYTES.
    """
    body = _object(parse_json(payload, bare_keys=True), "payload")
    token = _client_token(body)
    state = _object(body.get("state"), "state")
    if "desired" in state:
        raise Invalid("state.desired is not supported: a device reports its state", field="state")
    if "reported" not in state:
        raise Invalid("Missing required node: state.reported", field="state.reported")
    reported = state["reported"]
    if reported is not None:
        reported = _object(reported, "state.reported")
        size = len(_dump(reported))
        if size > MAX_SHADOW_STATE_BYTES:
            raise TooLarge(
                f"the state is {size} bytes, over {MAX_SHADOW_STATE_BYTES}", field="state"
            )
        _check_depth(_dump(reported).decode("utf-8"), MAX_SHADOW_DEPTH)
    return ShadowUpdate(reported, token)


def _shadow_metadata(state: Any, stamp: int) -> Any:
    if isinstance(state, dict):
        return {key: _shadow_metadata(value, stamp) for key, value in state.items()}
    return {"timestamp": stamp}


def shadow_document(
    reported: dict[str, Any],
    *,
    version: int,
    updated: float,
    now: float,
    client_token: str | None,
) -> bytes:
    """get/accepted (the whole state) and update/accepted (the update), as AWS IoT writes
    them; times are epoch seconds."""
    body: dict[str, Any] = {
        "state": {"reported": reported},
        "metadata": {"reported": _shadow_metadata(reported, int(updated))},
        "version": version,
        "timestamp": int(now),
    }
    if client_token is not None:
        body["clientToken"] = client_token
    return _dump(body)


def shadow_deleted(*, version: int, now: float, client_token: str | None) -> bytes:
    body: dict[str, Any] = {"version": version, "timestamp": int(now)}
    if client_token is not None:
        body["clientToken"] = client_token
    return _dump(body)


def shadow_error(code: int, message: str, *, now: float, client_token: str | None) -> bytes:
    """…/rejected: ``{"code", "message", "timestamp"}`` (the agent logs the message)."""
    body: dict[str, Any] = {"code": code, "message": message, "timestamp": int(now)}
    if client_token is not None:
        body["clientToken"] = client_token
    return _dump(body)


# -- messages to the device -------------------------------------------------------------------


def format_iso_ms(ts: float) -> str:
    """``2025-10-09T08:53:20.000Z``: the agent's own date form (compared as strings)."""
    return format_ts_ms(ts)


def _dump(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def syncdown_ack(updated: float) -> bytes:
    """sync/SYNCDOWN: the agent records ``updated`` as its last sync and becomes ready."""
    return _dump({"updated": format_iso_ms(updated)})


def sync_ack(seq: int, keys: tuple[str, ...] | list[str], updated: float) -> bytes:
    """sync/SYNC: acknowledges the changes of batch ``seq`` with these keys."""
    return _dump({"seq": seq, "keys": list(keys), "updated": format_iso_ms(updated)})


def _store_type(value: Any) -> tuple[Any, str]:
    if isinstance(value, bool):
        return ("true" if value else "false"), "boolean"
    if isinstance(value, int | float):
        return value, "number"
    if isinstance(value, str):
        return value, "string"
    return value, "object"


def store_item(
    *, account_id: str, device_id: str, key: str, value: Any, created: float, updated: float
) -> dict[str, Any]:
    """A Store row (CloudSchema ``Store``, ``sk = s#{key}``) to push as sync/UPSERT.

    Booleans travel as ``"true"``/``"false"`` (what ioGetBool compares with), numbers as
    JSON numbers, strings as they are, anything else as an object with type ``object``.
    """
    wire_value, kind = _store_type(value)
    return {
        "sk": f"s#{key}",
        "_type": "Store",
        "accountId": account_id,
        "deviceId": device_id,
        "key": key,
        "value": wire_value,
        "type": kind,
        "created": format_iso_ms(created),
        "updated": format_iso_ms(updated),
    }


def command_item(
    *,
    account_id: str,
    device_id: str,
    command_id: str,
    command: str,
    args: dict[str, Any] | None,
    created: float,
    description: str | None = None,
) -> dict[str, Any]:
    """A Command row (CloudSchema ``Command``) to push as sync/UPSERT.

    The agent acts on ``command``: reboot, release, reprovision, update, or anything else
    as the event ``device:command:{command}``.
    """
    item: dict[str, Any] = {
        "sk": f"command#{account_id}#{device_id}#{command_id}",
        "_type": "Command",
        "id": command_id,
        "accountId": account_id,
        "deviceId": device_id,
        "command": command,
        "args": args if args is not None else {},
        "created": format_iso_ms(created),
        "updated": format_iso_ms(created),
    }
    if description is not None:
        item["description"] = description
    return item


def sync_item_message(item: dict[str, Any]) -> bytes:
    """The payload of sync/INSERT|UPSERT|MODIFY|REMOVE: the item itself."""
    for name in ("sk", "updated", "_type"):
        if not isinstance(item.get(name), str):
            raise ValueError(f"a sync item needs a string {name!r}")
    return _dump(item)


def release_message(now: float) -> bytes:
    """provision/release: milliseconds since the epoch; the agent ignores it after 10 s."""
    return str(int(now * 1000)).encode("ascii")


def throttle_message(now: float, *, close: bool = False) -> bytes:
    """mqtt/throttle: ``timestamp`` in ms (stale after 30 s); ``close`` blocks for an hour."""
    body: dict[str, Any] = {"timestamp": int(now * 1000)}
    if close:
        body["close"] = True
    return _dump(body)
