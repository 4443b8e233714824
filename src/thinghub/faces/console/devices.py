"""Console pages of devices: the searchable list, creating one (its keys shown once),
enabling, disabling and deleting it, and a device's own page with its plot, twin, direct
methods, cloud-to-device messages, events, iTwin ids and ux4iot details.

Every action is a service call with the caller's principal, as the API faces make it; the
services decide what the caller's role may do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from thinghub.domain.commands import parse_method_name
from thinghub.domain.dtdl import DeviceTemplate
from thinghub.domain.dtdl.schemas import describe
from thinghub.domain.errors import Error, Forbidden, Invalid
from thinghub.domain.events import Event
from thinghub.domain.json_depth import exceeds_depth
from thinghub.domain.model import Device, DeviceKind
from thinghub.domain.roles import Permission
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.domain.twin import validate_patch
from thinghub.faces._http import status_of
from thinghub.faces.console.sessions import Flash
from thinghub.faces.console.views import (
    connection_details,
    event_summary,
    itwin_ids,
    pretty_json,
    series_of,
    show_time,
    ux4iot_endpoint,
)
from thinghub.faces.console.web import PREFIX, Caller, Console, form_field
from thinghub.ports import EventQuery, TelemetryQuery

__all__ = ["PAGE_SIZE", "RANGES", "routes"]

PAGE_SIZE = 25  # devices per page of the list
EVENTS_SHOWN = 50  # newest events on a device's page
RECENT_SHOWN = 20  # newest messages in the table under the plot (what shows without JS)
# The plot's time ranges (the picker); the first is the default, and a range that ends now
# keeps streaming.
RANGES: dict[str, tuple[str, float]] = {
    "5m": ("last 5 minutes", 300.0),
    "15m": ("last 15 minutes", 900.0),
    "1h": ("last hour", 3600.0),
    "6h": ("last 6 hours", 21_600.0),
    "24h": ("last 24 hours", 86_400.0),
    "7d": ("last 7 days", 604_800.0),
}
# A plot reads at most this many messages of its range (the newest); more says "truncated".
SERIES_MAX_MESSAGES = 5000
SERIES_PAGE = 1000
MAX_METHOD_TIMEOUT_DEFAULT_S = 30


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


# -- helpers ------------------------------------------------------------------------------


async def run_change(
    request: Request,
    act: Callable[[Console, Caller, dict[str, str]], Awaitable[Flash | Response]],
    *,
    back: str,
) -> Response:
    """A change: the form once the CSRF check passed, then `act`. A Flash is shown on the
    page `back` leads to (303, so a reload does not post again); a domain error too, except
    Forbidden: that is the 403 page (the role may not do it)."""
    console = console_of(request)
    caller, form = await console.changing(request)
    try:
        outcome = await act(console, caller, form)
    except Forbidden:
        raise
    except Error as exc:
        where = form.get("section") or None
        await console.flash(caller, Flash("error", exc.message, where=where))
        return RedirectResponse(back, status_code=303)
    if isinstance(outcome, Response):
        return outcome
    await console.flash(caller, outcome)
    return RedirectResponse(back, status_code=303)


def _device_url(device_id: str) -> str:
    return f"{PREFIX}/devices/{device_id}"


def _json_field(form: dict[str, str], name: str, console: Console, *, empty: Any = None) -> Any:
    text = form_field(form, name, max_chars=200_000)
    if not text:
        return empty
    if exceeds_depth(text, console.settings.max_json_depth):
        raise Invalid(f"{name} nests too deeply", field=name)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Invalid(f"{name} is not valid JSON: {exc}", field=name) from exc


def _is_connected_label(connected: bool) -> str:
    return "Connected" if connected else "Disconnected"


# -- the list -----------------------------------------------------------------------------


def _matches(device: Device, query: str) -> bool:
    needle = query.casefold()
    return any(
        needle in (value or "").casefold()
        for value in (device.id, device.name, device.project, device.deployment, device.template)
    )


async def list_devices(request: Request) -> Response:
    console = console_of(request)
    caller = await console.caller(request)
    services = console.services
    query = request.query_params.get("q", "").strip()[:200]
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    devices = await services.registry.list_devices(caller.principal)
    if query:
        devices = [d for d in devices if _matches(d, query)]
    devices.sort(key=lambda d: (-d.created_at, d.id))
    pages = max(1, math.ceil(len(devices) / PAGE_SIZE))
    page = min(page, pages)
    shown = devices[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    rows = [
        {
            "device": d,
            "state": _is_connected_label(await services.registry.is_connected(d.id)),
            "activity": show_time(d.last_activity_at),
        }
        for d in shown
    ]

    def page_url(number: int) -> str:
        return f"{PREFIX}/devices?" + urlencode(
            {"q": query, "page": number} if query else {"page": number}
        )

    return await console.page(
        request,
        caller,
        "devices.html",
        {
            "title": "Devices",
            "rows": rows,
            "query": query,
            "page": page,
            "pages": pages,
            "total": len(devices),
            "prev_url": page_url(page - 1) if page > 1 else None,
            "next_url": page_url(page + 1) if page < pages else None,
            "live": "devices",
        },
    )


# -- create -------------------------------------------------------------------------------


async def new_device(request: Request) -> Response:
    console = console_of(request)
    caller = await console.caller(request)
    templates = await console.services.templates.list(caller.principal)
    return await console.page(
        request,
        caller,
        "device_new.html",
        {"title": "New device", "templates": templates, "form": {}},
    )


async def create_device(request: Request) -> Response:
    console = console_of(request)
    caller, form = await console.changing(request)
    services = console.services
    name = form_field(form, "name", max_chars=200)
    try:
        if not name:
            raise Invalid("a device needs a name", field="name")
        template = form_field(form, "template", max_chars=200) or None
        if template is not None:
            await services.templates.get(caller.principal, template)  # it must exist
        device = await services.registry.create_device(
            caller.principal,
            name=name,
            device_id=form_field(form, "id", max_chars=200) or None,
            project=form_field(form, "project", max_chars=200) or None,
            deployment=form_field(form, "deployment", max_chars=200) or None,
            kind=DeviceKind.GATEWAY if form.get("gateway") else DeviceKind.DEVICE,
            template=template,
        )
    except Forbidden:
        raise
    except Error as exc:
        templates = await services.templates.list(caller.principal)
        return await console.page(
            request,
            caller,
            "device_new.html",
            {"title": "New device", "templates": templates, "form": form, "error": exc.message},
            status=status_of(exc),
        )
    account = await services.auth.account(device.account_id)
    addresses = console.addresses()
    mqtt = addresses.get("mqtt") or {
        "host": console.settings.host,
        "port": console.settings.mqtt_port,
    }
    details = connection_details(
        device,
        hub_hostname=console.settings.hub_hostname,
        mqtt_host=_reachable(str(mqtt["host"])),
        mqtt_port=int(mqtt["port"]),
        id_scope=account.id_scope,
        ca_file=addresses.get("ca_file"),
    )
    response = await console.page(
        request,
        caller,
        "device_created.html",
        {"title": f"Device {device.id} created", "device": device, "details": details},
        status=201,
    )
    return response


def _reachable(host: str) -> str:
    """Where a device on this machine reaches a listener bound to `host`."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# -- enable, disable, delete ----------------------------------------------------------------


