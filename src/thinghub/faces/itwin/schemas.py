"""Wire schemas of the iTwin REST API and Sensor Data Service (pydantic, at the edge only).

Bodies (read with body.read_json_body first, so the seed's trailing commas pass):

- `POST /integrations/integrate?projectIds=` IntegrateRequest, in the seed's two forms: a new
  connection (`integration.changeState: "new"`) with devices and sensors, or an existing one
  (`integration.nodeId`) with devices; each device and sensor carries `changeState`
  new/update/remove and an optional `refId` to find it again for update/remove.
- `POST /data/upload` UploadRequest `{observations: [{sensorId, timestamp, values}]}`.
- `POST /sensors/metrics?projectIds=&filters=raw` SensorMetricsRequest `{ids}`.

Errors, in the seed's two shapes:

- `{"errors": [{"message", "path"}]}` for bad bodies and credentials (errors_body,
  validation_errors_body); 400, or 401/403 with path "Authorization";
- `{"error": {"code": "InvalidProcessIntegrationRequest", "message"}}` for integrations
  (IntegrationError, from check_integration): 400 when a new device or sensor has no valid
  INTEGRATION_ID (the seed's 400 example), 422 when the integration has neither a
  `changeState` nor a `nodeId`, or its nodeId is not valid (the seed: "Cannot process
  integration ensure the provided nodeId is valid.").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
)

from thinghub.domain import errors
from thinghub.domain.metrics import generic_sensor_metrics
from thinghub.faces.itwin._paths import error_paths
from thinghub.faces.itwin.ids import EntityKind, check_itwin_id, kind_of
from thinghub.faces.itwin.params import (
    MAX_ENTITY_ID_CHARS,
    MAX_IDS_PER_REQUEST,
    MAX_PROPS,
    MAX_VALUES_PER_ENTRY,
)
from thinghub.faces.itwin.timestamps import parse_time

__all__ = [
    "DEVICE_INTEGRATION_IDS",
    "GENERIC_SENSOR",
    "INTEGRATION_ERROR_CODE",
    "INVALID_NODE_ID",
    "MAX_INTEGRATION_DEVICES",
    "MAX_PAGE_SIZE",
    "MAX_UPLOAD_OBSERVATIONS",
    "MISSING_INTEGRATION_ID",
    "SENSOR_INTEGRATION_IDS",
    "ChangeState",
    "DeviceChange",
    "EntityProps",
    "IntegrateRequest",
    "Integration",
    "IntegrationError",
    "LocationBody",
    "SensorChange",
    "SensorMetricsRequest",
    "UploadObservation",
    "UploadRequest",
    "check_integration",
    "errors_body",
    "integration_error_body",
    "validation_errors_body",
]

MAX_UPLOAD_OBSERVATIONS: Final = 100_000
MAX_INTEGRATION_DEVICES: Final = 1000  # devices in one integrate, and sensors of one device
MAX_PAGE_SIZE: Final = 1000  # pageSize of the /…/all lists

INTEGRATION_ERROR_CODE: Final = "InvalidProcessIntegrationRequest"
MISSING_INTEGRATION_ID: Final = (
    "Minimum request parameters not provided, new Devices and Sensors must have a valid "
    "`props.INTEGRATION_ID` set."
)
INVALID_NODE_ID: Final = "Cannot process integration ensure the provided nodeId is valid."
GENERIC_SENSOR: Final = "GENERIC_SENSOR_SDE"
# The templates a new device or sensor may name (GET /devices/types, /sensors/types).
DEVICE_INTEGRATION_IDS: Final = frozenset({"IMPORT_DEVICE_SDE", "THINGHUB_DEVICE"})
SENSOR_INTEGRATION_IDS: Final = frozenset({GENERIC_SENSOR, "THINGHUB_SENSOR"})

ChangeState = Literal["new", "update", "remove"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LocationBody(_Body):
    type: StrictStr | None = "Point"
    coordinates: Annotated[list[float | None], Field(max_length=3)] = Field(
        default_factory=list, description="[longitude, latitude, elevation]"
    )


IndexMap = Annotated[dict[str, StrictStr], Field(max_length=256)]


class EntityProps(_Body):
    """Props of a device or sensor in an integration; other props are kept (extra allowed)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    INTEGRATION_ID: StrictStr | None = None
    NAME: Annotated[StrictStr, Field(max_length=200)] | None = None
    LOCATION: LocationBody | None = None
    SERIAL_NO: Annotated[StrictStr, Field(max_length=MAX_ENTITY_ID_CHARS)] | None = None
    NOTES: Annotated[StrictStr, Field(max_length=4000)] | None = None
    KNOWN_METRICS: IndexMap | None = None
    KNOWN_UNITS: IndexMap | None = None
    UNKNOWN_METRICS: IndexMap | None = None
    UNKNOWN_UNITS: IndexMap | None = None

    def all_props(self) -> dict[str, Any]:
        """Every prop given, the known ones and the extra ones, without the unset ones."""
        return self.model_dump(exclude_none=True)


class SensorChange(_Body):
    changeState: ChangeState | None = Field(default=None, description="missing means new")
    refId: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ENTITY_ID_CHARS)] | None = None
    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ENTITY_ID_CHARS)] | None = None
    props: EntityProps = Field(default_factory=EntityProps)

    @property
    def state(self) -> ChangeState:
        return self.changeState or "new"


class DeviceChange(SensorChange):
    sensors: Annotated[list[SensorChange], Field(max_length=MAX_INTEGRATION_DEVICES)] = Field(
        default_factory=list
    )


