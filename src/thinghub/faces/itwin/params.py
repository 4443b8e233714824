"""Params of the iTwin socket methods (pydantic, at the edge only).

One model per method (or family), as the seed documents them. Every model ignores params
it does not know (Bentley's client adds some; `smoothing` is accepted and unused), and
takes the optional `projectIds` array every method may carry (one project per request, as
the seed's Project FAQ says). Validation errors become JSON-RPC -32602 naming the param
(methods.py). Dates are read into epoch seconds; metric params stay raw here and are read
by domain/deltas.parse_delta_params, which names the bad one.

uploadData's entries are not validated by the model: a bad entry must not fail the whole
request, it is left out of `successfullyProcessedObs` and named in the reply (issue 9).
read_upload_entries does that, entry by entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from thinghub.domain import errors
from thinghub.domain.clock import MAX_EPOCH_S, MIN_EPOCH_S
from thinghub.faces.itwin.jsonrpc import RpcError, reply_id
from thinghub.faces.itwin.timestamps import parse_time

__all__ = [
    "MAX_AUTH_CODE_CHARS",
    "MAX_ENTITY_ID_CHARS",
    "MAX_IDS_PER_REQUEST",
    "MAX_LIMIT_SIZE",
    "MAX_METRIC_ID_CHARS",
    "MAX_PROPS",
    "MAX_UPLOAD_ENTRIES",
    "MAX_VALUES_PER_ENTRY",
    "AuthenticateParams",
    "CreateDeviceParams",
    "CreateNodeParams",
    "CreateSensorParams",
    "DataParams",
    "GetDevicesParams",
    "GetMetricsParams",
    "GetNodesParams",
    "GetRawMetricsParams",
    "GetSensorsParams",
    "GetUnitsParams",
    "Limit",
    "NoParams",
    "ObservationsParams",
    "RejectedEntry",
    "RpcParams",
    "SubscribeDataParams",
    "SubscribeDevicesParams",
    "SubscribeNodesParams",
    "SubscribeSensorsParams",
    "SummaryParams",
    "UnsubscribeParams",
    "UpdateDeviceParams",
    "UpdateNodeParams",
    "UpdateSensorParams",
    "UploadDataParams",
    "UploadEntry",
    "check_upload_entries",
    "read_upload_entries",
]

# Bounds on untrusted params, checked before anything walks them.
MAX_AUTH_CODE_CHARS = 8192  # an API token or a JWT
MAX_ENTITY_ID_CHARS = 512  # iTwin ids are paths: /fn/6C4F6D/node/dgsimlogger/032432/device/...
MAX_IDS_PER_REQUEST = 1000  # ids in one getSensors / getMetrics / subscribe
MAX_PROPS = 256  # props of one entity
MAX_UPLOAD_ENTRIES = 100_000  # observations in one uploadData (the frame limit bounds bytes)
MAX_VALUES_PER_ENTRY = 256  # metrics of one observation
MAX_METRIC_ID_CHARS = 128  # characters of a metric id
MAX_LIMIT_SIZE = 1_000_000  # limit.params.size


def _iso_time(value: object) -> float:
    try:
        return parse_time(value, "date")
    except errors.Invalid as exc:
        raise ValueError(f"must be an ISO-8601 date, got {value!r}") from exc


IsoTime = Annotated[
    float,
    BeforeValidator(_iso_time),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
EntityId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ENTITY_ID_CHARS)]
EntityIds = Annotated[list[EntityId], Field(max_length=MAX_IDS_PER_REQUEST)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Props = Annotated[dict[str, Any], Field(max_length=MAX_PROPS)]


class RpcParams(BaseModel):
    """The base of every method's params: unknown params ignored, `projectIds` read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    projectIds: list[EntityId] | None = Field(
        default=None, description="the project (one id); the account's default when omitted"
    )

    @field_validator("projectIds", mode="before")
    @classmethod
    def _one_project(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]  # a single id where the array was expected: tolerated
        if isinstance(value, list):
            # Bentley's client sends `[authState.getProjectId()]` on every call; without a
            # project that is `[undefined]`, which JSON.stringify writes as `[null]`.
            value = [item for item in value if item is not None] or None
        if isinstance(value, list) and len(value) > 1:
            raise ValueError("only one projectId per request is supported")
        return value

    @property
    def project_id(self) -> str | None:
        """The requested project id, or None for the default project."""
        return self.projectIds[0] if self.projectIds else None


