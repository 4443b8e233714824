"""Entity tags: a short fingerprint of a record's state, and the If-Match check.

A device's etag changes whenever an application-visible field of its record changes (its
`updated_at` moves with every save); a template's whenever its document does. The value is
opaque to clients: they send it back in If-Match (quoted or not, `W/` or not) or `*` for
"whatever is there now".
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from thinghub.domain.errors import PreconditionFailed

__all__ = ["check_if_match", "device_etag", "document_etag"]


def _tag(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def device_etag(
    device_id: str, name: str, template: str | None, flags: tuple[bool, ...], updated_at: float
) -> str:
    """The etag of a device record (its id, name, template, flags and last change)."""
    return _tag([device_id, name, template, list(flags), repr(updated_at)])


def document_etag(document: Any) -> str:
    """The etag of a stored JSON document."""
    return _tag(document)


def _bare(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else tag


def check_if_match(expected: str | None, current: str, what: str) -> None:
    """Pass when `expected` (an If-Match value: one or more comma-separated tags, or `*`) is
    absent or names `current`.

    Raises:
        PreconditionFailed: naming If-Match and the current tag.
    """
    if expected is None:
        return
    tags = [_bare(part) for part in expected.split(",") if part.strip()]
    if "*" in tags or current in tags:
        return
    raise PreconditionFailed(
        f"If-Match {expected!r} does not match the current etag of {what} ({current!r}); "
        "read it again and retry",
        field="If-Match",
        etag=current,
    )
