"""The DTDL capability model as parsed: interfaces, their telemetry, properties, commands and
components, and the device template that holds one (IoT Central's device template).

These are what checking device data needs, and what faces show: a telemetry's or property's
schema and unit, whether a property is writable, a command's request and response. The parser
(parser.py) builds them; they are frozen, but an Interface's dicts are filled while parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thinghub.domain.dtdl.schemas import Schema, check_value, describe
from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.etags import document_etag

__all__ = [
    "CommandDef",
    "CommandPayload",
    "DeviceTemplate",
    "Interface",
    "PropertyDef",
    "TelemetryDef",
]


@dataclass(frozen=True, slots=True)
class TelemetryDef:
    """A telemetry of an interface. `unit` is its DTDL unit (e.g. "degreeCelsius"), when the
    model gives one (a semantic type such as ["Telemetry", "Temperature"] with a `unit`)."""

    name: str
    schema: Schema
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class PropertyDef:
    """A property of an interface; `unit` as for TelemetryDef."""

    name: str
    schema: Schema
    writable: bool = False
    unit: str | None = None

    def check_value(self, value: Any) -> None:
        """Check a desired value: the property must be writable and the value of its schema."""
        if not self.writable:
            raise Invalid(
                f"property {self.name!r} is not writable (the device reports it)", field=self.name
            )
        check_value(self.schema, value, self.name)


@dataclass(frozen=True, slots=True)
class CommandPayload:
    name: str
    schema: Schema


@dataclass(frozen=True, slots=True)
class CommandDef:
    name: str
    request: CommandPayload | None = None
    response: CommandPayload | None = None

    def check_request(self, payload: Any) -> None:
        if self.request is None:
            if payload not in (None, {}):
                raise Invalid(f"command {self.name!r} takes no request", field="request")
            return
        if payload is None:
            raise Invalid(
                f"command {self.name!r} needs its request {self.request.name!r} "
                f"({describe(self.request.schema)})",
                field=self.request.name,
            )
        check_value(self.request.schema, payload, self.request.name)


@dataclass(frozen=True, slots=True)
class Interface:
    id: str | None
    telemetry: dict[str, TelemetryDef] = field(default_factory=dict)
    properties: dict[str, PropertyDef] = field(default_factory=dict)
    commands: dict[str, CommandDef] = field(default_factory=dict)
    components: dict[str, Interface] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceTemplate:
    id: str
    display_name: str
    document: dict[str, Any]
    model: Interface
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def etag(self) -> str:
        """Changes whenever the document does (domain/etags.py)."""
        return document_etag(self.document)

    def interface(self, component: str | None) -> Interface:
        if component is None:
            return self.model
        iface = self.model.components.get(component)
        if iface is None:
            raise Invalid(
                f"component {component!r} is not in device template {self.id!r}", field="component"
            )
        return iface

    def check_telemetry(self, body: Any, component: str | None = None) -> None:
        """Raise Invalid unless every field of `body` is a telemetry of the template."""
        iface = self.interface(component)
        if not isinstance(body, dict):
            raise Invalid("telemetry must be a JSON object", field="body")
        for name, value in body.items():
            telemetry = iface.telemetry.get(name)
            if telemetry is None:
                known = ", ".join(iface.telemetry) or "none"
                where = f"component {component!r} of " if component else ""
                raise Invalid(
                    f"telemetry {name!r} is not in {where}device template "
                    f"{self.id!r} (telemetry: {known})",
                    field=name,
                )
            check_value(telemetry.schema, value, name)

    def command(self, name: str) -> tuple[str | None, CommandDef]:
        """A command by `name` or `component*name`; NotFound when the template lacks it."""
        component, iface, short = self._resolve(name, "command")
        command = iface.commands.get(short)
        if command is None:
            raise NotFound(
                f"command {name!r} is not in device template {self.id!r}", field="commandName"
            )
        return component, command

    def property(self, name: str) -> tuple[str | None, PropertyDef]:
        """A property by `name` or `component*name`; NotFound when the template lacks it."""
        component, iface, short = self._resolve(name, "property")
        prop = iface.properties.get(short)
        if prop is None:
            raise NotFound(
                f"property {name!r} is not in device template {self.id!r}", field="propertyName"
            )
        return component, prop

    def _resolve(self, name: str, what: str) -> tuple[str | None, Interface, str]:
        component, star, short = name.partition("*")
        if not star:
            return None, self.model, name
        iface = self.model.components.get(component)
        if iface is None:
            raise NotFound(
                f"{what} {name!r}: component {component!r} is not in device template {self.id!r}",
                field=f"{what}Name",
            )
        return component, iface, short