async def set_enabled(request: Request) -> Response:
    device_id = request.path_params["device_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        services = console.services
        enabled = form.get("enabled") == "1"
        device = await services.registry.get_device(caller.principal, device_id)
        device = await services.registry.update_device(caller.principal, device, enabled=enabled)
        if not device.enabled:
            await services.registry.disconnect(device.id)  # a disabled device may not stay
        return Flash("ok", f"Device {device.id} {'enabled' if enabled else 'disabled'}.")

    return await run_change(request, act, back=_device_url(device_id))


async def confirm_delete(request: Request) -> Response:
    console = console_of(request)
    caller = await console.caller(request)
    device = await console.services.registry.get_device(
        caller.principal, request.path_params["device_id"]
    )
    return await console.page(
        request, caller, "device_delete.html", {"title": f"Delete {device.id}?", "device": device}
    )


async def delete_device(request: Request) -> Response:
    device_id = request.path_params["device_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Response:
        services = console.services
        await services.registry.delete_device(caller.principal, device_id)
        await services.registry.disconnect(device_id)
        await console.flash(caller, Flash("ok", f"Device {device_id} deleted."))
        return RedirectResponse(f"{PREFIX}/devices", status_code=303)

    return await run_change(request, act, back=_device_url(device_id))


# -- a device's page ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeRange:
    key: str  # a RANGES key, or "custom"
    since: float
    until: float | None  # None: now, and streaming

    @property
    def is_live(self) -> bool:
        return self.until is None


def _parse_local(value: str, name: str) -> float:
    """A `datetime-local` value, read as UTC (the page says so)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Invalid(f"{name} is not a date and time: {value!r}", field=name) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _as_local(ts: float | None) -> str:
    """A time as a `datetime-local` field shows it (UTC, to the second)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def time_range(request: Request, now: float) -> TimeRange:
    params = request.query_params
    key = params.get("range", "5m")
    if key == "custom":
        since_text, until_text = params.get("from", ""), params.get("to", "")
        if since_text:
            since = _parse_local(since_text, "from")
            until = _parse_local(until_text, "to") if until_text else None
            if until is not None and until <= since:
                raise Invalid("the range must end after it starts", field="to")
            return TimeRange("custom", since, until)
        key = "5m"
    if key not in RANGES:
        key = "5m"
    return TimeRange(key, now - RANGES[key][1], None)


def _components(
    device_messages: list[TelemetryMessage], template: DeviceTemplate | None
) -> list[str | None]:
    seen: list[str | None] = [None]
    if template is not None:
        seen += list(template.model.components)
    for message in device_messages:
        if message.component not in seen:
            seen.append(message.component)
    return seen


def _writable(template: DeviceTemplate | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if template is None:
        return out
    interfaces = [(None, template.model), *template.model.components.items()]
    for component, iface in interfaces:
        for prop in iface.properties.values():
            out.append(
                {
                    "name": f"{component}.{prop.name}" if component else prop.name,
                    "schema": describe(prop.schema),
                    "writable": prop.writable,
                    "unit": prop.unit,
                }
            )
    return out


async def device_page(request: Request) -> Response:
    console = console_of(request)
    caller = await console.caller(request)
    services = console.services
    principal = caller.principal
    device = await services.registry.get_device(principal, request.path_params["device_id"])
    now = console.now()
    try:
        window = time_range(request, now)
        range_error = None
    except Invalid as exc:
        window, range_error = TimeRange("5m", now - RANGES["5m"][1], None), exc.message
    template = await services.templates.for_device(device)
    twin = await services.twins.get(device)
    recent = await services.queries.telemetry(
        principal, TelemetryQuery(principal.account_id, device_id=device.id, limit=RECENT_SHOWN)
    )
    events = await services.queries.events(
        principal, EventQuery(principal.account_id, device_id=device.id, limit=EVENTS_SHOWN)
    )
    recent_series = series_of(recent.items)
    desired = {k: v for k, v in twin.desired.properties.items()}
    return await console.page(
        request,
        caller,
        "device.html",
        {
            "title": device.name or device.id,
            "device": device,
            "state": _is_connected_label(await services.registry.is_connected(device.id)),
            "activity": show_time(device.last_activity_at),
            "created": show_time(device.created_at),
            "template": template,
            "properties": _writable(template),
            "twin": twin,
            "desired_json": pretty_json(desired),
            "reported_json": pretty_json(twin.reported.properties),
            "desired_updated": show_time(twin.desired.last_updated),
            "reported_updated": show_time(twin.reported.last_updated),
            "events": [_event_row(e) for e in events.items],
            "recent": [
                {
                    "time": show_time(t),
                    "values": {m: c[i] for m, c in recent_series.columns.items()},
                }
                for i, t in reversed(list(enumerate(recent_series.times)))
            ],
            "recent_metrics": list(recent_series.columns),
            "ranges": RANGES,
            "window": window,
            "range_error": range_error,
            "range_from": _as_local(window.since) if window.key == "custom" else "",
            "range_to": _as_local(window.until) if window.key == "custom" else "",
            "series_url": f"{PREFIX}/devices/{device.id}/series?"
            + urlencode(
                {"from": f"{window.since:.3f}"}
                | ({"to": f"{window.until:.3f}"} if window.until is not None else {})
            ),
            "window_s": (window.until or now) - window.since,
            "itwin": itwin_ids(device, _components(recent.items, template)),
            "ux4iot_endpoint": ux4iot_endpoint(console.api_base_url(request)),
            "method_timeout": MAX_METHOD_TIMEOUT_DEFAULT_S,
            "live": device.id,
            "has_chart": console.has_chart,
        },
    )


def _event_row(event: Event) -> dict[str, str]:
    return {"time": show_time(event.ts), "type": event.type.value, "summary": event_summary(event)}


async def device_series(request: Request) -> Response:
    """The numeric series of a device in a time range, as a plot draws it (JSON)."""
    console = console_of(request)
    caller = await console.caller(request)
    principal = caller.principal
    device = await console.services.registry.get_device(principal, request.path_params["device_id"])
    try:
        since = float(request.query_params.get("from", ""))
        until_text = request.query_params.get("to")
        until = float(until_text) if until_text else None
    except ValueError as exc:
        raise Invalid("from and to are epoch seconds", field="from") from exc
    if not math.isfinite(since) or (until is not None and not math.isfinite(until)):
        raise Invalid("from and to are epoch seconds", field="from")
    messages: list[TelemetryMessage] = []
    cursor: str | None = None
    page_size = min(SERIES_PAGE, console.settings.page_max)
    while len(messages) < SERIES_MAX_MESSAGES:
        page = await console.services.queries.telemetry(
            principal,
            TelemetryQuery(
                principal.account_id,
                device_id=device.id,
                since=since,
                until=until,
                limit=page_size,
                cursor=cursor,
            ),
        )
        messages += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    series = series_of(messages[:SERIES_MAX_MESSAGES])
    return JSONResponse(
        {**series.as_json(), "truncated": cursor is not None},
        headers={"Cache-Control": "no-store"},
    )


# -- twin, methods, messages ----------------------------------------------------------------


async def patch_desired(request: Request) -> Response:
    device_id = request.path_params["device_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        services = console.services
        # The registry checks the role and the device's reach first (Forbidden, NotFound),
        # then the patch against the device's template, then the core's rules for a desired
        # patch as every face applies them (edit_device).
        device = await services.registry.device_for(
            caller.principal, device_id, Permission.DEVICES_WRITE
        )
        patch = validate_patch(_json_field(form, "desired", console, empty={}), "desired")
        if not patch:
            raise Invalid("the patch changes nothing", field="desired")
        template = await services.templates.for_device(device)
        if template is not None:
            template.check_desired(patch)
        await services.registry.edit_device(
            caller.principal, device.id, desired=patch, desired_field="desired"
        )
        twin = await services.twins.get(device)
        return Flash(
            "ok", f"Desired properties saved (version {twin.desired.version}).", where="twin"
        )

    return await run_change(request, act, back=_device_url(device_id) + "#twin")


async def call_method(request: Request) -> Response:
    device_id = request.path_params["device_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        services = console.services
        device = await services.registry.get_device(caller.principal, device_id)
        name = parse_method_name(form_field(form, "method", max_chars=200), "method")
        payload = _json_field(form, "payload", console)
        timeout_text = form_field(form, "timeout", max_chars=20)
        try:
            timeout = float(timeout_text) if timeout_text else MAX_METHOD_TIMEOUT_DEFAULT_S
        except ValueError as exc:
            raise Invalid("the timeout is a number of seconds", field="timeout") from exc
        result = await services.commands.invoke(caller.principal, device, name, payload, timeout)
        return Flash(
            "ok" if 200 <= result.status < 300 else "error",
            f"{name} answered {result.status}",
            detail=pretty_json(result.payload),
            where="method",
        )

    return await run_change(request, act, back=_device_url(device_id) + "#method")


def _properties(text: str) -> dict[str, str]:
    properties: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise Invalid(f"a property line is name=value, got {line!r}", field="properties")
        properties[key.strip()] = value.strip()
    return properties


async def send_c2d(request: Request) -> Response:
    device_id = request.path_params["device_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        services = console.services
        device = await services.registry.get_device(caller.principal, device_id)
        body = form.get("body", "")
        properties = _properties(form_field(form, "properties", max_chars=20_000))
        message = await services.c2d.send(caller.principal, device, body, properties)
        hours = (message.expires_at - message.created_at) / 3600
        return Flash(
            "ok",
            f"Message {message.id} accepted: the device gets it while it is connected and "
            f"listening (it waits up to {hours:g} h).",
            where="c2d",
        )

    return await run_change(request, act, back=_device_url(device_id) + "#c2d")


def routes() -> list[BaseRoute]:
    return [
        Route("/devices", list_devices, methods=["GET"]),
        Route("/devices", create_device, methods=["POST"]),
        Route("/new-device", new_device, methods=["GET"]),
        Route("/devices/{device_id}", device_page, methods=["GET"]),
        Route("/devices/{device_id}/series", device_series, methods=["GET"]),
        Route("/devices/{device_id}/enabled", set_enabled, methods=["POST"]),
        Route("/devices/{device_id}/delete", confirm_delete, methods=["GET"]),
        Route("/devices/{device_id}/delete", delete_device, methods=["POST"]),
        Route("/devices/{device_id}/desired", patch_desired, methods=["POST"]),
        Route("/devices/{device_id}/method", call_method, methods=["POST"]),
        Route("/devices/{device_id}/messages", send_c2d, methods=["POST"]),
    ]
