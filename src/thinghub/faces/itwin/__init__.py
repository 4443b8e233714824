"""The Bentley iTwin IoT (sensemetrics) face: JSON-RPC over TCP and WebSocket, REST, SDE.

docs/faces/itwin.md documents it (for users, and under "How it works" its design).
Registration (`FACE`): the REST API and Sensor Data Service at /itwin/api (and /api on
`--face-listen itwin=HOST:PORT`), OAuth2 client credentials at /connect/token, the socket API
over WebSocket at /itwin/ws on the HTTP port, two listeners of its own: `itwin_ws`
(WebSocket, path `/`, default port 4201) and `itwin_tcp` (plain TCP, 4200), both with TLS
when `itwin_tls` is set, and the fan-out of live pushes as a worker.

Module by module:

| module | concept |
| --- | --- |
| framing | sans-IO TCP stream of concatenated JSON values; one WS message; brace-safe encoder |
| jsonrpc | JSON-RPC 2.0 requests, id echo rules, error codes, result/chunk/finished builders |
| methods | the method table: params binding (-32602 naming the param), dispatch, help |
| params | params models of every socket method; uploadData entries read one by one |
| utility | authenticate, help and time |
| ids | the fixed id mapping of thinghub devices to nodes, devices and sensors |
| entities | node, device and sensor objects in the seed's shapes |
| catalog | metric, unit and template objects (getMetrics, getUnits, /metrics/types, ...) |
| series | (time, value) points into `{ISO: value}` chunks, converted |
| timestamps | ISO ms times on the wire |
| schemas | REST and Sensor Data Service bodies and their error shapes |
| body | bounded JSON bodies, tolerating the seed's trailing commas |
| scope | projects: which one a request is about (`projectIds`) |
| sensor_metrics | the raw metrics of a sensor and their units (DTDL models, generic sensors) |
| network | nodes, devices and sensors over the core: found, listed, rendered |
| writes | create*, update*, integrations: entities created through iTwin |
| data | observations: metrics, streamed series, deltas, summaries, uploads |
| fanout | subscribeData and subscribe* pushes, one bus subscription per feed |
| backend | what the socket and REST APIs share; scopes |
| connection | one JSON-RPC connection over any transport, requests in order |
| socket_api | every socket method |
| transports | TCP, WebSocket (own port) and ASGI WebSocket adapters and listeners |
| rest | the REST API and Sensor Data Service routes |
| token | POST /connect/token |
"""

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from thinghub.faces.face import Face, FaceContext, FaceParts
from thinghub.faces.itwin.backend import Backend
from thinghub.faces.itwin.body import MAX_BODY_BYTES, BodyError, read_json_body
from thinghub.faces.itwin.catalog import (
    DEVICE_TYPES,
    SENSOR_TYPES,
    device_types_body,
    metric_json,
    metric_type_json,
    metrics_by_sensor_body,
    metrics_types_body,
    sensor_metric_json,
    sensor_types_body,
    unit_json,
    units_by_metric,
)
from thinghub.faces.itwin.connection import RpcConnection, Transport
from thinghub.faces.itwin.entities import (
    THINGHUB_TYPES,
    DeviceInfo,
    EntityInfo,
    LastObservation,
    Location,
    NodeInfo,
    SensorInfo,
    TimeStyle,
    device_json,
    entity_json,
    integration_json,
    node_json,
    sensor_json,
)
from thinghub.faces.itwin.framing import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    NEED_DATA,
    FrameDecoder,
    FrameError,
    NeedData,
    decode_message,
    encode_frame,
)
from thinghub.faces.itwin.ids import (
    DEFAULT_COMPONENT,
    DeviceRef,
    EntityKind,
    EntityRef,
    NodeRef,
    SensorRef,
    check_itwin_id,
    derived_core_id,
    format_ref,
    kind_of,
    parse_ref,
)
from thinghub.faces.itwin.jsonrpc import (
    AUTH_FAILED,
    AUTH_REQUIRED,
    CONFLICT,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    UNAVAILABLE,
    Request,
    RequestId,
    RpcError,
    data_chunk,
    error_message,
    finished,
    internal_error,
    invalid_params,
    parse_request,
    reply_id,
    result,
    rpc_error_for,
    status,
)
from thinghub.faces.itwin.methods import (
    ACKNOWLEDGED,
    Invocation,
    MethodKind,
    MethodSpec,
    MethodTable,
    bind,
    param_error,
)
from thinghub.faces.itwin.reference import REFERENCE_PATH, jsonrpc_reference
from thinghub.faces.itwin.rest import create_app, render_error
from thinghub.faces.itwin.series import MAX_CHUNK_POINTS, chunk_points, data_chunks, stream_chunks
from thinghub.faces.itwin.socket_api import build_table
from thinghub.faces.itwin.timestamps import format_time, format_time_offset, parse_time
from thinghub.faces.itwin.token import token_route
from thinghub.faces.itwin.transports import TcpListener, WebSocketListener, serve_asgi_websocket
from thinghub.faces.itwin.utility import MAX_AUTH_FAILURES, add_utility_methods

