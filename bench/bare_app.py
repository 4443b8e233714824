"""The reference server: bare Starlette routes for thinghub's two measured calls, served by
thinghub's own HTTP server.

`python -m bench.bare_app` reads what to answer from the BENCH_BARE environment variable (JSON,
written by bench.http once thinghub has the devices), binds 127.0.0.1 on an ephemeral port,
prints one line `bare ready {"host": ..., "port": ...}` and serves until SIGTERM or SIGINT.

Same server: the protocol class is thinghub's (thinghub.http_server.protocol_class, with the
HTTP limits of the default settings) and the uvicorn options are those of
thinghub.app.ThingHub._serve (httptools, uvloop, one process, no access log, no server header,
no proxy headers, backlog 2048, our own pre-bound socket). Same contract, done the plainest
way, with nothing in between but Starlette's router:

    GET /v1/devices/{id}    `Authorization: Bearer <API token>`: the token's SHA-256 must be the
                            known one (thinghub stores and looks up tokens by that hash), the
                            id (stripped, as thinghub does) must be the known device; the answer
                            is the very body thinghub gives (200, application/json), else 401 or
                            404 in thinghub's error shape.
    POST /devices/{id}/messages/events?api-version=...
                            `Authorization: SharedAccessSignature ...`: parsed and verified
                            against the device's keys (thinghub.security.sas) the first time,
                            then remembered until it expires (as thinghub's device auth
                            does), `api-version` required, the body read within the size
                            limit and parsed as JSON when it is JSON (as thinghub's ingest parses
                            it for observations); 204. Nothing is stored.

bench.http checks before measuring that both servers give the same status, headers (but
`date`) and body for each measured request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import time
from collections.abc import Generator
from typing import Any

import orjson
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from thinghub.config import Settings
from thinghub.http_server import HttpLimits, protocol_class
from thinghub.security import sas

__all__ = ["create_app", "main"]

BACKLOG = 2048  # the same listen backlog thinghub uses
ENV = "BENCH_BARE"  # the JSON the routes answer from (see bench.http)

JSON = "application/json"
UNAUTHORIZED_BEARER = orjson.dumps(
    {"error": {"code": "Unauthorized", "message": "unknown API token", "field": "Authorization"}}
)
UNAUTHORIZED_DEVICE = orjson.dumps(
    {
        "Message": "ErrorCode:IotHubUnauthorizedAccess;unknown device or bad credentials",
        "ExceptionMessage": "",
    }
)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling, as in thinghub.app: we set should_exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def create_app(config: dict[str, Any], settings: Settings) -> Starlette:
    """The two routes. `config`: token_sha256 (hex), devices ({id: GET body}), keys ({id:
    [primary, secondary]}), hub_hostname."""
    token_hash = config["token_sha256"]
    devices: dict[str, bytes] = {k: v.encode() for k, v in config["devices"].items()}
    keys: dict[str, list[str]] = config["keys"]
    hub_hostname: str = config["hub_hostname"]
    max_payload = settings.max_payload_bytes
    verified: dict[tuple[str, str], float] = {}  # (device id, token) -> its expiry

    async def get_device(request: Request) -> Response:
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        digest = hashlib.sha256(value.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, token_hash):
            return Response(
                UNAUTHORIZED_BEARER,
                401,
                headers={"WWW-Authenticate": "Bearer"},
                media_type=JSON,
            )
        body = devices.get(request.path_params["device_id"].strip())
        if body is None:
            error = {
                "error": {
                    "code": "NotFound",
                    "message": f"device {request.path_params['device_id'].strip()!r} not found",
                    "field": "deviceId",
                }
            }
            return Response(orjson.dumps(error), 404, media_type=JSON)
        return Response(body, media_type=JSON)

    async def send_event(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        refused = Response(UNAUTHORIZED_DEVICE, 401, media_type=JSON)
        if "api-version" not in request.query_params:
            return Response(b'{"Message":"ErrorCode:ArgumentInvalid"}', 400, media_type=JSON)
        device_keys = keys.get(device_id)
        if device_keys is None:
            return refused
        authorization = request.headers.get("authorization") or ""
        if verified.get((device_id, authorization), 0.0) <= time.time():
            try:
                token = sas.parse(authorization)
            except sas.SasError:
                return refused
            expected = f"{hub_hostname}/devices/{device_id}"
            for key in device_keys:
                try:
                    sas.verify(token, key_b64=key, expected_resource=expected, now=time.time())
                    break
                except sas.SasError:
                    continue
            else:
                return refused
            verified[(device_id, authorization)] = float(token.expiry)
        body = await request.body()
        if len(body) > max_payload:
            return Response(b'{"Message":"ErrorCode:MessageTooLarge"}', 413, media_type=JSON)
        if JSON in (request.headers.get("content-type") or ""):
            with contextlib.suppress(orjson.JSONDecodeError):
                orjson.loads(body)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/v1/devices/{device_id}", get_device, methods=["GET"]),
            Route("/devices/{device_id}/messages/events", send_event, methods=["POST"]),
        ]
    )


async def serve(host: str = "127.0.0.1") -> None:
    settings = Settings.defaults()
    config_json = json.loads(os.environ[ENV])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    limits = HttpLimits(
        max_head_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        head_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        keepalive_timeout_s=settings.http_keepalive_timeout_s,
        max_connections=settings.http_max_connections,
    )
    config = uvicorn.Config(
        create_app(config_json, settings),
        http=protocol_class(limits),
        loop="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        limit_concurrency=None,
        timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
        backlog=BACKLOG,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="bare.serve")
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    bound_host, port = sock.getsockname()[:2]
    print("bare ready " + json.dumps({"host": bound_host, "port": port}), flush=True)
    await task


def main() -> None:
    uvloop.run(serve())


if __name__ == "__main__":
    main()
