"""AWS Signature Version 4: checking signed S3 requests and presigned URLs, making presigned URLs.

Theory of operation
-------------------
A request is checked in three steps, so the caller can find the secret in between:

1. ``parse(method, path, query, headers)`` reads the signature from the ``Authorization``
   header or from the ``X-Amz-*`` query parameters (a presigned URL), checks its shape, and
   builds the canonical request from the request *as received*. Nothing secret is needed.
2. The caller looks the access key id up (for thinghub: opens the session token, see
   ``aws_credentials``) and gets the secret access key.
3. ``verify(signed, secret, now=..., region=...)`` checks the scope, the time and the
   signature (constant-time compare of the hex digest).

The canonical request follows the AWS documentation for S3 ("Signature Calculations for the
Authorization Header", "Authenticating Requests: Using Query Parameters"):

- method, upper case;
- canonical URI: the path split on ``/``, each segment percent-decoded to bytes and encoded
  again with ``UriEncode`` (every byte but ``A-Za-z0-9-._~``). S3 encodes **once** and does not
  normalise (no ``.``/``..`` or ``//`` removal), unlike other AWS services. An encoded slash
  (``%2F``) stays inside its segment. botocore puts exactly this form on the wire, so for
  it the canonical URI equals the path as sent; other clients may encode differently (``!``
  raw, ``~`` as ``%7E``) and still match;
- canonical query: every ``name=value`` pair decoded and re-encoded with ``UriEncode``, ``+``
  kept as a plus (not a space), sorted by name then value; for a presigned URL without
  ``X-Amz-Signature``; a parameter without ``=`` has an empty value;
- canonical headers: the ``SignedHeaders`` list, each as ``name:value`` with the values of
  repeated headers joined by ``,`` and runs of white space collapsed (botocore's "trimall");
- the signed header list verbatim; the payload hash (below).

String to sign: ``AWS4-HMAC-SHA256 \\n amz-date \\n date/region/service/aws4_request \\n
hex(sha256(canonical request))``; key: ``HMAC`` chain from ``"AWS4" + secret`` over date,
region, service and ``aws4_request``.

Payload hash (``x-amz-content-sha256``): with header authentication the header is required,
as S3 requires it. Supported: a hex SHA-256 of the body (the caller must check the body
against ``SignedRequest.payload_sha256``), ``UNSIGNED-PAYLOAD``, and
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (what botocore 1.36+ sends for PutObject over HTTPS:
an ``aws-chunked`` body with a checksum trailer, not signed per chunk). The signed-chunk
variants (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` and its ``-TRAILER`` and ECDSA forms) are
refused with ``NotImplemented``. A presigned URL always uses ``UNSIGNED-PAYLOAD``.

Time: header-signed requests must be within ``MAX_SKEW_S`` of the server clock (15 minutes,
as AWS); presigned URLs are valid from ``X-Amz-Date - MAX_SKEW_S`` to ``X-Amz-Date +
X-Amz-Expires`` with ``X-Amz-Expires`` at most 7 days, as AWS.

Signed headers: ``host`` must be signed, and so must ``x-amz-date`` on a header-signed
request. Other ``x-amz-*`` headers may be left unsigned: the Ioto agent's own S3 signer
sends ``x-amz-content-sha256`` unsigned, and the payload hash is covered anyway because it
is the last line of the canonical request.

Errors carry the S3 error code AWS uses for the same fault (``SignatureDoesNotMatch``,
``RequestTimeTooSkewed``...), so the S3 face can answer with the right status and XML.
Messages name the offending part but never echo a signature or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote_to_bytes, urlsplit

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_PRESIGN_EXPIRES_S",
    "MAX_SKEW_S",
    "STREAMING_UNSIGNED_PAYLOAD_TRAILER",
    "UNSIGNED_PAYLOAD",
    "SigV4Error",
    "SignedRequest",
    "canonical_query",
    "canonical_uri",
    "format_amz_date",
    "parse",
    "presign_url",
    "signing_key",
    "string_to_sign",
    "uri_encode",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED_PAYLOAD_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Signed-chunk streaming payloads: each chunk carries its own chained signature. botocore never
# sends these; the Java and Go SDKs do when asked. Refused, clearly, rather than half-checked.
REFUSED_STREAMING = frozenset(
    {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)

# AWS refuses header-signed requests more than 15 minutes away from its clock
# (RequestTimeTooSkewed) and presigned URLs valid for more than 7 days.
MAX_SKEW_S = 15 * 60
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600

# Bounds on what is parsed before anything is checked. A real Authorization header is about
# 200 to 400 characters; S3 keys are at most 1,024 bytes (3,072 characters percent-encoded).
MAX_AUTHORIZATION_CHARS = 4096
MAX_SIGNED_HEADERS = 64
MAX_QUERY_PARAMS = 128
MAX_PATH_CHARS = 8192
MAX_QUERY_CHARS = 16384
MAX_HEADER_VALUE_CHARS = 8192
MAX_SESSION_TOKEN_CHARS = 4096

# Error codes, as S3 names them (the S3 face maps them to HTTP statuses).
ACCESS_DENIED = "AccessDenied"
HEADER_MALFORMED = "AuthorizationHeaderMalformed"
QUERY_MALFORMED = "AuthorizationQueryParametersError"
INVALID_ARGUMENT = "InvalidArgument"
INVALID_REQUEST = "InvalidRequest"
NOT_IMPLEMENTED = "NotImplemented"
SIGNATURE_MISMATCH = "SignatureDoesNotMatch"
TIME_SKEWED = "RequestTimeTooSkewed"

_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_EXPIRES_RE = re.compile(r"[0-9]{1,7}")
_SCOPE_PART_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_WS_RE = re.compile(r"\s+")
_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


class SigV4Error(ValueError):
    """A request's signature is malformed, stale or wrong.

    Attributes:
        code: the S3 error code AWS answers this fault with, e.g. ``SignatureDoesNotMatch``.
        reason: what is wrong, naming the part (never the signature or token value).
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A parsed, not yet verified, SigV4 request.

    Attributes:
        access_key_id: from the credential scope.
        scope_date: ``YYYYMMDD`` of the scope (equal to the first 8 characters of amz_date).
        region, service: from the scope, e.g. ``us-east-1`` and ``s3``.
        amz_date: ``YYYYMMDDTHHMMSSZ`` as sent; ``signed_at`` is the same as epoch seconds.
        signed_headers: lower-case names, as listed by the client.
        session_token: ``x-amz-security-token`` (header or query), or None.
        payload_hash: the value in the canonical request's last line.
        is_presigned: True when signed in the query string.
        expires_at: for a presigned URL, ``signed_at + X-Amz-Expires``; None otherwise.
        canonical_request: rebuilt from the request as received.
    """

    access_key_id: str
    scope_date: str
    region: str
    service: str
    amz_date: str
    signed_at: float
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)
    session_token: str | None = field(repr=False)
    payload_hash: str
    is_presigned: bool
    expires_at: float | None
    canonical_request: str = field(repr=False)

    @property
    def payload_sha256(self) -> str | None:
        """The hex SHA-256 the body must have, or None when the payload is not signed."""
        return self.payload_hash if _SHA256_HEX_RE.fullmatch(self.payload_hash) else None

    @property
    def is_streaming(self) -> bool:
        """True when the body is ``aws-chunked`` with a trailer (decode it before storing)."""
        return self.payload_hash == STREAMING_UNSIGNED_PAYLOAD_TRAILER

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/aws4_request"


# -- encoding ---------------------------------------------------------------------------------


def uri_encode(data: str | bytes, *, keep_slash: bool = False) -> str:
    """AWS ``UriEncode``: every byte but ``A-Za-z0-9-._~`` as ``%XX`` (upper-case hex).

    Strings are encoded as UTF-8 first. ``keep_slash`` leaves ``/`` alone (object key paths).
    """
    return quote(data, safe="/" if keep_slash else "")


def canonical_uri(raw_path: str) -> str:
    """The S3 canonical URI of a path as received (percent-encoded, without the query).

    Raises:
        SigV4Error: the path is too long or does not start with ``/``.
    """
    if len(raw_path) > MAX_PATH_CHARS:
        raise SigV4Error(INVALID_REQUEST, f"path longer than {MAX_PATH_CHARS} characters")
    if not raw_path:
        return "/"
    if not raw_path.startswith("/"):
        raise SigV4Error(INVALID_REQUEST, "path does not start with '/'")
    return "/".join(uri_encode(unquote_to_bytes(segment)) for segment in raw_path.split("/"))


def _query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    if len(raw_query) > MAX_QUERY_CHARS:
        raise SigV4Error(INVALID_REQUEST, f"query longer than {MAX_QUERY_CHARS} characters")
    pairs: list[tuple[bytes, bytes]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        # unquote_to_bytes keeps '+' as a plus: SigV4 has no form encoding (AWS encodes a
        # space as %20 and a plus as %2B).
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
        if len(pairs) > MAX_QUERY_PARAMS:
            raise SigV4Error(INVALID_REQUEST, f"more than {MAX_QUERY_PARAMS} query parameters")
    return pairs


def canonical_query(raw_query: str, *, exclude: Iterable[str] = ()) -> str:
    """The canonical query string of a raw query (without ``?``); ``exclude`` drops names."""
    skip = {name.encode() for name in exclude}
    encoded = sorted(
        (uri_encode(name), uri_encode(value))
        for name, value in _query_pairs(raw_query)
        if name not in skip
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def format_amz_date(ts: float) -> str:
    """Epoch seconds as ``YYYYMMDDTHHMMSSZ`` (whole seconds, UTC)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y%m%dT%H%M%SZ")


