"""Telemetry messages, stored once whole, and the observations derived from their numbers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from thinghub.domain.json_depth import DEFAULT_MAX_JSON_DEPTH, exceeds_depth

__all__ = [
    "METRIC_NAME_MAX_CHARS",
    "Observation",
    "SeriesPoint",
    "TelemetryMessage",
    "TelemetrySeries",
    "decode_body",
    "observation_object",
    "observation_values",
    "observations_of",
]

#: The longest metric name (the field's name, after its component's) an observation may have,
#: in characters: what the store keeps. A field with a longer name, or one holding NUL (which
#: PostgreSQL text cannot hold), is no observation; its message is stored all the same.
METRIC_NAME_MAX_CHARS = 256


@dataclass(frozen=True, slots=True)
class TelemetryMessage:
    """One device-to-cloud message.

    `body` is the decoded JSON value when the payload is JSON, else the text (or None when
    the payload is not UTF-8; `raw` keeps the bytes either way). A payload nested deeper than
    max_json_depth is never parsed: its body is the text and `depth_limit` the limit it
    exceeded.
    """

    account_id: str
    device_id: str
    enqueued_at: float
    body: Any
    raw: bytes
    properties: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    component: str | None = None
    project: str | None = None
    deployment: str | None = None
    source: str = "mqtt"  # mqtt | http | central | ...
    # The body's JSON text when the payload itself was that JSON: stored as is, so the body
    # is not serialized a second time (None: serialize `body`).
    body_json: bytes | None = None
    depth_limit: int | None = None


#: One message of a TelemetrySeries: its time (epoch seconds), its body (a flat object of
#: metric to finite float) and that body's JSON text.
SeriesPoint = tuple[float, dict[str, float], str]


@dataclass(frozen=True, slots=True)
class TelemetrySeries:
    """Messages of one device (and component) from one source that carry no properties and
    no ids, each a flat object of finite floats: what an upload stores, one message per
    entry, without an object per message.

    Stored, a point is the row a TelemetryMessage with the same fields would be (`body_json`
    the text, `raw` the same bytes), and its observations are observation_values' of it.
    """

    account_id: str
    device_id: str
    project: str | None
    deployment: str | None
    component: str | None
    source: str
    points: list[SeriesPoint]

    def messages(self) -> list[TelemetryMessage]:
        """The points as messages (what a store without a series path writes)."""
        out = []
        for ts, body, text in self.points:
            raw = text.encode()
            out.append(
                TelemetryMessage(
                    self.account_id,
                    self.device_id,
                    ts,
                    body,
                    raw,
                    {},
                    None,
                    None,
                    None,
                    None,
                    self.component,
                    self.project,
                    self.deployment,
                    self.source,
                    raw,
                    None,
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class Observation:
    """One numeric value of one metric of one entity at one time."""

    account_id: str
    entity_id: str
    metric: str
    ts: float
    value: float


def decode_body(
    raw: bytes, content_type: str | None = None, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> Any:
    """JSON when the payload parses as JSON (and nests at most `max_depth` levels), else UTF-8
    text, else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    stripped = text.strip()
    if exceeds_depth(raw, max_depth):
        return text
    if (
        stripped[:1] in ("{", "[", '"')
        or (content_type or "").endswith("json")
        or _looks_scalar(stripped)
    ):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def _looks_scalar(text: str) -> bool:
    return text in ("true", "false", "null") or text[:1].isdigit() or text[:1] == "-"


_NUMBERS = (int, float)


def observations_of(message: TelemetryMessage) -> list[Observation]:
    """Every finite numeric field of a flat object body (bools are not numbers here).

    A component's fields are named `component.field`, so PnP components stay apart.
    """
    return [
        Observation(message.account_id, message.device_id, metric, message.enqueued_at, value)
        for metric, value in observation_values(message)
    ]


def observation_object(message: TelemetryMessage) -> dict[str, float]:
    """observation_values as a dict {metric: value} (what an observation set holds).

    The common device message takes a shorter way: its body is a JSON object parsed from its
    own text (`body_json`), no component, and a text shorter than the longest metric name
    without an escaped NUL, so no key can break the naming rule; then every int and finite
    float of the body is an observation. Anything else goes through observation_values.
    """
    body = message.body
    raw = message.body_json
    if (
        raw is not None
        and body.__class__ is dict
        and message.component is None
        and len(raw) <= METRIC_NAME_MAX_CHARS
        and b"\\u0000" not in raw
    ):
        try:
            return {
                key: float(value)
                for key, value in body.items()
                if (kind := value.__class__) is int or (kind is float and value - value == 0.0)
            }
        except OverflowError:  # an integer past the float range: the careful way
            pass
    return dict(observation_values(message))


def observation_values(message: TelemetryMessage) -> list[tuple[str, float]]:
    """observations_of as (metric, value) pairs, without an object per observation (what a
    store that writes rows needs)."""
    body = message.body
    if not isinstance(body, dict):
        return []
    prefix = f"{message.component}." if message.component else ""
    out = []
    for key, value in body.items():
        kind = value.__class__
        if (
            kind is not int
            and kind is not float
            and (kind is bool or not isinstance(value, _NUMBERS))
        ):
            continue
        metric = prefix + key if prefix else key
        if len(metric) > METRIC_NAME_MAX_CHARS or "\x00" in metric:
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer past the float range: not an observation
            continue
        if kind is int or math.isfinite(number):
            out.append((metric, number))
    return out