__all__ = [
    "ACKNOWLEDGED",
    "AUTH_FAILED",
    "AUTH_REQUIRED",
    "CONFLICT",
    "DEFAULT_COMPONENT",
    "DEVICE_TYPES",
    "FACE",
    "FORBIDDEN",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIMIT_EXCEEDED",
    "MAX_AUTH_FAILURES",
    "MAX_BODY_BYTES",
    "MAX_CHUNK_POINTS",
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "METHOD_NOT_FOUND",
    "NEED_DATA",
    "NOT_FOUND",
    "PARSE_ERROR",
    "SENSOR_TYPES",
    "THINGHUB_TYPES",
    "UNAVAILABLE",
    "BodyError",
    "DeviceInfo",
    "DeviceRef",
    "EntityInfo",
    "EntityKind",
    "EntityRef",
    "FrameDecoder",
    "FrameError",
    "Invocation",
    "LastObservation",
    "Location",
    "MethodKind",
    "MethodSpec",
    "MethodTable",
    "NeedData",
    "NodeInfo",
    "NodeRef",
    "Request",
    "RequestId",
    "RpcError",
    "SensorInfo",
    "SensorRef",
    "TimeStyle",
    "add_utility_methods",
    "bind",
    "build",
    "check_itwin_id",
    "chunk_points",
    "data_chunk",
    "data_chunks",
    "decode_message",
    "derived_core_id",
    "device_json",
    "device_types_body",
    "encode_frame",
    "entity_json",
    "error_message",
    "finished",
    "format_ref",
    "format_time",
    "format_time_offset",
    "integration_json",
    "internal_error",
    "invalid_params",
    "kind_of",
    "metric_json",
    "metric_type_json",
    "metrics_by_sensor_body",
    "metrics_types_body",
    "node_json",
    "param_error",
    "parse_ref",
    "parse_request",
    "parse_time",
    "read_json_body",
    "reply_id",
    "result",
    "rpc_error_for",
    "sensor_json",
    "sensor_metric_json",
    "sensor_types_body",
    "status",
    "stream_chunks",
    "unit_json",
    "units_by_metric",
]


def build(context: FaceContext) -> FaceParts:
    """The face's REST app, its root routes, its two listeners and its fan-out worker, over
    one backend shared by every build (the shared port's and `--face-listen`'s)."""
    settings = context.settings
    backend = context.shared.get(FACE_NAME)
    if not isinstance(backend, Backend):
        backend = Backend.build(context.services)
        context.shared[FACE_NAME] = backend
    table = build_table(backend)

    def connection(transport: Transport) -> RpcConnection:
        return RpcConnection(table, transport)

    async def websocket(ws: WebSocket) -> None:
        await serve_asgi_websocket(ws, connection)

    tls = context.server_ssl() if settings.itwin_tls else None
    app = create_app(context, backend)
    app.add_api_route(
        REFERENCE_PATH,
        jsonrpc_reference(table, tcp_port=settings.itwin_tcp_port, ws_port=settings.itwin_ws_port),
        methods=["GET"],
        include_in_schema=False,
    )
    return FaceParts(
        app=app,
        root_routes=(
            token_route(context.services),
            WebSocketRoute("/itwin/ws", websocket),
        ),
        listeners=(
            WebSocketListener("itwin_ws", settings.host, settings.itwin_ws_port, connection, tls),
            TcpListener("itwin_tcp", settings.host, settings.itwin_tcp_port, connection, tls),
        ),
        workers=(backend.fanout,),
    )


FACE_NAME = "itwin"
FACE = Face(
    name=FACE_NAME,
    prefix="/itwin/api",
    native_prefix="/api",
    build=build,
    render_error=render_error,
    # Checked free at start-up, before anything is created (a busy one names its flag).
    listen_ports=("itwin_ws_port", "itwin_tcp_port"),
    references=(("JSON-RPC reference", REFERENCE_PATH),),
)