class NoParams(RpcParams):
    """help, time."""


class AuthenticateParams(RpcParams):
    code: StrictStr = Field(
        min_length=1, max_length=MAX_AUTH_CODE_CHARS, description="an API key or a JWT"
    )


class GetNodesParams(RpcParams):
    nodes: EntityIds | None = Field(default=None, description="node ids; all when omitted")


class GetDevicesParams(RpcParams):
    devices: EntityIds | None = Field(default=None, description="device ids; all when omitted")


class GetSensorsParams(RpcParams):
    sensors: EntityIds | None = Field(default=None, description="sensor ids; all when omitted")


class SubscribeNodesParams(GetNodesParams):
    pass


class SubscribeDevicesParams(GetDevicesParams):
    pass


class SubscribeSensorsParams(GetSensorsParams):
    pass


class UnsubscribeParams(RpcParams):
    # The seed calls it "the subscriptionId returned by the subscription API request".
    id: StrictStr | int | float = Field(
        description="the id of the subscribe request (or `subscriptionId`)",
        validation_alias=AliasChoices("id", "subscriptionId"),
    )

    @field_validator("id", mode="before")
    @classmethod
    def _as_answered(cls, value: object) -> object:
        # The subscription is known by its answered id: "7" and 7 name the same one.
        if value.__class__ is bool:
            raise ValueError("must be the id of the subscribe request")
        try:
            return reply_id(value)
        except RpcError:
            raise ValueError("must be the id of the subscribe request") from None


class CreateNodeParams(RpcParams):
    node: EntityId = Field(description="the node id to create, e.g. /fn/02DDXX/node")
    type: Name = Field(description="the connection type, e.g. THREAD")
    props: Props = Field(description="NAME, SERIAL_NO, VERSION (required), ...")

    @field_validator("props")
    @classmethod
    def _version(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("VERSION"), str) or not value["VERSION"]:
            raise ValueError("VERSION (the client software version) is required")
        return value


class CreateDeviceParams(RpcParams):
    device: EntityId = Field(description="the device id to create")
    type: Name = Field(description="the device type, e.g. DEMO")
    props: Props = Field(description="NAME, NODE_ID (required), ...")

    @field_validator("props")
    @classmethod
    def _node(cls, value: dict[str, Any]) -> dict[str, Any]:
        node = value.get("NODE_ID")
        if not isinstance(node, str) or not 0 < len(node) <= MAX_ENTITY_ID_CHARS:
            raise ValueError("NODE_ID (the connection the device is attached to) is required")
        return value


class CreateSensorParams(RpcParams):
    sensor: EntityId = Field(description="the sensor id to create")
    type: Name = Field(description="the sensor type")
    observationType: Name | None = Field(default=None, description="the observation type")
    props: Props = Field(default_factory=dict, description="NAME, ...")


class UpdateNodeParams(RpcParams):
    node: EntityId = Field(description="the node id")
    props: Props = Field(description="props to overwrite")


class UpdateDeviceParams(RpcParams):
    device: EntityId = Field(description="the device id")
    props: Props = Field(description="props to overwrite")


class UpdateSensorParams(RpcParams):
    sensor: EntityId = Field(description="the sensor id")
    props: Props = Field(description="props to overwrite")


class GetRawMetricsParams(RpcParams):
    sensors: EntityIds | None = Field(default=None, description="sensor ids")
    types: Annotated[list[Name], Field(max_length=MAX_IDS_PER_REQUEST)] | None = Field(
        default=None, description="sensor types"
    )

    @model_validator(mode="after")
    def _one_of(self) -> GetRawMetricsParams:
        if self.sensors is None and self.types is None:
            raise ValueError("give sensors or types")
        return self


