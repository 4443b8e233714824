"""POST /connect/token: OAuth2 client credentials, as Bentley IMS answers the Sensor Data
Service's samples (seed, "Obtaining Authorization Token").

The client is a thinghub API token: `client_id` is the token's id, `client_secret` the
token itself (as for POST /v1/auth/token). The body is form-encoded; `scope` names any of
sensor-data:read, sensor-data:modify, itwins:read, itwins:modify and users:read (space
separated; all five when omitted), and the access token (a JWT) is limited to them: without
a `:modify` scope it is read-only on every face. Credentials may also come as HTTP Basic.
Values are trimmed: the seed's samples put a space after `<Your client id> `.

Errors use the OAuth2 shape `{"error", "error_description"}` (RFC 6749 §5.2): 400
invalid_request / unsupported_grant_type / invalid_scope, 401 invalid_client.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from thinghub.domain.errors import Unauthorized
from thinghub.faces._http import OrjsonResponse
from thinghub.faces.itwin.backend import ITWIN_SCOPES
from thinghub.services.core import Services

__all__ = ["MAX_TOKEN_REQUEST_BYTES", "token_route"]

# A token request is a few short form fields.
MAX_TOKEN_REQUEST_BYTES: Final = 16 * 1024


def _error(code: str, description: str, status: int = 400) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="thinghub"'
    return OrjsonResponse(
        {"error": code, "error_description": description}, status_code=status, headers=headers
    )


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id).strip(), unquote(secret).strip()
    client_id, secret = form.get("client_id", "").strip(), form.get("client_secret", "").strip()
    return (client_id, secret) if client_id and secret else None


def token_route(services: Services) -> Route:
    async def issue(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_TOKEN_REQUEST_BYTES:
            return _error("invalid_request", "the request body is too large", 413)
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > MAX_TOKEN_REQUEST_BYTES:
                return _error("invalid_request", "the request body is too large", 413)
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return _error("invalid_request", "the body must be form-encoded (UTF-8)")
        grant = form.get("grant_type", "").strip()
        if not grant:
            return _error("invalid_request", "grant_type is required")
        if grant != "client_credentials":
            return _error("unsupported_grant_type", f"grant_type {grant[:64]!r} is not supported")
        wanted = frozenset(form.get("scope", "").split()) or ITWIN_SCOPES
        unknown = wanted - ITWIN_SCOPES
        if unknown:
            return _error(
                "invalid_scope",
                f"unknown scope {sorted(unknown)[0][:64]!r}; known: "
                + " ".join(sorted(ITWIN_SCOPES)),
            )
        credentials = _credentials(request, form)
        if credentials is None:
            return _error("invalid_client", "client_id and client_secret are required", 401)
        try:
            token, ttl = await services.auth.client_credentials_grant(*credentials, scopes=wanted)
        except Unauthorized as exc:
            return _error("invalid_client", exc.message, 401)
        return OrjsonResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl,
                "scope": " ".join(sorted(wanted)),
            },
            headers={"Cache-Control": "no-store"},
        )

    return Route("/connect/token", issue, methods=["POST"])