class Integration(_Body):
    changeState: ChangeState | None = None
    nodeId: Annotated[StrictStr, Field(max_length=MAX_ENTITY_ID_CHARS)] | None = None
    props: Annotated[dict[str, Any], Field(max_length=MAX_PROPS)] = Field(default_factory=dict)
    devices: Annotated[list[DeviceChange], Field(max_length=MAX_INTEGRATION_DEVICES)] = Field(
        default_factory=list
    )


class IntegrateRequest(_Body):
    integration: Integration


class IntegrationError(Exception):
    """An integration the Sensor Data Service refuses: answer `status` with
    integration_error_body(message). `path` names the offending member."""

    def __init__(self, status: int, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path


def check_integration(request: IntegrateRequest) -> None:
    """The seed's rules beyond the schema; the caller then checks what exists.

    Raises:
        IntegrationError: 422 without changeState "new" or a valid nodeId; 400 for a new
            device or sensor without a known INTEGRATION_ID, an update/remove without refId or
            id, or a generic sensor whose metrics and units do not fit (message naming them).
    """
    integration = request.integration
    if integration.nodeId is not None:
        try:
            if kind_of(integration.nodeId, "nodeId") is not EntityKind.NODE:
                raise IntegrationError(422, INVALID_NODE_ID, "integration.nodeId")
        except errors.Invalid:
            raise IntegrationError(422, INVALID_NODE_ID, "integration.nodeId") from None
    elif integration.changeState != "new":
        raise IntegrationError(
            422,
            "Minimum request parameters not provided, the integration needs `changeState` "
            '"new" (a new connection) or the `nodeId` of an existing one.',
            "integration.changeState",
        )
    for d, device in enumerate(integration.devices):
        path = f"integration.devices[{d}]"
        _check_change(device, path, DEVICE_INTEGRATION_IDS)
        for s, sensor in enumerate(device.sensors):
            _check_change(sensor, f"{path}.sensors[{s}]", SENSOR_INTEGRATION_IDS)


def _check_change(change: SensorChange, path: str, known: frozenset[str]) -> None:
    if change.state == "new":
        if change.props.INTEGRATION_ID not in known:
            raise IntegrationError(400, MISSING_INTEGRATION_ID, f"{path}.props.INTEGRATION_ID")
        if change.props.INTEGRATION_ID == GENERIC_SENSOR:
            try:
                generic_sensor_metrics(change.props.all_props())
            except errors.Invalid as exc:
                raise IntegrationError(
                    400, f"{path}.props: {exc.message}", f"{path}.props.{exc.field}"
                ) from None
    elif change.refId is None and change.id is None:
        raise IntegrationError(
            400, f"{path}: changeState {change.state!r} needs a refId or an id", path
        )
    if change.id is not None:
        try:
            check_itwin_id(change.id, f"{path}.id")
        except errors.Invalid as exc:
            raise IntegrationError(400, exc.message, f"{path}.id") from None


# -- /data/upload -----------------------------------------------------------------------------


def _number(value: object) -> float:
    if value.__class__ is bool or not isinstance(value, int | float):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _iso(value: object) -> float:
    try:
        return parse_time(value, "timestamp")
    except errors.Invalid:
        raise ValueError("must be an ISO-8601 date, e.g. 2024-02-20T04:35:23.653Z") from None


Number = Annotated[float, BeforeValidator(_number)]


class UploadObservation(_Body):
    sensorId: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ENTITY_ID_CHARS)]
    timestamp: Annotated[float, BeforeValidator(_iso)]
    values: Annotated[dict[str, Number], Field(max_length=MAX_VALUES_PER_ENTRY)]

    @field_validator("values")
    @classmethod
    def _not_empty(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("must not be empty")
        if any(not 0 < len(k) <= 128 for k in value):
            raise ValueError("metric ids are 1 to 128 characters")
        return value


class UploadRequest(_Body):
    # A missing list is "must not be empty" too, hence validate_default.
    observations: Annotated[list[UploadObservation], Field(max_length=MAX_UPLOAD_OBSERVATIONS)] = (
        Field(default_factory=list, validate_default=True)
    )

    @field_validator("observations")
    @classmethod
    def _not_empty(cls, value: list[UploadObservation]) -> list[UploadObservation]:
        if not value:
            raise ValueError("must not be empty")  # the seed's message, path "observations"
        return value


# -- /sensors/metrics -------------------------------------------------------------------------


class SensorMetricsRequest(_Body):
    ids: Annotated[
        list[Annotated[StrictStr, Field(min_length=1, max_length=MAX_ENTITY_ID_CHARS)]],
        Field(min_length=1, max_length=MAX_IDS_PER_REQUEST),
    ]


# -- error bodies -----------------------------------------------------------------------------


def errors_body(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`{"errors": [{"message", "path"}]}` from (message, path) pairs."""
    return {"errors": [{"message": message, "path": path} for message, path in items]}


def validation_errors_body(exc: ValidationError) -> dict[str, Any]:
    """The seed's 400 body for a schema error: each bad field's message and path
    (`observations[0].timestamp`); the input is never echoed."""
    return errors_body((e["message"], e["path"]) for e in error_paths(exc, root="body"))


def integration_error_body(message: str) -> dict[str, Any]:
    """`{"error": {"code": "InvalidProcessIntegrationRequest", "message"}}`."""
    return {"error": {"code": INTEGRATION_ERROR_CODE, "message": message}}