def _parse_amz_date(value: str, code: str) -> float:
    if not _AMZ_DATE_RE.fullmatch(value):
        raise SigV4Error(code, "X-Amz-Date must look like 20130524T000000Z")
    try:
        dt = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SigV4Error(code, "X-Amz-Date is not a valid date and time") from exc
    return dt.timestamp()


# -- parsing ----------------------------------------------------------------------------------


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise SigV4Error(INVALID_REQUEST, f"header {name.lower()[:64]!r} is too long")
        out.setdefault(name.lower(), []).append(value)
    return out


def _canonical_headers(signed: Sequence[str], headers: dict[str, list[str]], code: str) -> str:
    lines = []
    for name in signed:
        values = headers.get(name)
        if values is None:
            raise SigV4Error(code, f"signed header {name!r} is not in the request")
        lines.append(f"{name}:{','.join(_WS_RE.sub(' ', v).strip() for v in values)}\n")
    return "".join(lines)


def _signed_header_list(value: str, code: str, *, presigned: bool) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if len(names) > MAX_SIGNED_HEADERS:
        raise SigV4Error(code, f"more than {MAX_SIGNED_HEADERS} signed headers")
    for name in names:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise SigV4Error(code, f"signed header name {name[:64]!r} is not a lower-case token")
    if len(set(names)) != len(names):
        raise SigV4Error(code, "a signed header is listed twice")
    if "host" not in names:
        raise SigV4Error(code, "the host header must be signed")
    if not presigned and "x-amz-date" not in names:
        raise SigV4Error(code, "the x-amz-date header must be signed")
    return names


