"""JSON-RPC 2.0 messages of the iTwin socket API: requests, ids, errors, results, chunks.

The wire (JSON-RPC 2.0 §4-§5, as the real iTwin clients use it):
- a request is `{"jsonrpc": "2.0", "method", "params"?, "id"?}`; without `id` it is a
  notification and gets no reply. Unknown params (Bentley's client adds `projectIds` to
  everything) are the method's business, not an error here.
- ids are echoed, never sequenced. A string holding a canonical decimal integer is answered
  as that number, as the seed shows (`"id": "2"` is answered `"id": 2`): JavaScript clients
  key their callbacks by `String(id)`, so both forms find the same callback.
- a call gets one `{"result": ...}`; a streamed call (getData) several `{"result": {"data":
  {...}}}` then a separate `{"result": {"requestStatus": "finished"}}`; a subscription
  pushes `{"result": {"data": ...}}` with the subscribe request's id and never `finished`
  (Bentley's client would tear it down). Status-only results (`acknowledged`) are ignored
  by every client.
- errors are `{"error": {"code", "message"}}` with the request's id (null when it could not
  be read); never a `data` member (error_message says why).

Error codes: the standard ones (JSON-RPC 2.0 §5.1) and, in the range the specification
leaves to implementations (-32000..-32099), one per kind of domain error:

| code | name | when |
| --- | --- | --- |
| -32700 | PARSE_ERROR | the bytes are not JSON (TCP: the connection closes after it) |
| -32600 | INVALID_REQUEST | not a request object, no method, bad id, a batch, over a limit |
| -32601 | METHOD_NOT_FOUND | no such method |
| -32602 | INVALID_PARAMS | a param is missing or wrong; message and data name it |
| -32603 | INTERNAL_ERROR | our bug; the message says nothing more |
| -32001 | AUTH_REQUIRED | a method before a successful `authenticate` |
| -32002 | AUTH_FAILED | `authenticate` with a wrong code (repeated failures close) |
| -32003 | FORBIDDEN | the token's role or project does not allow it |
| -32004 | NOT_FOUND | no such node, device, sensor, metric data or subscription |
| -32005 | CONFLICT | create* of an entity that exists |
| -32006 | LIMIT_EXCEEDED | a named limit (size, rate, subscriptions) was hit |
| -32007 | UNAVAILABLE | the device is offline or did not answer in time |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from thinghub.domain import errors

__all__ = [
    "AUTH_FAILED",
    "AUTH_REQUIRED",
    "CONFLICT",
    "FORBIDDEN",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "JSONRPC_VERSION",
    "LIMIT_EXCEEDED",
    "MAX_METHOD_CHARS",
    "MAX_SAFE_INTEGER",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "UNAVAILABLE",
    "Request",
    "RequestId",
    "RpcError",
    "data_chunk",
    "error_message",
    "finished",
    "internal_error",
    "invalid_params",
    "parse_request",
    "reply_id",
    "result",
    "rpc_error_for",
    "status",
]

JSONRPC_VERSION: Final = "2.0"

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
AUTH_REQUIRED: Final = -32001
AUTH_FAILED: Final = -32002
FORBIDDEN: Final = -32003
NOT_FOUND: Final = -32004
CONFLICT: Final = -32005
LIMIT_EXCEEDED: Final = -32006
UNAVAILABLE: Final = -32007

# Method names are short identifiers; a longer one is not a method and is not echoed whole.
MAX_METHOD_CHARS: Final = 128
# The largest integer a JavaScript client reads exactly (Number.MAX_SAFE_INTEGER): a numeric
# string id past it stays a string, or the client would not find its callback.
MAX_SAFE_INTEGER: Final = 2**53 - 1
# A numeric string is answered as a number only in canonical form ("2", "-7", not "02",
# "+2" or "2.0"), so String(number) on the client gives back the exact string it sent.
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,15})")

RequestId = int | float | str | None


@dataclass(frozen=True, slots=True)
class Request:
    """A request as read: `id` already in its answered form (see reply_id)."""

    method: str
    params: Mapping[str, Any]
    id: RequestId
    is_notification: bool = False


class RpcError(Exception):
    """A JSON-RPC error to answer with.

    Attributes:
        code: the error code (table in the module docstring).
        message: a sentence naming what was wrong.
        data: optional structured detail, e.g. `{"param": "sensor"}`.
        id: the request id to answer with, when known (None otherwise).
    """

    def __init__(self, code: int, message: str, data: Any = None, *, id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.id = id

    def with_id(self, request_id: RequestId) -> RpcError:
        """The same error, answered to `request_id`."""
        return RpcError(self.code, self.message, self.data, id=request_id)


def reply_id(raw: object) -> RequestId:
    """The id to answer a request with: the same value, numeric strings as numbers.

    Raises:
        RpcError: INVALID_REQUEST (id null) for an id that is not a string, number or null.
    """
    if raw is None or raw.__class__ is int or raw.__class__ is float:
        return raw
    if isinstance(raw, str):
        if _CANONICAL_INT.fullmatch(raw):
            number = int(raw)
            if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER and raw != "-0":
                return number
        return raw
    raise RpcError(INVALID_REQUEST, "Invalid Request: id must be a string, a number or null")


def parse_request(value: Any) -> Request:
    """Read one decoded JSON value as a request.

    Args:
        value: what framing.FrameDecoder or framing.decode_message returned.

    Raises:
        RpcError: INVALID_REQUEST for anything that is not a request object (with the id
            when it could be read), INVALID_PARAMS when `params` is an array.
    """
    if isinstance(value, list):
        raise RpcError(
            INVALID_REQUEST, "Invalid Request: batches are not supported, send one request"
        )
    if not isinstance(value, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: a request is a JSON object")
    is_notification = "id" not in value
    request_id = reply_id(value.get("id"))
    if value.get("jsonrpc") != JSONRPC_VERSION:
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', id=request_id)
    method = value.get("method")
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_CHARS:
        raise RpcError(
            INVALID_REQUEST,
            f'Invalid Request: "method" must be a string of 1 to {MAX_METHOD_CHARS} characters',
            id=request_id,
        )
    params = value.get("params")
    if params is None:
        params = {}
    elif isinstance(params, list):
        raise RpcError(
            INVALID_PARAMS,
            "Invalid params: params must be an object of named parameters",
            {"param": "params"},
            id=request_id,
        )
    elif not isinstance(params, dict):
        raise RpcError(
            INVALID_REQUEST, 'Invalid Request: "params" must be an object', id=request_id
        )
    return Request(method, params, request_id, is_notification)


# -- building messages ------------------------------------------------------------------------


def result(request_id: RequestId, value: Any) -> dict[str, Any]:
    """`{"jsonrpc": "2.0", "id": id, "result": value}`."""
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": value}


def data_chunk(request_id: RequestId, data: Any) -> dict[str, Any]:
    """One chunk of a stream or a subscription push: `{"result": {"data": data}}`."""
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": {"data": data}}


def status(request_id: RequestId, request_status: str) -> dict[str, Any]:
    """A status-only result: `{"result": {"requestStatus": "acknowledged"}}`."""
    return {
        "jsonrpc": JSONRPC_VERSION,
        "id": request_id,
        "result": {"requestStatus": request_status},
    }


def finished(request_id: RequestId) -> dict[str, Any]:
    """The end of a streamed call, always a message of its own (never on a subscription)."""
    return status(request_id, "finished")


def error_message(exc: RpcError) -> dict[str, Any]:
    """`{"jsonrpc": "2.0", "id": exc.id, "error": {"code", "message"}}`.

    No `data` member on the wire, though JSON-RPC allows one: the seed's JavaScript samples
    hand `error` to the request's callback, and getData's callback tests `"data" in result`
    before `"code" in result`, so an error with `data` would be read as observations. The
    message names the bad param instead; `exc.data` stays for the server's own use.
    """
    return {
        "jsonrpc": JSONRPC_VERSION,
        "id": exc.id,
        "error": {"code": exc.code, "message": exc.message},
    }


def internal_error(request_id: RequestId) -> dict[str, Any]:
    """The answer to a request that hit our bug: nothing about it leaks."""
    return error_message(RpcError(INTERNAL_ERROR, "Internal error", id=request_id))


def invalid_params(param: str, message: str, *, id: RequestId = None) -> RpcError:
    """INVALID_PARAMS naming `param` in the message and in `data.param`."""
    return RpcError(INVALID_PARAMS, f"Invalid params: {param}: {message}", {"param": param}, id=id)


_CODE_OF: tuple[tuple[type[errors.Error], int], ...] = (
    (errors.Invalid, INVALID_PARAMS),
    (errors.Unauthorized, AUTH_FAILED),
    (errors.Forbidden, FORBIDDEN),
    (errors.NotFound, NOT_FOUND),
    (errors.Conflict, CONFLICT),
    (errors.TooLarge, LIMIT_EXCEEDED),
    (errors.RateLimited, LIMIT_EXCEEDED),
    (errors.DeviceOffline, UNAVAILABLE),
    (errors.TimedOut, UNAVAILABLE),
)


def rpc_error_for(exc: errors.Error, request_id: RequestId = None) -> RpcError:
    """Translate a domain error once, at the edge (STYLE §5).

    Invalid becomes INVALID_PARAMS with `data.param` = its field; the other kinds get their
    code from the table in the module docstring and `data.code` = the domain's stable code.
    """
    code = next((c for kind, c in _CODE_OF if isinstance(exc, kind)), INTERNAL_ERROR)
    if code == INVALID_PARAMS:
        param = exc.field or "params"
        message = exc.message if exc.message.startswith(param) else f"{param}: {exc.message}"
        return RpcError(code, f"Invalid params: {message}", {"param": param}, id=request_id)
    data: dict[str, Any] = {"code": exc.code}
    if exc.field:
        data["param"] = exc.field
    return RpcError(code, exc.message, data, id=request_id)
