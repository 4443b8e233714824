"""Wire schemas of the /v1 face (pydantic, at the edge only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic.config import JsonDict

from thinghub.domain.commands import METHOD_NAME_PATTERN
from thinghub.domain.errors import Invalid
from thinghub.domain.ids import ID_PATTERN
from thinghub.domain.storable import check_storable

__all__ = [
    "DeviceCreate",
    "DeviceUpdate",
    "EnrollmentGroupCreate",
    "MethodRequest",
    "ModuleCreate",
    "ModuleUpdate",
    "PageSize",
    "ProductCreate",
    "RetentionUpdate",
    "TokenCreate",
    "UserCreate",
    "Ux4iotKeyCreate",
]


def _storable(value: Any) -> Any:
    # json.loads takes integers of any size, NaN and lone surrogates; storage does not, so
    # such a value would otherwise fail later as a 500 (or NaN be stored as null).
    try:
        check_storable(value, "the value")
    except Invalid as exc:
        raise ValueError(exc.message) from None
    return value


def _empty_as_absent(value: Any) -> Any:
    return None if value == "" else value


# A page size query (`limit`): sent empty (`?limit=`), it is not given, as an empty filter is;
# the routes check the range (1..page_max) and name `limit`.
PageSize = Annotated[int | None, BeforeValidator(_empty_as_absent)]


def _null_is_false(value: Any) -> Any:
    return False if value is None else value


# `isIoTEdgeCapable` of a new device or group: `null` (an unset optional boolean, as many
# clients' models serialize one) is the default, a plain device.
EdgeCapable = Annotated[
    StrictBool,
    BeforeValidator(_null_is_false),
    Field(json_schema_extra={"description": "true for a gateway; false or null: a device"}),
]

# Any JSON value the server can store and send on.
JsonValue = Annotated[Any, AfterValidator(_storable)]
# Ids are checked by the services (with a message naming the rule); the documents say the rule.
ID_SCHEMA: JsonDict = {"pattern": "^" + ID_PATTERN.pattern + "$"}


def _whole(value: Any) -> Any:
    # JSON Schema's integer includes 3600.0; pydantic's strict int does not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


class _Body(BaseModel):
    # A field this face does not apply is a 400 naming it, never silently ignored.
    model_config = ConfigDict(extra="forbid")


class DeviceCreate(_Body):
    name: StrictStr = Field(min_length=1, max_length=200)
    project: StrictStr = Field(min_length=1, max_length=128, json_schema_extra=ID_SCHEMA)
    deployment: StrictStr = Field(min_length=1, max_length=128, json_schema_extra=ID_SCHEMA)
    isIoTEdgeCapable: EdgeCapable = False


class _Strict(BaseModel):
    # A field this face cannot apply is a 400 naming it, never a silent 200.
    model_config = ConfigDict(extra="forbid")


class DeviceTags(_Strict):
    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    project: StrictStr | None = Field(
        default=None, min_length=1, max_length=128, json_schema_extra=ID_SCHEMA
    )
    deployment: StrictStr | None = Field(
        default=None, min_length=1, max_length=128, json_schema_extra=ID_SCHEMA
    )
    user: StrictStr | None = Field(default=None, description="Read-only: who created it")


class DeviceUpdate(_Strict):
    """PUT /v1/devices/{id}: `properties` is a desired-properties patch (as in the ST API), or
    `{"desired": {...}}` as GET shows it; `tags.project`/`tags.deployment` move the device.
    The other fields GET shows are read-only: taken when they hold what the device has, a
    400 naming them otherwise (connectionState and lastActivityTime describe the moment of
    the GET: any value is taken)."""

    properties: dict[str, Any] | None = None
    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    tags: DeviceTags | None = None
    provisioningStatus: Literal["enabled", "disabled"] | None = None
    id: StrictStr | None = None
    idScope: StrictStr | None = None
    isIoTEdgeCapable: StrictBool | None = None
    credentials: dict[str, Any] | None = None
    modelId: StrictStr | None = None
    modules: list[dict[str, Any]] | None = None
    connectionState: StrictStr | None = None
    lastActivityTime: StrictStr | None = None


class ModuleUpdate(_Strict):
    """PUT /v1/devices/{id}/modules/{m}: `properties` as for a device; the other fields of
    the module's GET shape are read-only, as for a device."""

    properties: dict[str, Any] | None = None
    moduleId: StrictStr | None = None
    deviceId: StrictStr | None = None
    credentials: dict[str, Any] | None = None
    modelId: StrictStr | None = None
    connectionState: StrictStr | None = None
    lastActivityTime: StrictStr | None = None


class MethodRequest(_Body):
    name: StrictStr = Field(
        min_length=1, max_length=128, json_schema_extra={"pattern": METHOD_NAME_PATTERN}
    )
    payload: JsonValue = None
    # One float type, not int | float: a union would name the member in the error's field
    # ("responseTimeoutInSeconds.int"). Strict floats still take integers.
    responseTimeoutInSeconds: StrictFloat | None = None


class ModuleCreate(_Body):
    moduleId: StrictStr = Field(min_length=1, max_length=128, json_schema_extra=ID_SCHEMA)


class C2DSend(_Body):
    body: JsonValue = None
    # _storable: pydantic lets an object key with a lone surrogate ("\\ud800") through.
    properties: Annotated[dict[str, StrictStr], AfterValidator(_storable)] = Field(
        default_factory=dict
    )
    ttlInSeconds: (
        Annotated[Annotated[StrictInt, Field(ge=1, le=7 * 86400)], BeforeValidator(_whole)] | None
    ) = None


class EnrollmentGroupCreate(_Body):
    enrollmentGroupId: StrictStr = Field(min_length=1, max_length=128, json_schema_extra=ID_SCHEMA)
    project: StrictStr = Field(min_length=1, max_length=128, json_schema_extra=ID_SCHEMA)
    deployment: StrictStr = Field(min_length=1, max_length=128, json_schema_extra=ID_SCHEMA)
    isIoTEdgeCapable: EdgeCapable = False


class TokenCreate(_Body):
    role: Literal["admin", "builder", "operator", "viewer"]
    label: StrictStr = Field(default="", max_length=200)
    project: StrictStr | None = Field(
        default=None, min_length=1, max_length=128, json_schema_extra=ID_SCHEMA
    )


class Ux4iotKeyCreate(_Body):
    label: StrictStr = Field(default="", max_length=200)


class UserCreate(_Body):
    username: StrictStr = Field(min_length=1, max_length=200)
    password: StrictStr = Field(min_length=8, max_length=1000)
    role: Literal["admin", "builder", "operator", "viewer"]


class RetentionUpdate(_Body):
    """PUT /v1/account/retention: days per kind; an absent field stays, null is the server's
    default, 0 keeps forever."""

    telemetryDays: StrictFloat | None = Field(default=None, ge=0, le=36_500)
    eventsDays: StrictFloat | None = Field(default=None, ge=0, le=36_500)
    filesDays: StrictFloat | None = Field(default=None, ge=0, le=36_500)


class ProductCreate(_Body):
    """POST /v1/ioto/products: the name is also the project its claimed devices go into."""

    name: Annotated[StrictStr, Field(json_schema_extra=ID_SCHEMA)]