def _credential(value: str, code: str) -> tuple[str, str, str, str]:
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SigV4Error(
            code, "Credential must be <access key>/<date>/<region>/<service>/aws4_request"
        )
    access_key, date, region, service, _ = parts
    if not _ACCESS_KEY_RE.fullmatch(access_key):
        raise SigV4Error(code, "the access key id in Credential is malformed")
    if not re.fullmatch(r"[0-9]{8}", date):
        raise SigV4Error(code, "the date in Credential must be YYYYMMDD")
    if not _SCOPE_PART_RE.fullmatch(region) or not _SCOPE_PART_RE.fullmatch(service):
        raise SigV4Error(code, "the region or service in Credential is malformed")
    return access_key, date, region, service


def _payload_hash(headers: dict[str, list[str]]) -> str:
    values = headers.get("x-amz-content-sha256")
    if values is None:
        raise SigV4Error(
            INVALID_REQUEST, "missing required header for this request: x-amz-content-sha256"
        )
    if len(values) != 1:
        raise SigV4Error(INVALID_ARGUMENT, "x-amz-content-sha256 is given more than once")
    value = values[0].strip()
    if value in REFUSED_STREAMING:
        raise SigV4Error(
            NOT_IMPLEMENTED,
            f"x-amz-content-sha256 {value} (signed chunks) is not supported; use "
            f"{UNSIGNED_PAYLOAD}, {STREAMING_UNSIGNED_PAYLOAD_TRAILER} or the body's SHA-256",
        )
    if value in (UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_PAYLOAD_TRAILER):
        return value
    if _SHA256_HEX_RE.fullmatch(value):
        return value
    raise SigV4Error(
        INVALID_ARGUMENT,
        "x-amz-content-sha256 must be a lower-case hex SHA-256, UNSIGNED-PAYLOAD or "
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )


