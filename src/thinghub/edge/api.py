"""The Edge REST API under /api (seed 004, "iTwin IoT Edge REST API") and /ws/port/N.

Readings answer `{"value": ...}`; a write answers with the state it leaves, in the shape of
the matching read. Errors, whatever the route, are one JSON shape:

    {"status": 501, "error": "Not Implemented", "message": "board 'linux' cannot give ...",
     "board": "linux", "reading": "batteryVoltage"}

with `privilege` on 403 (the privilege the edge lacks) and `field` on 400 (the bad field).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .board import BatterySaver, Board, BoardError, BoardInvalid, PrivilegeRequired
from .cloud import CloudLink
from .port_config import (
    PORT_KEYS,
    SECRET_KEYS,
    PortConfigError,
    check_port_number,
    check_properties,
    effective,
)
from .ports import PortManager, PortNotConnectedError
from .queue import ForwardQueue
from .schemas import (
    AccessibleBody,
    BatterySaverBody,
    ConfigureDeleteBody,
    MessageBody,
    PortModeBody,
    PortVoltageBody,
    SleepBody,
    TimeBody,
    ValueBody,
)
from .state import EdgeState
from .update import UpdateError, Updater
from .ws import port_socket

__all__ = ["ApiError", "EdgeApi", "build_app"]

logger = logging.getLogger(__name__)

#: Bytes of a request body; the largest legitimate one is a 64 KiB message.
MAX_BODY_BYTES = 80 * 1024

M = TypeVar("M", bound=BaseModel)

#: Every route takes every method and answers a wrong one itself: 405 in the API's shape.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
        **{k: v for k, v in extra.items() if v is not None},
    }


def _error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(status, message, **extra), status_code=status)


def _iso(epoch_s: float) -> str:
    text = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class EdgeApi:
    """The handlers, over the edge's parts (given, never looked up)."""

    def __init__(
        self,
        *,
        board: Board,
        state: EdgeState,
        ports: PortManager,
        queue: ForwardQueue,
        cloud: CloudLink,
        updater: Updater,
    ) -> None:
        self.board = board
        self.state = state
        self.ports = ports
        self.queue = queue
        self.cloud = cloud
        self.updater = updater

    # -- plumbing --------------------------------------------------------------------------

    async def _on_board(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a board call off the loop (sysfs reads can block on slow drivers)."""
        return await asyncio.to_thread(fn, *args)

    @staticmethod
    async def _json(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes", field="body")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes", field="body")
            chunks.append(chunk)
        raw = b"".join(chunks).strip()
        if not raw:
            return {}
        try:  # curl -d sends form encoding by default: the body is JSON whatever it says
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}", field="body") from exc
        except RecursionError:  # `[[[[…` tens of thousands deep: past the parser's stack
            raise ApiError(400, "the body is nested too deeply", field="body") from None

    async def _body(self, request: Request, model: type[M]) -> M:
        data = await self._json(request)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            message = first["msg"].removeprefix("Value error, ")
            raise ApiError(400, f"{where}: {message}", field=where) from None

    @staticmethod
    def _port(request: Request, name: str = "port") -> int:
        raw = request.query_params.get(name)
        if raw is None:
            raise ApiError(400, f"the query parameter {name} is required", field=name)
        try:
            return check_port_number(raw)
        except PortConfigError as exc:
            raise ApiError(400, exc.message, field=name) from exc

    def _value(self, value: Any) -> JSONResponse:
        return JSONResponse({"value": value})

    async def _reading(self, fn: Callable[..., Any], *args: Any) -> JSONResponse:
        return self._value(await self._on_board(fn, *args))

    # -- identity and clock ----------------------------------------------------------------

    async def serial_number(self, request: Request) -> Response:
        return await self._reading(self.board.serial_number)

    async def get_time(self, request: Request) -> Response:
        return self._value(_iso(await self._on_board(self.board.now)))

    async def post_time(self, request: Request) -> Response:
        body = await self._body(request, TimeBody)
        await self._on_board(self.board.set_time, body.time.timestamp())
        return self._value(_iso(await self._on_board(self.board.now)))

    async def time_accurate(self, request: Request) -> Response:
        return await self._reading(self.board.time_accurate)

    # -- power -----------------------------------------------------------------------------

    async def input_voltage(self, request: Request) -> Response:
        return await self._reading(self.board.input_voltage)

    async def input_current(self, request: Request) -> Response:
        return await self._reading(self.board.input_current)

    async def battery_voltage(self, request: Request) -> Response:
        return await self._reading(self.board.battery_voltage)

    async def state_of_charge(self, request: Request) -> Response:
        return await self._reading(self.board.state_of_charge)

    @staticmethod
    def _saver(saver: BatterySaver) -> JSONResponse:
        return JSONResponse({"value": saver.value, "low": saver.low, "high": saver.high})

    async def get_battery_saver(self, request: Request) -> Response:
        return self._saver(await self._on_board(self.board.battery_saver))

    async def put_battery_saver(self, request: Request) -> Response:
        body = await self._body(request, BatterySaverBody)
        if (body.low is None) != (body.high is None):
            field = "high" if body.high is None else "low"
            raise ApiError(400, "give both low and high, or neither", field=field)
        if body.low is not None and body.high is not None:
            saver = BatterySaver(body.value, body.low, body.high)
        elif body.value:
            saver = BatterySaver(True, 10, 100)  # the seed's default when enabling
        else:
            current = await self._on_board(self.board.battery_saver)
            saver = BatterySaver(False, current.low, current.high)
        return self._saver(await self._on_board(self.board.set_battery_saver, saver))

    async def sleep(self, request: Request) -> Response:
        body = await self._body(request, SleepBody)
        await self._on_board(self.board.sleep, body.duration)
        return JSONResponse({"duration": body.duration})

    # -- the ports' analog side ------------------------------------------------------------

    async def adc_read(self, request: Request) -> Response:
        port = self._port(request)
        option = request.query_params.get("option", "0")
        if option not in ("0", "1"):
            raise ApiError(400, "option is 0 (voltage) or 1 (current)", field="option")
        return await self._reading(self.board.port_adc, port, int(option))

    async def adc_read_420(self, request: Request) -> Response:
        return await self._reading(self.board.sensor_current, self._port(request))

    async def port_voltage(self, request: Request) -> Response:
        body = await self._body(request, PortVoltageBody)
        await self._on_board(self.board.set_port_voltage, body.portNumber, body.value)
        return JSONResponse({"portNumber": body.portNumber, "value": body.value})

    async def port_mode(self, request: Request) -> Response:
        """deviceRsSel: the port's interface, kept as its COMM_TYPE (OFF closes the port)."""
        body = await self._body(request, PortModeBody)
        if body.content not in ("RS232", "RS485", "ANALOG", "USB", "OFF"):
            raise ApiError(
                400, f"{body.content!r} is not RS232, RS485, ANALOG, USB or OFF", field="content"
            )
        self._configure(body.portNumber, {"COMM_TYPE": body.content})
        return JSONResponse({"portNumber": body.portNumber, "content": body.content})

    # -- environment and LEDs --------------------------------------------------------------

    async def temperature(self, request: Request) -> Response:
        return await self._reading(self.board.temperature)

    async def pressure(self, request: Request) -> Response:
        return await self._reading(self.board.pressure)

    async def flash(self, request: Request) -> Response:
        await self._json(request)  # no body expected; a malformed one is still refused
        await self._on_board(self.board.flash_led)
        return self._value(True)

    async def accessible(self, request: Request) -> Response:
        body = await self._body(request, AccessibleBody)
        await self._on_board(self.board.set_accessible, body.value)
        return self._value(body.value)

    # -- port configuration ----------------------------------------------------------------

    def _shown(self, number: int) -> dict[str, Any]:
        props = self.state.properties(number)
        return {k: v for k, v in props.items() if k not in SECRET_KEYS}

    def _configure(self, number: int, changes: dict[str, Any]) -> None:
        try:
            checked = check_properties(changes)
            effective(number, {**self.state.properties(number), **checked})
        except PortConfigError as exc:
            raise ApiError(400, exc.message, field=exc.key) from exc
        self.state.set_properties(number, checked)
        self.ports.apply(number)

    async def get_configure(self, request: Request) -> Response:
        return JSONResponse(self._shown(self._port(request)))

    async def put_configure(self, request: Request) -> Response:
        number = self._port(request)
        data = await self._json(request)
        if not isinstance(data, dict) or not data:
            raise ApiError(400, "expected an object of port properties", field="body")
        self._configure(number, data)
        return JSONResponse(self._shown(number))

    async def delete_configure(self, request: Request) -> Response:
        number = self._port(request)
        body = await self._body(request, ConfigureDeleteBody)
        for key in body.resources:
            if key not in PORT_KEYS:
                raise ApiError(400, f"{key!r} is not a port property", field="resources")
        remaining = {
            k: v for k, v in self.state.properties(number).items() if k not in body.resources
        }
        try:
            effective(number, remaining)
        except PortConfigError as exc:
            raise ApiError(400, exc.message, field=exc.key) from exc
        self.state.delete_properties(number, body.resources)
        self.ports.apply(number)
        return JSONResponse(self._shown(number))

    # -- network ---------------------------------------------------------------------------

    async def get_interface(self, request: Request) -> Response:
        return JSONResponse({"content": await self._on_board(self.board.interface_priority)})

    async def put_interface(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        return JSONResponse(
            {"content": await self._on_board(self.board.set_interface_priority, kind)}
        )

    # -- messages --------------------------------------------------------------------------

    async def message(self, request: Request) -> Response:
        body = await self._body(request, MessageBody)
        text = body.message if body.message is not None else body.content
        if text is None:
            raise ApiError(400, "message is required", field="message")
        port = self.ports.ports.get(body.portNumber)
        if port is None:
            raise ApiError(404, f"port {body.portNumber} is not configured", field="portNumber")
        try:
            await port.write(text.encode("utf-8"))
        except PortNotConnectedError as exc:
            raise ApiError(409, str(exc), field="portNumber") from exc
        return JSONResponse({"portNumber": body.portNumber, "message": text})

    # -- versions and update ---------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        return self._value(await self.updater.current_version())

    async def firmware(self, request: Request) -> Response:
        return await self._reading(self.board.firmware)

    async def hardware(self, request: Request) -> Response:
        return await self._reading(self.board.hardware)

    async def update(self, request: Request) -> Response:
        await self._json(request)
        query = request.query_params
        try:
            result = await self.updater.update(
                version=query.get("version"), file=query.get("file"), sha256=query.get("sha256")
            )
        except UpdateError as exc:
            raise ApiError(exc.status, exc.message, field=exc.field) from exc
        return JSONResponse(
            {"value": result.version, "previous": result.previous, "sha256": result.sha256}
        )

    # -- connections -----------------------------------------------------------------------

    async def get_cloud(self, request: Request) -> Response:
        return self._value(self.state.cloud_connection)

    async def put_cloud(self, request: Request) -> Response:
        body = await self._body(request, ValueBody)
        self.state.set_cloud_connection(body.value)
        self.cloud.set_enabled(body.value)
        return self._value(body.value)

    async def get_device(self, request: Request) -> Response:
        """The port's connection setting (enabled unless set false), configured or not yet."""
        return self._value(self.state.device_connection(self._port(request)))

    async def put_device(self, request: Request) -> Response:
        """Kept for the port whether or not it is configured yet: it applies when it is."""
        number = self._port(request)
        body = await self._body(request, ValueBody)
        self.ports.set_enabled(number, body.value)
        return self._value(body.value)

    async def status(self, request: Request) -> Response:
        """thinghub's addition: the queue, the cloud link and the ports at a glance."""
        return JSONResponse(
            {
                "board": self.board.name,
                "queue": self.queue.stats().as_json(),
                "cloud": self.cloud.status(),
                "ports": self.ports.describe(),
            }
        )


def _wrap(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error_response(exc.status, exc.message, **exc.extra)
        except PrivilegeRequired as exc:
            return _error_response(
                exc.status,
                exc.message,
                board=exc.board,
                reading=exc.reading,
                privilege=exc.privilege,
            )
        except BoardInvalid as exc:
            return _error_response(
                exc.status, exc.message, board=exc.board, reading=exc.reading, field=exc.field
            )
        except BoardError as exc:
            return _error_response(exc.status, exc.message, board=exc.board, reading=exc.reading)
        except ClientDisconnect:
            return Response(status_code=400)

    return endpoint


class TokenGate:
    """Requires `Authorization: Bearer <token>` (WebSockets may send `?token=`) on every path."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _allowed(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                return hmac.compare_digest(value[7:].strip(), self.token)
        if scope["type"] == "websocket":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0].encode()
            return bool(given) and hmac.compare_digest(given, self.token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "token required"})
                return
            response = _error_response(
                401, "a valid token is required: Authorization: Bearer <token>"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_app(api: EdgeApi, token: str | None) -> ASGIApp:
    get, post, put, delete = ["GET"], ["POST"], ["PUT"], ["DELETE"]
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/serialNumber", api.serial_number, get),
        ("/time", api.get_time, get),
        ("/time", api.post_time, post),
        ("/timeAccurate", api.time_accurate, get),
        ("/chargeInputVoltage", api.input_voltage, get),
        ("/chargeInputCurrent", api.input_current, get),
        ("/batteryVoltage", api.battery_voltage, get),
        ("/stateOfCharge", api.state_of_charge, get),
        ("/batterySaver", api.get_battery_saver, get),
        ("/batterySaver", api.put_battery_saver, put),
        ("/deviceAdcRead", api.adc_read, get),
        ("/deviceVoltage", api.port_voltage, post),
        ("/sleep", api.sleep, post),
        ("/tempRead", api.temperature, get),
        ("/pressRead", api.pressure, get),
        ("/deviceAdcRead420", api.adc_read_420, get),
        ("/deviceRsSel", api.port_mode, post),
        ("/observation", api.flash, post),
        ("/configure", api.get_configure, get),
        ("/configure", api.put_configure, put),
        ("/configure", api.delete_configure, delete),
        ("/interfacePriority", api.get_interface, get),
        ("/interfacePriority/{kind:str}", api.put_interface, put),
        ("/message", api.message, post),
        ("/version", api.version, get),
        ("/firmware", api.firmware, get),
        ("/hardware", api.hardware, get),
        ("/update", api.update, post),
        ("/accessible", api.accessible, post),
        ("/cloudConnection", api.get_cloud, get),
        ("/cloudConnection", api.put_cloud, put),
        ("/deviceConnection", api.get_device, get),
        ("/deviceConnection", api.put_device, put),
        ("/status", api.status, get),
    ]
    # One Route per path, dispatching on the method, so a wrong method is a 405 in our shape.
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for path, handler, methods in table:
        for method in methods:
            by_path.setdefault(path, {})[method] = _wrap(handler)

    def dispatcher(
        handlers: dict[str, Callable[[Request], Awaitable[Response]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            # HEAD is GET without the body (the server drops it).
            method = "GET" if request.method == "HEAD" else request.method
            handler = handlers.get(method)
            if handler is None:
                allowed = ", ".join(sorted(handlers))
                response = _error_response(
                    405, f"{request.method} {request.url.path}: use {allowed}"
                )
                response.headers["Allow"] = allowed
                return response
            return await handler(request)

        return endpoint

    routes: list[Any] = []
    for path, handlers in by_path.items():
        if path == "/interfacePriority/{kind:str}":
            inner = dispatcher(handlers)

            async def kinds(
                request: Request, inner: Callable[[Request], Awaitable[Response]] = inner
            ) -> Response:
                if request.path_params["kind"] not in ("cellular", "ethernet"):
                    return _error_response(404, "use /api/interfacePriority/cellular or /ethernet")
                return await inner(request)

            routes.append(Route("/api" + path, kinds, methods=ANY_METHOD))
            continue
        routes.append(
            Route(
                "/api" + path,
                dispatcher(handlers),
                methods=ANY_METHOD,
            )
        )
    routes.append(WebSocketRoute("/ws/port/{number}", port_socket(api.ports)))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error_response(404, f"no route {request.method} {request.url.path}")

    async def crashed(request: Request, exc: Exception) -> Response:
        logger.error("edge api: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "the edge failed on this request; see its log")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 500: crashed})
    return TokenGate(app, token)
