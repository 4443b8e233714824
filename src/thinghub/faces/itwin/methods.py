"""The method table of the iTwin socket API: registration, params binding, dispatch, help.

A method is registered once with its params model (params.py) and one of three kinds:

- CALL: `async def handler(ctx, params) -> result`; one `{"result": ...}`.
- STREAM: an async generator of result objects (`{"data": {...}}` chunks, see
  jsonrpc.data_chunk's shape); each is sent with the request's id, then the table sends
  `{"requestStatus": "finished"}` in a message of its own. getData, getObservations.
- SUBSCRIPTION: an async generator that runs until cancelled; each item is pushed with
  the subscribe request's id and `finished` is never sent. It should first yield
  ACKNOWLEDGED once it is registered (clients ignore it; tests wait for it).

Theory of operation, for the connection adapter (TCP or WebSocket) that owns the socket:

    request = jsonrpc.parse_request(value)            # RpcError -> send error_message
    invocation = table.invoke(ctx, request, is_authenticated=...)
    if invocation.kind is MethodKind.SUBSCRIPTION:    # runs beside later requests
        task_group.create_task(pump(invocation.messages()), name=...)  # keyed by request.id
    else:                                             # in order: the next request waits
        async for message in invocation.messages():
            await send(encode(message))

invoke() never raises for a bad request: an unknown method (-32601), a method before
authenticate (-32001) or bad params (-32602, naming the param) become an invocation whose
messages() yields that one error. Domain errors raised by a handler are translated once
(jsonrpc.rpc_error_for) and end a stream without `finished`. Any other exception is our bug:
it propagates to the adapter, which logs it and sends jsonrpc.internal_error(request.id).
Notifications (no id) get no message; a streamed or subscription method is not run for one,
since nothing could be delivered.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from thinghub.domain import errors
from thinghub.faces.itwin import jsonrpc
from thinghub.faces.itwin._paths import error_paths
from thinghub.faces.itwin.jsonrpc import Request, RpcError

__all__ = [
    "ACKNOWLEDGED",
    "MAX_REPORTED_PARAM_ERRORS",
    "Invocation",
    "MethodKind",
    "MethodSpec",
    "MethodTable",
    "bind",
    "param_error",
]

Ctx = TypeVar("Ctx")
P = TypeVar("P", bound=BaseModel)

# The status result a subscription yields once it is live.
ACKNOWLEDGED: Final[Mapping[str, str]] = {"requestStatus": "acknowledged"}
# A -32602 lists at most this many bad params in data.errors (the message names the first).
MAX_REPORTED_PARAM_ERRORS: Final = 10


class MethodKind(enum.Enum):
    CALL = "call"
    STREAM = "stream"
    SUBSCRIPTION = "subscription"


@dataclass(frozen=True, slots=True)
class MethodSpec(Generic[Ctx]):
    """One registered method."""

    name: str
    params: type[BaseModel]
    kind: MethodKind
    handler: Callable[[Ctx, Any], Any]
    summary: str
    needs_auth: bool = True


class MethodTable(Generic[Ctx]):
    """The methods a connection can call, with what `help` says about them.

    Ctx is whatever the adapter passes to handlers (the connection's principal, services, a
    subscription registry...); the table never looks inside it.
    """

    def __init__(self) -> None:
        self._methods: dict[str, MethodSpec[Ctx]] = {}

    def add(self, spec: MethodSpec[Ctx]) -> None:
        """Register a method.

        Raises:
            ValueError: a method of that name is registered already.
        """
        if spec.name in self._methods:
            raise ValueError(f"method {spec.name!r} is registered twice")
        self._methods[spec.name] = spec

    def call(
        self,
        name: str,
        params: type[P],
        *,
        summary: str,
        needs_auth: bool = True,
    ) -> Callable[[Callable[[Ctx, P], Awaitable[Any]]], Callable[[Ctx, P], Awaitable[Any]]]:
        """Decorator: register `async def handler(ctx, params) -> result` as a CALL."""

        def register(
            handler: Callable[[Ctx, P], Awaitable[Any]],
        ) -> Callable[[Ctx, P], Awaitable[Any]]:
            self.add(MethodSpec(name, params, MethodKind.CALL, handler, summary, needs_auth))
            return handler

        return register

    def stream(
        self, name: str, params: type[P], *, summary: str
    ) -> Callable[[Callable[[Ctx, P], AsyncIterator[Any]]], Callable[[Ctx, P], AsyncIterator[Any]]]:
        """Decorator: register an async generator of result objects as a STREAM."""

        def register(
            handler: Callable[[Ctx, P], AsyncIterator[Any]],
        ) -> Callable[[Ctx, P], AsyncIterator[Any]]:
            self.add(MethodSpec(name, params, MethodKind.STREAM, handler, summary))
            return handler

        return register

    def subscription(
        self, name: str, params: type[P], *, summary: str
    ) -> Callable[[Callable[[Ctx, P], AsyncIterator[Any]]], Callable[[Ctx, P], AsyncIterator[Any]]]:
        """Decorator: register an async generator of pushes as a SUBSCRIPTION."""

        def register(
            handler: Callable[[Ctx, P], AsyncIterator[Any]],
        ) -> Callable[[Ctx, P], AsyncIterator[Any]]:
            self.add(MethodSpec(name, params, MethodKind.SUBSCRIPTION, handler, summary))
            return handler

        return register

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[MethodSpec[Ctx]]:
        return iter(sorted(self._methods.values(), key=lambda spec: spec.name))

    def __len__(self) -> int:
        return len(self._methods)

    def get(self, name: str, request_id: jsonrpc.RequestId = None) -> MethodSpec[Ctx]:
        """The method `name`.

        Raises:
            RpcError: METHOD_NOT_FOUND.
        """
        spec = self._methods.get(name)
        if spec is None:
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {shown!r}", id=request_id)
        return spec

    def invoke(self, ctx: Ctx, request: Request, *, is_authenticated: bool) -> Invocation[Ctx]:
        """Resolve and bind a request; the result's messages() runs it.

        Never raises for a bad request: the error is the invocation's one message.
        """
        try:
            spec = self.get(request.method, request.id)
            if spec.needs_auth and not is_authenticated:
                raise RpcError(
                    jsonrpc.AUTH_REQUIRED,
                    "Authentication required: call authenticate {code} first",
                    id=request.id,
                )
            params = bind(spec.params, request.params, request.id)
        except RpcError as exc:
            return Invocation(request, MethodKind.CALL, None, None, ctx, exc)
        return Invocation(request, spec.kind, spec, params, ctx, None)

    def help_entries(self) -> list[dict[str, Any]]:
        """Every method with its params: `[{method, kind, summary, params: [{name, type,
        required, description}]}]`, sorted by name."""
        return [
            {
                "method": spec.name,
                "kind": spec.kind.value,
                "summary": spec.summary,
                "params": _describe_params(spec.params),
            }
            for spec in self
        ]

    def help_text(self) -> str:
        """The same as text, one method a line: `getData {sensor, metric, unit, params?,
        ...} - summary` (optional params end in `?`)."""
        lines = []
        for entry in self.help_entries():
            names = ", ".join(p["name"] + ("" if p["required"] else "?") for p in entry["params"])
            lines.append(f"{entry['method']} {{{names}}} - {entry['summary']}")
        return "\n".join(lines)


@dataclass(slots=True)
class Invocation(Generic[Ctx]):
    """A request bound to its method, ready to run (or the error to answer with)."""

    request: Request
    kind: MethodKind
    spec: MethodSpec[Ctx] | None
    params: BaseModel | None
    ctx: Ctx
    error: RpcError | None

    async def messages(self) -> AsyncGenerator[dict[str, Any], None]:
        """The response messages, in order; see the module docstring for each kind."""
        request_id = self.request.id
        is_silent = self.request.is_notification
        if self.error is not None or self.spec is None:
            if not is_silent and self.error is not None:
                yield jsonrpc.error_message(self.error)
            return
        if is_silent and self.kind is not MethodKind.CALL:
            return
        handler = self.spec.handler
        try:
            if self.kind is MethodKind.CALL:
                value = await handler(self.ctx, self.params)
                if not is_silent:
                    yield jsonrpc.result(request_id, value)
                return
            async for item in handler(self.ctx, self.params):
                if isinstance(item, Mapping) and item.get("requestStatus") == "finished":
                    raise ValueError(f"{self.spec.name} yielded requestStatus finished itself")
                yield jsonrpc.result(request_id, item)
            if self.kind is MethodKind.STREAM:
                yield jsonrpc.finished(request_id)
        except RpcError as exc:
            if not is_silent:
                yield jsonrpc.error_message(exc.with_id(request_id))
        except errors.Error as exc:
            if not is_silent:
                yield jsonrpc.error_message(jsonrpc.rpc_error_for(exc, request_id))


def bind(model: type[P], params: Mapping[str, Any], request_id: jsonrpc.RequestId = None) -> P:
    """Validate `params` against `model`.

    Raises:
        RpcError: INVALID_PARAMS naming the first bad param in the message and `data.param`,
            with up to MAX_REPORTED_PARAM_ERRORS in `data.errors` (inputs are not echoed).
    """
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise param_error(exc, request_id) from None


def param_error(exc: ValidationError, request_id: jsonrpc.RequestId = None) -> RpcError:
    """The -32602 for a pydantic ValidationError of a method's params."""
    found = [{"param": e["path"], "message": e["message"]} for e in error_paths(exc)]
    first = found[0] if found else {"param": "params", "message": "invalid"}
    return RpcError(
        jsonrpc.INVALID_PARAMS,
        f"Invalid params: {first['param']}: {first['message']}",
        {"param": first["param"], "errors": found[:MAX_REPORTED_PARAM_ERRORS]},
        id=request_id,
    )


def _describe_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    # Required params first, then optional ones, then projectIds (every method has it).
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    defs = schema.get("$defs", {})
    entries = [
        {
            "name": name,
            "type": _type_name(prop, defs),
            "required": name in required,
            "description": prop.get("description", ""),
        }
        for name, prop in schema.get("properties", {}).items()
    ]
    return sorted(entries, key=lambda e: (not e["required"], e["name"] == "projectIds"))


def _type_name(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "$ref" in prop:
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        return "string or object" if target.get("title") == "Limit" else "object"
    if "anyOf" in prop:
        names = [_type_name(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(dict.fromkeys(names)) or "null"
    kind = prop.get("type")
    if kind == "array":
        return f"array of {_type_name(prop.get('items', {}), defs)}"
    if kind == "integer" or kind == "number":
        return "number"
    if isinstance(kind, str):
        return kind
    return "any"