def _single(headers: dict[str, list[str]], name: str, code: str) -> str | None:
    values = headers.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise SigV4Error(code, f"header {name} is given more than once")
    return values[0].strip()


def parse(method: str, path: str, query: str, headers: Iterable[tuple[str, str]]) -> SignedRequest:
    """Read the signature of a request and rebuild its canonical request.

    Args:
        method: the HTTP method.
        path: the raw path as received (percent-encoded, no query), including any mount
            prefix: the client signed the whole path.
        query: the raw query string without ``?``.
        headers: (name, value) pairs as received; names in any case, repeats allowed.

    Returns:
        The signed request, to be passed to verify once the secret is known.

    Raises:
        SigV4Error: no signature (``AccessDenied``), both kinds at once, or a malformed one.
    """
    header_map = _header_map(headers)
    auth = header_map.get("authorization")
    query_names = {name for name, _ in _query_pairs(query)}
    presigned = b"X-Amz-Signature" in query_names or b"X-Amz-Algorithm" in query_names
    if auth is not None and presigned:
        raise SigV4Error(INVALID_ARGUMENT, "only one auth mechanism allowed: header or query")
    if auth is not None:
        if len(auth) != 1:
            raise SigV4Error(HEADER_MALFORMED, "the Authorization header is given more than once")
        return _parse_header_signed(method, path, query, header_map, auth[0])
    if presigned:
        return _parse_presigned(method, path, query, header_map)
    raise SigV4Error(ACCESS_DENIED, "the request is not signed (no Authorization, no X-Amz-*)")


def _parse_header_signed(
    method: str, path: str, query: str, headers: dict[str, list[str]], auth: str
) -> SignedRequest:
    code = HEADER_MALFORMED
    if len(auth) > MAX_AUTHORIZATION_CHARS:
        raise SigV4Error(code, f"Authorization longer than {MAX_AUTHORIZATION_CHARS} characters")
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error(code, f"the authorization mechanism must be {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in ("Credential", "SignedHeaders", "Signature"):
            raise SigV4Error(code, f"unexpected Authorization component {name[:32]!r}")
        if name in fields:
            raise SigV4Error(code, f"Authorization component {name} is given twice")
        fields[name] = value.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in fields:
            raise SigV4Error(code, f"the Authorization header has no {name}")
    access_key, date, region, service = _credential(fields["Credential"], code)
    signed_headers = _signed_header_list(fields["SignedHeaders"], code, presigned=False)
    signature = fields["Signature"]
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SigV4Error(code, "Signature must be 64 lower-case hex digits")
    amz_date = _single(headers, "x-amz-date", code)
    if amz_date is None:
        raise SigV4Error(ACCESS_DENIED, "AWS authentication requires a valid x-amz-date header")
    signed_at = _parse_amz_date(amz_date, code)
    if amz_date[:8] != date:
        raise SigV4Error(code, f"the Credential date {date} is not the date of X-Amz-Date")
    token = _single(headers, "x-amz-security-token", code)
    if token is not None and len(token) > MAX_SESSION_TOKEN_CHARS:
        raise SigV4Error(INVALID_ARGUMENT, "x-amz-security-token is too long")
    payload = _payload_hash(headers)
    canonical = "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            _canonical_headers(signed_headers, headers, code),
            fields["SignedHeaders"],
            payload,
        )
    )
    return SignedRequest(
        access_key_id=access_key,
        scope_date=date,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_at=signed_at,
        signed_headers=signed_headers,
        signature=signature,
        session_token=token,
        payload_hash=payload,
        is_presigned=False,
        expires_at=None,
        canonical_request=canonical,
    )


