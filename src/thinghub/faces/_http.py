"""HTTP plumbing shared by the REST faces: the one error body, status mapping and auth.

Every REST face answers errors as {"error": {"code", "message", "field"}} with the status
from STATUS_OF; faces with a documented shape of their own pass `render` to install_errors.

Bodies are judged while they are read, before FastAPI parses them: over max_request_bytes is
413 (BodyLimit), JSON nested deeper than max_json_depth is 400 (JsonDepth). Both raise from
the ASGI `receive`, so the route's error handling answers in the face's shape, after the
caller is authenticated (authenticate_before_body).

Where clients reach the API faces (`api_base_url`), for URLs a face hands out for other
programs to use (the ux4iot Endpoint of a key, on /v1 and in the console): the shared HTTP
port (the ready line's `http`) serves every face under its prefix, while a face on a port of
its own (`--face-listen NAME=HOST:PORT`) serves only that face, so a URL built from the port a
request came in on is wrong there. In order: `public_url` when set (TLS or a proxy in front);
a request on the shared HTTP port: that port, with the host the client used; on another port:
the shared HTTP port, at the HTTP listener's address when it is bound to one, else with the
host the client used. "The host the client used" is the Host header when the caller trusts it
(`trust_host`: a browser's own pages, where it is what the browser's machine knows the server
by, a port mapped by a container included), else the address of the socket the request
reached (API answers never echo a value the client sent, as nextLink does not).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.routing import Match
from starlette.staticfiles import StaticFiles

from thinghub.domain import errors
from thinghub.domain.json_depth import check_depth
from thinghub.domain.model import Principal
from thinghub.http_errors import STATUS_OF, status_of
from thinghub.services.core import Services

if TYPE_CHECKING:  # faces.face imports this module
    from thinghub.config import Settings
    from thinghub.faces.face import FaceContext

__all__ = [
    "DOCS_ASSETS_PATH",
    "DOCS_PATH",
    "ERROR_SCHEMA",
    "OPENAPI_PATH",
    "REDOC_PATH",
    "REQUEST_NOTE_KEY",
    "STATUS_OF",
    "WILDCARDS",
    "BodyLimit",
    "BodyRejected",
    "ErrorRenderer",
    "JsonBodies",
    "JsonDepth",
    "OpenApiPatch",
    "OrjsonResponse",
    "addresses_of",
    "api_base_url",
    "authenticate_before_body",
    "docs_assets",
    "document_bearer",
    "document_errors",
    "document_page_size",
    "error_body",
    "face_app",
    "install_docs",
    "install_errors",
    "principal_of",
    "services_of",
    "settings_of",
    "status_of",
]

logger = logging.getLogger(__name__)

ErrorRenderer = Callable[[errors.Error, int], Response]
# A dict the server's request log puts in each HTTP request's scope; the face that
# authenticates the caller writes "principal" (the principal's subject, an id) into it.
REQUEST_NOTE_KEY = "thinghub.request"

# FastAPI's 400 detail when its JSON parser fails with something other than a JSONDecodeError:
# a body that is not UTF-8, or an integer of more than 4,300 digits (Python's int limit).
FASTAPI_BODY_ERROR = "There was an error parsing the body"


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(error: errors.Error) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.field is not None:
        body["field"] = error.field
    return {"error": body}


def _default_render(error: errors.Error, status: int) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return OrjsonResponse(error_body(error), status_code=status, headers=headers)


def _validation_error(exc: RequestValidationError) -> errors.Invalid:
    problems = exc.errors()
    if not problems:
        return errors.Invalid("the request is invalid")
    first = problems[0]
    loc = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header")
    ]
    field = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return errors.Invalid("the body is not valid JSON", field="body")
    if kind == "missing":
        if field is None:  # no body at all
            return errors.Invalid("a JSON object body is required", field="body")
        return errors.Invalid(f"{field} is required", field=field)
    if kind == "extra_forbidden":
        return errors.Invalid(
            f"{field} is not a field this route applies (nothing was changed)", field=field
        )
    if not loc and kind in ("model_attributes_type", "dict_type"):
        return errors.Invalid("the body must be a JSON object", field="body")
    return errors.Invalid(
        f"{field or 'body'}: {first.get('msg', 'invalid')}", field=field or "body"
    )


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route of this path takes (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_errors(app: FastAPI, render: ErrorRenderer = _default_render) -> None:
    """Map domain errors, validation errors and HTTP errors to the face's error body. The
    error's code goes into the request's note too (the request log and /metrics count it)."""

    def answer(request: Request, error: errors.Error, status: int) -> Response:
        note = request.scope.get(REQUEST_NOTE_KEY)
        if isinstance(note, dict):
            note["error"] = error.code
        return render(error, status)

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.Error)
        return answer(request, exc, status_of(exc))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return answer(request, _validation_error(exc), 400)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, BodyRejected):
            return answer(request, exc.error, exc.status_code)
        kinds: dict[int, type[errors.Error]] = {
            401: errors.Unauthorized,
            403: errors.Forbidden,
            404: errors.NotFound,
            405: errors.Invalid,
            409: errors.Conflict,
            413: errors.TooLarge,
        }
        kind = kinds.get(exc.status_code, errors.Invalid)
        message = str(exc.detail) if exc.detail else "request failed"
        if exc.status_code == 404:
            message = "no such route"
        error = kind(message)
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            error = errors.Invalid("the body is not valid JSON", field="body")
        if exc.status_code == 405:
            error = kind("method not allowed on this route")
            error.code = "MethodNotAllowed"
        response = answer(request, error, exc.status_code)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = _allowed_methods(app, request)
        return response

    async def on_crash(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error in %s", app.title)
        error = errors.Error("internal error; it has been logged")
        error.code = "InternalError"
        response = answer(request, error, 500)
        # The error escapes to the server after this answer, which then ends the connection:
        # say so, so a keep-alive client does not send its next request into a closing socket.
        response.headers["Connection"] = "close"
        return response

    async def on_gone(request: Request, exc: Exception) -> Response:
        # The client left, or the server gave up on its body (http_body_timeout_s): there
        # is nobody to answer, and nothing went wrong here.
        logger.debug("%s: the client of %s went away", app.title, request.url.path)
        return Response(status_code=400)

    app.add_exception_handler(errors.Error, on_domain)
    app.add_exception_handler(ClientDisconnect, on_gone)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413.

    Raised as an HTTPException from `receive`, so it reaches the face's own error handler
    (FastAPI lets HTTPException through its body parsing); a declared Content-Length over the
    limit is refused before anything is read.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)  # no body to judge (nor to read)
            return
        limit = self.limit
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large = StarletteHTTPException(413, f"request body over {limit} bytes")
        if declared.isdigit() and int(declared) > limit:

            async def refuse() -> Any:
                raise too_large

            await self.app(scope, refuse, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        await self.app(scope, counted, send)


class BodyRejected(StarletteHTTPException):
    """A body refused while it is read, carrying the domain error to answer with.

    An HTTPException, because FastAPI lets those out of its body parsing as they are (any
    other exception there becomes a bare "There was an error parsing the body").
    """

    def __init__(self, error: errors.Error) -> None:
        super().__init__(status_of(error), error.message)
        self.error = error


class JsonDepth:
    """ASGI middleware: a JSON body nested deeper than `limit` is refused with 400.

    The body is passed on as it arrives; before its last part is handed over, the whole of it
    is measured (domain.json_depth, no recursion), so no parser ever sees a deeper document.
    Bodies sent as something other than JSON (the OAuth2 token endpoint's forms) are left
    alone: nothing parses them as JSON.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type")
        if content_type is not None and b"json" not in content_type.lower():
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def checked() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = b"".join(parts)
                    parts.clear()
                    try:
                        check_depth(body, self.limit, "body")
                    except errors.Invalid as exc:
                        raise BodyRejected(exc) from None
            return message

        await self.app(scope, checked, send)


class JsonBodies:
    """ASGI middleware: a body sent without a JSON content type is still read as JSON.

    `curl -d '{...}'` sends application/x-www-form-urlencoded; our JSON routes should parse it
    (and answer malformed JSON with 400) rather than call a valid object "not an object".
    Paths in `form_paths` keep their form bodies (the OAuth2 token endpoint).
    """

    def __init__(self, app: Any, form_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.form_paths = form_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and not scope["path"].endswith(self.form_paths or ("\0",))
        ):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            original = dict(scope["headers"]).get(b"content-type", b"")
            if b"json" not in original:
                scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


# The one error body of install_errors' default renderer, as a JSON Schema.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}
ERROR_DESCRIPTIONS = {
    400: "Bad request: a parameter or the body is invalid (the error names the field)",
    401: "Missing or invalid credentials",
    403: "The credentials do not allow this",
    404: "Not found, or not visible to the caller",
    409: "Conflict with the current state (an id that exists, a resource in use)",
    413: "The request body is over the limit",
}
BODY_METHODS = frozenset({"post", "put", "patch"})
OpenApiPatch = Callable[[dict[str, Any]], None]


def document_errors(schema: dict[str, Any], error_schema: dict[str, Any]) -> None:
    """Declare the error answers every operation can give, in the face's error shape.

    FastAPI declares 422, which no face sends (validation errors are 400s), and none of the
    errors the handlers do send: drop the one, add the others. Operations whose `security`
    is `[]` (public: the OAuth2 token endpoint) declare their own errors and are left alone;
    statuses a route declares itself are kept.
    """
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = error_schema
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if operation.get("security") == []:
                continue
            statuses = [400, 401, 403, 404]
            if method in BODY_METHODS:
                statuses += [409, 413]
            elif method == "delete":
                statuses.append(409)
            for status in statuses:
                responses.setdefault(
                    str(status), {"description": ERROR_DESCRIPTIONS[status], "content": ref}
                )
            for status, response in responses.items():
                if status[:1] in ("4", "5") and "content" not in response:
                    response["content"] = ref


def document_page_size(name: str, maximum: int) -> OpenApiPatch:
    """A page-size query parameter takes 1 to `maximum` (page_max, a setting: so the route's
    signature cannot say it)."""

    def patch(schema: dict[str, Any]) -> None:
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for parameter in operation.get("parameters", ()):
                    if parameter["name"] == name:
                        parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": maximum}

    return patch


def document_bearer(app: FastAPI, description: str) -> None:
    """Declare bearer auth in the OpenAPI document without a per-request dependency.

    (A router-level `Depends(HTTPBearer())` would run on every request just for the docs.)
    """

    def bearer(schema: dict[str, Any]) -> None:
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": description}
        }
        schema["security"] = [{"bearer": []}]

    app.state.openapi_patches.append(bearer)


