"""Wire schemas of the /v1 face (pydantic, at the edge only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = [
    "DeviceCreate",
    "DeviceUpdate",
    "MethodRequest",
    "ModuleCreate",
    "TokenCreate",
    "UserCreate",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DeviceCreate(_Body):
    name: StrictStr = Field(min_length=1, max_length=200)
    project: StrictStr = Field(min_length=1, max_length=128)
    deployment: StrictStr = Field(min_length=1, max_length=128)
    isIoTEdgeCapable: StrictBool = False


class DeviceTags(_Body):
    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)


class DeviceUpdate(_Body):
    """PUT /v1/devices/{id}: `properties` is a desired-properties patch (as in the seed)."""

    properties: dict[str, Any] | None = None
    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    tags: DeviceTags | None = None
    provisioningStatus: Literal["enabled", "disabled"] | None = None


class MethodRequest(_Body):
    name: StrictStr = Field(min_length=1, max_length=128)
    payload: Any = None
    responseTimeoutInSeconds: StrictInt | StrictFloat | None = None


class ModuleCreate(_Body):
    moduleId: StrictStr = Field(min_length=1, max_length=128)


class C2DSend(_Body):
    body: Any = None
    properties: dict[str, StrictStr] = Field(default_factory=dict)
    ttlInSeconds: StrictInt | None = Field(default=None, ge=1, le=7 * 86400)


class TokenCreate(_Body):
    role: Literal["admin", "operator", "viewer"]
    label: StrictStr = Field(default="", max_length=200)


class UserCreate(_Body):
    username: StrictStr = Field(min_length=1, max_length=200)
    password: StrictStr = Field(min_length=8, max_length=1000)
    role: Literal["admin", "operator", "viewer"]