class GetMetricsParams(RpcParams):
    sensors: EntityIds = Field(description="sensor ids")


class GetUnitsParams(RpcParams):
    metrics: Annotated[list[Name], Field(max_length=MAX_IDS_PER_REQUEST)] = Field(
        description="metric ids"
    )


class Limit(BaseModel):
    """`{function: "first"|"last", params: {size: n}}`; the string "first"/"last" means size 1."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    function: Literal["first", "last"]
    size: int = 1

    @model_validator(mode="before")
    @classmethod
    def _shapes(cls, value: object) -> object:
        if isinstance(value, str):
            return {"function": value}
        if isinstance(value, dict):
            inner = value.get("params")
            size = inner.get("size", 1) if isinstance(inner, dict) else 1
            if size.__class__ is not int or not 1 <= size <= MAX_LIMIT_SIZE:
                raise ValueError(f"params.size must be an integer 1..{MAX_LIMIT_SIZE}")
            return {"function": value.get("function"), "size": size}
        return value


class _Range(RpcParams):
    startDate: IsoTime | None = Field(default=None, description="ISO date; from the first")
    endDate: IsoTime | None = Field(default=None, description="ISO date; to the latest")
    limit: Limit | None = Field(default=None, description='{function: "first"|"last"}')

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if (
            self.startDate is not None
            and self.endDate is not None
            and self.endDate < self.startDate
        ):
            raise ValueError("endDate is before startDate")
        return self


class DataParams(_Range):
    """getData: one sensor, one metric, in one unit."""

    sensor: EntityId = Field(description="the sensor id")
    metric: Name = Field(description="a metric id of the sensor (getMetrics)")
    unit: Name = Field(description="a unit id of the metric (getUnits)")
    params: dict[str, Any] | None = Field(
        default=None, description="metric params: ZERO_DATE, START_DATE, dt: {value, unit?}"
    )


class ObservationsParams(_Range):
    """getObservations: one sensor's raw observations, in its raw metrics and units."""

    sensor: EntityId = Field(description="the sensor id")
    metric: Name | None = Field(default=None, description="one raw metric; all when omitted")


class SummaryParams(_Range):
    """getObservationsSummary: the first and last observation of one or more sensors."""

    sensor: EntityId | None = Field(default=None, description="a sensor id")
    sensors: EntityIds | None = Field(default=None, description="sensor ids")
    metric: Name | None = Field(default=None, description="one metric; raw metrics when omitted")
    unit: Name | None = Field(
        default=None, description="the unit; the metric's raw unit when omitted"
    )

    @model_validator(mode="after")
    def _some(self) -> SummaryParams:
        if self.sensor is None and not self.sensors:
            raise ValueError("give sensor or sensors")
        return self

    @property
    def sensor_ids(self) -> list[str]:
        return [*([self.sensor] if self.sensor else []), *(self.sensors or [])]


class SubscribeDataParams(RpcParams):
    sensors: Annotated[list[EntityId], Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)] = Field(
        description="sensor ids"
    )
    metric: Name = Field(description="a metric id of the sensors")
    unit: Name = Field(description="the unit pushes are converted to")
    params: dict[str, Any] | None = Field(default=None, description="metric params")


class UploadDataParams(RpcParams):
    data: list[Any] = Field(
        min_length=1,
        max_length=MAX_UPLOAD_ENTRIES,
        description="[{sensorId, timestamp, values: {metric: number}}]",
    )


@dataclass(frozen=True, slots=True)
class UploadEntry:
    """One observation to store: `values` maps raw metric ids to finite numbers."""

    index: int
    sensor_id: str
    ts: float
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """An uploadData entry left out, and why (`path` like `data[3].timestamp`)."""

    index: int
    path: str
    message: str
    sensor_id: str | None = None


from_iso = datetime.fromisoformat