def _install_openapi(app: FastAPI, error_schema: dict[str, Any]) -> None:
    """The face's OpenAPI document: FastAPI's, with `servers` (the prefix the face is mounted
    under, so generated clients call /v1/devices, not /devices), the errors the routes really
    send, and each patch in app.state.openapi_patches (the face's own corrections)."""
    app.state.openapi_patches = []

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                routes=app.routes,
                description=app.description,
                servers=app.servers or None,  # FastAPI adds the mount prefix on first request
            )
            document_errors(schema, error_schema)
            for patch in app.state.openapi_patches:
                patch(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Where a face app built by face_app serves its API documentation, under its prefix.
DOCS_PATH = "/docs"  # Swagger UI
REDOC_PATH = "/redoc"  # ReDoc
OPENAPI_PATH = "/openapi.json"  # the OpenAPI document both read
DOCS_ASSETS_PATH = "/docs/assets"  # their scripts, style sheets and icon
# Swagger UI's own settings: no call to the online validator, "Try it out" always shown.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "validatorUrl": None,
    "tryItOutEnabled": True,
    "persistAuthorization": True,
}


def docs_assets() -> Path:
    """The folder of Swagger UI's and ReDoc's files: shipped by the pinned fastapi-offline
    package (docs/dependencies.md), served by thinghub itself, so the docs work offline."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Swagger UI at DOCS_PATH and ReDoc at REDOC_PATH, both reading OPENAPI_PATH, with every
    file they load served from DOCS_ASSETS_PATH: no CDN, no fonts from elsewhere. Paths are
    relative to where the app is mounted (the request's root_path)."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=docs_assets()), name="docs-assets")

    async def swagger_ui(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + OPENAPI_PATH,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    async def redoc(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + OPENAPI_PATH,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(REDOC_PATH, redoc, methods=["GET"], include_in_schema=False)


def face_app(
    context: FaceContext,
    *,
    title: str,
    version: str,
    render: ErrorRenderer | None = None,
    error_schema: dict[str, Any] = ERROR_SCHEMA,
    form_paths: tuple[str, ...] = (),
) -> FastAPI:
    """A REST face's FastAPI app: docs at /docs and /redoc (install_docs), one error body,
    JSON bodies, the services and settings of `context` (services_of, settings_of).

    `error_schema` is the JSON Schema of what `render` writes, for the OpenAPI document.
    """
    app = FastAPI(
        title=title,
        version=version,
        docs_url=None,  # install_docs serves the pages without a CDN
        openapi_url=OPENAPI_PATH,
        redoc_url=None,
        default_response_class=OrjsonResponse,
    )
    app.state.services = context.services
    app.state.settings = context.settings
    app.state.addresses = context.addresses
    _install_openapi(app, error_schema)
    install_docs(app)
    install_errors(app) if render is None else install_errors(app, render)
    # Added first, so it runs innermost: it sees the content type JsonBodies sets.
    app.add_middleware(JsonDepth, limit=context.settings.max_json_depth)
    app.add_middleware(JsonBodies, form_paths=form_paths)
    app.add_middleware(BodyLimit, limit=context.settings.max_request_bytes)
    return app


def services_of(request: Request) -> Services:
    """The services of the face app serving `request` (face_app)."""
    services: Services = request.app.state.services
    return services


def settings_of(request: Request) -> Settings:
    """The settings of the face app serving `request` (face_app)."""
    settings: Settings = request.app.state.settings
    return settings


def addresses_of(request: Request) -> Mapping[str, Any]:
    """The server's bound addresses (the ready line's JSON) as the face app serving `request`
    sees them now (FaceContext.addresses)."""
    addresses: Callable[[], Mapping[str, Any]] = request.app.state.addresses
    return addresses()


WILDCARDS = ("", "0.0.0.0", "::")  # listener addresses that are every address of the machine


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def api_base_url(
    conn: HTTPConnection,
    settings: Settings,
    addresses: Mapping[str, Any],
    *,
    trust_host: bool = False,
) -> str:
    """This server's base URL for the API faces as `conn`'s client reaches it, without a
    trailing slash (the module docstring says how)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    http = addresses.get("http")
    server = conn.scope.get("server")
    host_header = conn.headers.get("host", "") if trust_host else ""
    if not http or server is None or int(server[1]) == int(http["port"]):  # the shared port
        if host_header:
            return f"{conn.url.scheme}://{host_header}"
        host, port = server or (settings.host, settings.http_port)
        return f"http://{_shown(str(host))}:{int(port)}"
    bound = str(http["host"])
    if bound not in WILDCARDS:
        host = bound
    elif host_header:
        host = conn.url.hostname or "127.0.0.1"
    else:
        host = str(server[0])
    return f"http://{_shown(host)}:{int(http['port'])}"


