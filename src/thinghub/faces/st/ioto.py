"""The /v1 routes of the Ioto face's data: products (admin) and each device's files.

- ``POST /v1/ioto/products`` creates a product and answers its token, this once;
  ``GET /v1/ioto/products`` lists them; ``DELETE /v1/ioto/products/{id}`` revokes one.
- ``GET /v1/devices/{id}/files`` lists a device's files (paged like telemetry);
  ``GET /v1/devices/{id}/files/{name}`` downloads one; ``DELETE`` deletes it (operator).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from thinghub.domain.clock import format_ts
from thinghub.domain.device_files import DeviceFile
from thinghub.domain.errors import Invalid
from thinghub.domain.model import Principal
from thinghub.domain.products import Product
from thinghub.faces._http import OrjsonResponse, principal_of, services_of, settings_of
from thinghub.faces.st.schemas import PageSize, ProductCreate

__all__ = ["router"]

Caller = Annotated[Principal, Depends(principal_of())]
DeviceId = Annotated[str, Path(), AfterValidator(str.strip)]
FileName = Annotated[str, Path(description="The file's name below the device's folder")]

router = APIRouter()


def _product_json(product: Product, token: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": product.id,
        "name": product.name,
        "createdAt": format_ts(product.created_at),
        "revokedAt": None if product.revoked_at is None else format_ts(product.revoked_at),
    }
    if token is not None:
        out["token"] = token
    return out


@router.post("/ioto/products", status_code=201, tags=["ioto"])
async def create_product(body: ProductCreate, request: Request, caller: Caller) -> Response:
    """Create an Ioto product (admin). `token` is the product token devices register with
    (device.json5 `product`); it is shown only here. `name` is also the project the
    product's claimed devices go into."""
    product, token = await services_of(request).products.create(caller, body.name)
    return OrjsonResponse(_product_json(product, token), status_code=201)


@router.get("/ioto/products", tags=["ioto"])
async def list_products(request: Request, caller: Caller) -> Response:
    """The account's Ioto products (admin), revoked ones with `revokedAt`."""
    products = await services_of(request).products.list_products(caller)
    return OrjsonResponse([_product_json(p) for p in products])


@router.delete("/ioto/products/{product_id}", status_code=204, tags=["ioto"])
async def revoke_product(product_id: str, request: Request, caller: Caller) -> Response:
    """Revoke a product (admin): its token registers no more devices; devices already
    claimed keep working."""
    await services_of(request).products.revoke(caller, product_id)
    return Response(status_code=204)


def _file_json(record: DeviceFile) -> dict[str, Any]:
    return {
        "name": record.filename,
        "size": record.size,
        "contentType": record.content_type,
        "md5": record.md5_hex,
        "lastModified": format_ts(record.modified_at),
    }


@router.get("/devices/{device_id}/files", tags=["files"])
async def list_files(
    device_id: DeviceId,
    request: Request,
    caller: Caller,
    limit: Annotated[PageSize, Query()] = None,
    continuationToken: Annotated[str | None, Query()] = None,
) -> Response:
    """A device's files (uploads of the Ioto face), by name; `x-continuation-token` names the
    next page."""
    page_max = settings_of(request).page_max
    if limit is None:
        limit = min(100, page_max)
    elif not 1 <= limit <= page_max:
        raise Invalid(f"limit must be 1 to {page_max}", field="limit")
    records = await services_of(request).files.list_device_files(
        caller, device_id, after=continuationToken or "", limit=limit + 1
    )
    headers = None
    if len(records) > limit:
        records = records[:limit]
        headers = {"x-continuation-token": records[-1].filename}
    return OrjsonResponse([_file_json(r) for r in records], headers=headers)


@router.get("/devices/{device_id}/files/{name:path}", tags=["files"])
async def download_file(
    device_id: DeviceId, name: FileName, request: Request, caller: Caller
) -> Response:
    """A device's file, as it was uploaded."""
    record, chunks = await services_of(request).files.read_device_file(caller, device_id, name)
    headers = {"Content-Length": str(record.size), "ETag": f'"{record.md5_hex}"'}
    media = record.content_type or "application/octet-stream"
    return StreamingResponse(chunks, headers=headers, media_type=media)


@router.delete("/devices/{device_id}/files/{name:path}", status_code=204, tags=["files"])
async def delete_file(
    device_id: DeviceId, name: FileName, request: Request, caller: Caller
) -> Response:
    """Delete a device's file (operator)."""
    await services_of(request).files.delete_device_file(caller, device_id, name)
    return Response(status_code=204)