def read_upload_entries(
    data: Sequence[Any], start: int = 0
) -> tuple[list[UploadEntry], list[RejectedEntry]]:
    """Check uploadData entries one by one: the good ones, and the bad ones named (`data`
    may be a slice of the request's entries that begins at index `start`)."""
    good: list[UploadEntry] = []
    append = good.append
    bad = check_upload_entries(
        data,
        start,
        lambda index, sensor, ts, values: append(UploadEntry(index, sensor, ts, values)),
    )
    return good, bad


def check_upload_entries(
    data: Sequence[Any], start: int, accept: Callable[[int, str, float, dict[str, float]], None]
) -> list[RejectedEntry]:
    """Check uploadData entries one by one: each good one is given to `accept` (index,
    sensorId, epoch seconds, values), the bad ones are returned, named.

    An entry needs `sensorId` (a string), `timestamp` (ISO date) and `values` (a non-empty
    object of metric -> finite number; bools are not numbers). Sensor existence is the
    caller's check.
    """
    bad: list[RejectedEntry] = []
    # A path is printed only for an entry that is refused: this loop runs once per value of
    # an upload (100,000 in one request).
    for index, entry in enumerate(data, start):
        if entry.__class__ is not dict:
            bad.append(RejectedEntry(index, f"data[{index}]", "must be an object"))
            continue
        sensor = entry.get("sensorId")
        if sensor.__class__ is not str or not 0 < len(sensor) <= MAX_ENTITY_ID_CHARS:
            bad.append(RejectedEntry(index, f"data[{index}].sensorId", "must be a sensor id"))
            continue
        stamp = entry.get("timestamp")
        ts = None
        # The common form (2024-02-20T04:35:23.653Z) read here, as parse_time reads it (its
        # call and checks cost three times the parse itself); anything else goes through it.
        if stamp.__class__ is str and len(stamp) >= 20 and stamp[4] == "-" and stamp[-1] == "Z":
            try:
                ts = from_iso(stamp).timestamp()
            except ValueError:
                pass
            else:
                if not MIN_EPOCH_S <= ts <= MAX_EPOCH_S:
                    ts = None
        try:
            if ts is None:
                ts = parse_time(stamp, "timestamp")
        except errors.Invalid:
            field = f"data[{index}].timestamp"
            try:
                parse_time(entry.get("timestamp"), field)
            except errors.Invalid as exc:  # the same error, naming the entry
                bad.append(RejectedEntry(index, field, exc.message, sensor))
            continue
        try:
            values = _read_values(entry.get("values"))
        except ValueError as exc:
            bad.append(RejectedEntry(index, f"data[{index}].values", str(exc), sensor))
            continue
        accept(index, sensor, ts, values)
    return bad


def _read_values(values: object) -> dict[str, float]:
    if not isinstance(values, dict) or not values:
        raise ValueError("must be a non-empty object of metric to number")
    if len(values) > MAX_VALUES_PER_ENTRY:
        raise ValueError(f"has more than {MAX_VALUES_PER_ENTRY} metrics")
    for key, value in values.items():  # the common case: every value a finite float
        if value.__class__ is not float or not -math.inf < value < math.inf:
            break
        if not 0 < len(key) <= MAX_METRIC_ID_CHARS:
            raise ValueError(f"metric ids are 1 to {MAX_METRIC_ID_CHARS} characters")
    else:
        return values  # the request's own object, parsed for this request alone
    out: dict[str, float] = {}
    for key, value in values.items():
        if not 0 < len(key) <= MAX_METRIC_ID_CHARS:
            raise ValueError(f"metric ids are 1 to {MAX_METRIC_ID_CHARS} characters")
        if value.__class__ is float:  # the common case: one comparison rules out nan and inf
            if not -math.inf < value < math.inf:
                raise ValueError(f"{key} must be a finite number")
            out[key] = value
            continue
        if value.__class__ is bool or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{key} is out of range") from None
        if not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number")
        out[key] = number
    return out