def principal_of(
    authenticate: Callable[[Services, str | None], Awaitable[Principal]] | None = None,
) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal from `Authorization: Bearer ...`."""

    async def dependency(request: Request) -> Principal:
        services = services_of(request)
        header = request.headers.get("authorization")
        if authenticate is not None:
            principal = await authenticate(services, header)
        else:
            principal = await services.auth.authenticate_header(header)
        note = request.scope.get(REQUEST_NOTE_KEY)
        if isinstance(note, dict):  # the access log names who called (never the token)
            note["principal"] = principal.subject
        return principal

    return dependency


def authenticate_before_body(
    app: FastAPI,
    authenticate: Callable[[Services, str | None], Awaitable[Principal]] | None = None,
) -> None:
    """A caller without a valid credential gets 401, whatever its body.

    FastAPI reads and parses a body before it runs dependencies, so malformed JSON (400) or a
    body over max_request_bytes (413) would otherwise answer a caller that was never
    authenticated. Install after install_errors: it wraps the face's own renderers.
    """
    render_invalid = app.exception_handlers[RequestValidationError]
    render_http = app.exception_handlers[StarletteHTTPException]
    render_error = app.exception_handlers[errors.Error]
    check = principal_of(authenticate)

    async def answer(request: Request, exc: Exception, render: Any) -> Response:
        try:
            await check(request)
        except errors.Error as denied:
            result = render_error(request, denied)
        else:
            result = render(request, exc)
        return result if isinstance(result, Response) else await result

    async def on_validation(request: Request, exc: Exception) -> Response:
        return await answer(request, exc, render_invalid)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if (
            exc.status_code == 413
            or isinstance(exc, BodyRejected)
            or (exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR)
        ):
            return await answer(request, exc, render_http)
        result = render_http(request, exc)
        return result if isinstance(result, Response) else await result

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
