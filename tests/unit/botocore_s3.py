"""A real botocore S3 client whose requests are captured instead of sent (test helper).

botocore builds, serialises and signs each request exactly as it would for AWS (its own
SigV4 signer, its own URL encoding of keys); a ``before-send`` hook then hands the finished
request to the test and answers with a canned response, which botocore parses with its own
response parser. No socket is opened. The clock botocore signs with is frozen at ``now``.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.config import Config

ENDPOINT = "http://127.0.0.1:8080/ioto/s3"
REGION = "thinghub-1"


@dataclass
class Captured:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url).query

    def wire_headers(self) -> list[tuple[str, str]]:
        """The headers as an HTTP client puts them on the wire (with Host, as urllib3 does)."""
        names = {name.lower() for name, _ in self.headers}
        extra = [] if "host" in names else [("Host", urlsplit(self.url).netloc)]
        return extra + self.headers


@dataclass
class Canned:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _Raw(io.BytesIO):
    """What urllib3 gives botocore: stream() for parsed bodies, read() for streaming ones."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def freeze_botocore_clock(monkeypatch: Any, now: float) -> None:
    frozen = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: frozen)


@functools.cache
def _session() -> Any:
    # One session for the whole run: loading the S3 service model is the slow part.
    return botocore.session.get_session()


def s3_client(
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    captured: list[Captured],
    answer: Callable[[Captured], Canned] = lambda _: Canned(),
    endpoint: str = ENDPOINT,
    config: Config | None = None,
) -> Any:
    """An S3 client on ``endpoint`` (path-style); every request lands in ``captured``."""
    client = _session().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        config=config
        or Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )

    def before_send(request: Any, **_: Any) -> AWSResponse:
        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body.read()
        seen = Captured(
            request.method,
            request.url,
            [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()],
            data,
        )
        captured.append(seen)
        canned = answer(seen)
        return AWSResponse(request.url, canned.status, canned.headers, _Raw(canned.body))

    client.meta.events.register("before-send.s3", before_send)
    return client
