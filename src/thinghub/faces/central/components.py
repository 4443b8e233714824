"""Routes of the IoT Central face that list a device's (or a module's) components, as the real
API does (`GET /devices/{id}/components`, `GET /devices/{id}/modules/{m}/components`).

A component is one of the device's capability model (services/templates.py `model_for`: its
device template's, else the model it announced); each is shown as the model declares it
(`@type`, `name`, and `@id`, `displayName`, `description` when the model gives them), without
its `schema`. A device without a model has no components (an empty list, as the real API
answers for a device without a template).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from thinghub.domain.dtdl import TEMPLATE_ID, WELL_KNOWN_MODELS
from thinghub.domain.model import Device, Principal
from thinghub.faces._http import OrjsonResponse, services_of
from thinghub.faces.central._wire import caller_dependency
from thinghub.services.core import Services

__all__ = ["router"]

Caller = Annotated[Principal, Depends(caller_dependency)]

# What a listed component shows of its DTDL declaration (the schema is the component's model).
SHOWN_FIELDS = ("@id", "@type", "name", "displayName", "description")
# How deep `extends` may nest before the walk stops (the parser allows 10).
MAX_WALK_DEPTH = 16

router = APIRouter()


def _declarations(node: Any, depth: int = 0) -> dict[str, dict[str, Any]]:
    """The Component declarations of a DTDL interface (its `extends` included), by name."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(node, dict) or depth > MAX_WALK_DEPTH:
        return out
    extends = node.get("extends")
    for base in extends if isinstance(extends, list) else [extends]:
        out.update(_declarations(base, depth + 1))
    contents = node.get("contents")
    for item in contents if isinstance(contents, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            kinds = item.get("@type")
            if kinds == "Component" or (isinstance(kinds, list) and "Component" in kinds):
                out[item["name"]] = item
    return out


def _root_interface(document: Any) -> Any:
    """The root interface of a template document, a bare Interface or an array (root first)."""
    if isinstance(document, list):
        return document[0] if document else None
    if isinstance(document, dict) and "capabilityModel" in document:
        return document["capabilityModel"]
    return document


async def _model_document(services: Services, device: Device) -> Any:
    """The document the device's model was read from (as templates.model_for chooses it),
    for the components' display fields; None when there is none."""
    template = await services.templates.for_device(device)
    if template is None and device.model_id:
        if TEMPLATE_ID.fullmatch(device.model_id):
            template = await services.templates.find(device.account_id, device.model_id)
        if template is None:
            return WELL_KNOWN_MODELS.get(device.model_id)
    return None if template is None else template.document


async def _components(services: Services, device: Device) -> Response:
    model = await services.templates.model_for(device)
    if model is None:
        return OrjsonResponse({"value": []})
    declared = _declarations(_root_interface(await _model_document(services, device)))
    value = []
    for name in model.components:
        shown: dict[str, Any] = {"@type": "Component", "name": name}
        for key in SHOWN_FIELDS:
            if key in declared.get(name, {}):
                shown[key] = declared[name][key]
        value.append(shown)
    return OrjsonResponse({"value": value})


@router.get("/devices/{device_id}/components", tags=["devices"], summary="List components")
async def list_components(device_id: str, request: Request, caller: Caller) -> Response:
    """`{value: [{@type, name, displayName?, description?}]}`: the components of the device's
    model (none without one)."""
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    return await _components(services, device)


@router.get(
    "/devices/{device_id}/modules/{module_name}/components",
    tags=["modules"],
    summary="List a module's components",
)
async def list_module_components(
    device_id: str, module_name: str, request: Request, caller: Caller
) -> Response:
    services = services_of(request)
    module = await services.registry.get_module(caller, device_id, module_name)
    return await _components(services, module)