def _parse_presigned(
    method: str, path: str, query: str, headers: dict[str, list[str]]
) -> SignedRequest:
    code = QUERY_MALFORMED
    params: dict[str, str] = {}
    for raw_name, raw_value in _query_pairs(query):
        name = raw_name.decode("utf-8", errors="replace")
        if name in (*_AUTH_PARAMS, "X-Amz-Security-Token"):
            if name in params:
                raise SigV4Error(code, f"query parameter {name} is given twice")
            try:
                params[name] = raw_value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SigV4Error(code, f"query parameter {name} is not UTF-8") from exc
    for name in _AUTH_PARAMS:
        if name not in params:
            raise SigV4Error(code, f"query-string authentication requires the {name} parameter")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise SigV4Error(code, f"X-Amz-Algorithm must be {ALGORITHM}")
    access_key, date, region, service = _credential(params["X-Amz-Credential"], code)
    signed_header_text = params["X-Amz-SignedHeaders"]
    signed_headers = _signed_header_list(signed_header_text, code, presigned=True)
    signature = params["X-Amz-Signature"]
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SigV4Error(code, "X-Amz-Signature must be 64 lower-case hex digits")
    amz_date = params["X-Amz-Date"]
    signed_at = _parse_amz_date(amz_date, code)
    if amz_date[:8] != date:
        raise SigV4Error(code, f"the X-Amz-Credential date {date} is not the date of X-Amz-Date")
    expires = params["X-Amz-Expires"]
    if not _EXPIRES_RE.fullmatch(expires) or not 1 <= int(expires) <= MAX_PRESIGN_EXPIRES_S:
        raise SigV4Error(
            code, f"X-Amz-Expires must be a whole number of seconds, 1 to {MAX_PRESIGN_EXPIRES_S}"
        )
    token = params.get("X-Amz-Security-Token")
    if token is not None and len(token) > MAX_SESSION_TOKEN_CHARS:
        raise SigV4Error(INVALID_ARGUMENT, "X-Amz-Security-Token is too long")
    if token is not None and "x-amz-security-token" in headers:
        raise SigV4Error(code, "the security token is given both as header and query parameter")
    canonical = "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query, exclude=("X-Amz-Signature",)),
            _canonical_headers(signed_headers, headers, code),
            signed_header_text,
            UNSIGNED_PAYLOAD,
        )
    )
    return SignedRequest(
        access_key_id=access_key,
        scope_date=date,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_at=signed_at,
        signed_headers=signed_headers,
        signature=signature,
        session_token=token,
        payload_hash=UNSIGNED_PAYLOAD,
        is_presigned=True,
        expires_at=signed_at + int(expires),
        canonical_request=canonical,
    )


# -- signing and verifying --------------------------------------------------------------------


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key: HMAC chain over date, region, service and ``aws4_request``."""
    key = ("AWS4" + secret_access_key).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def string_to_sign(request: SignedRequest) -> str:
    digest = hashlib.sha256(request.canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{request.amz_date}\n{request.scope}\n{digest}"


def _signature(secret: str, request: SignedRequest) -> str:
    key = signing_key(secret, request.scope_date, request.region, request.service)
    return hmac.new(key, string_to_sign(request).encode("utf-8"), hashlib.sha256).hexdigest()


def verify(
    request: SignedRequest,
    secret_access_key: str,
    *,
    now: float,
    region: str,
    service: str = "s3",
) -> None:
    """Check scope, time and signature of a parsed request.

    Args:
        request: from parse.
        secret_access_key: the secret of ``request.access_key_id``.
        now: epoch seconds.
        region: the region this endpoint answers for (the scope must name it).
        service: the service name in the scope, ``s3``.

    Raises:
        SigV4Error: ``AuthorizationHeaderMalformed`` / ``AuthorizationQueryParametersError``
            for a wrong region or service, ``RequestTimeTooSkewed`` or ``AccessDenied``
            (expired or not yet valid presigned URL), ``SignatureDoesNotMatch``.
    """
    code = QUERY_MALFORMED if request.is_presigned else HEADER_MALFORMED
    if request.region != region:
        raise SigV4Error(code, f"the region {request.region!r} is wrong; expecting {region!r}")
    if request.service != service:
        raise SigV4Error(code, f"the service {request.service!r} is wrong; expecting {service!r}")
    if request.is_presigned:
        if request.expires_at is None:  # pragma: no cover - parse always sets it
            raise ValueError("a presigned request without expires_at")
        if request.signed_at - MAX_SKEW_S > now:
            raise SigV4Error(ACCESS_DENIED, "request is not yet valid (X-Amz-Date is ahead)")
        if now > request.expires_at:
            raise SigV4Error(ACCESS_DENIED, "request has expired")
    elif abs(now - request.signed_at) > MAX_SKEW_S:
        raise SigV4Error(
            TIME_SKEWED,
            "the difference between the request time and the current time is too large",
        )
    expected = _signature(secret_access_key, request)
    if not hmac.compare_digest(expected.encode("ascii"), request.signature.encode("ascii")):
        raise SigV4Error(
            SIGNATURE_MISMATCH,
            "the request signature we calculated does not match the signature you provided",
        )


def presign_url(
    *,
    method: str,
    url: str,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    now: float,
    expires_s: int,
    session_token: str | None = None,
    service: str = "s3",
) -> str:
    """Make a presigned (query-signed) URL the way botocore's S3SigV4QueryAuth does.

    Only ``host`` is signed, so ``curl -T file "$URL"`` and a plain GET work. The query keeps
    the URL's own parameters first, then ``X-Amz-Algorithm``, ``-Credential``, ``-Date``,
    ``-Expires``, ``-SignedHeaders``, ``-Security-Token`` and last ``X-Amz-Signature``.

    Args:
        url: ``scheme://host[:port]/path[?query]`` with the path already percent-encoded
            (use ``uri_encode(key, keep_slash=True)`` for object keys).
        now: the signing time, epoch seconds.
        expires_s: 1 to 604,800 seconds.

    Raises:
        ValueError: an expiry out of range or a URL without a host.
    """
    if not 1 <= expires_s <= MAX_PRESIGN_EXPIRES_S:
        raise ValueError(f"expires_s must be 1 to {MAX_PRESIGN_EXPIRES_S}, got {expires_s}")
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"url has no host: {url!r}")
    # What an HTTP client sends as Host: the netloc without a default port (as botocore).
    host = parts.netloc
    default_port = {"http": ":80", "https": ":443"}.get(parts.scheme)
    if default_port and host.endswith(default_port):
        host = host.removesuffix(default_port)
    amz_date = format_amz_date(now)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    auth: list[tuple[str, str]] = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{access_key_id}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires_s)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if session_token is not None:
        auth.append(("X-Amz-Security-Token", session_token))
    auth_query = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in auth)
    query = f"{parts.query}&{auth_query}" if parts.query else auth_query
    path = parts.path or "/"
    request = SignedRequest(
        access_key_id=access_key_id,
        scope_date=amz_date[:8],
        region=region,
        service=service,
        amz_date=amz_date,
        signed_at=float(int(now)),
        signed_headers=("host",),
        signature="",
        session_token=session_token,
        payload_hash=UNSIGNED_PAYLOAD,
        is_presigned=True,
        expires_at=float(int(now) + expires_s),
        canonical_request="\n".join(
            (
                method.upper(),
                canonical_uri(path),
                canonical_query(query),
                f"host:{host}\n",
                "host",
                UNSIGNED_PAYLOAD,
            )
        ),
    )
    signature = _signature(secret_access_key, request)
    return f"{parts.scheme}://{host}{path}?{query}&X-Amz-Signature={signature}"
