"""Identifiers: the safe character set every id is parsed against once, where it enters."""

from __future__ import annotations

import re
import secrets
import uuid

from thinghub.domain.errors import Invalid

__all__ = [
    "ID_PATTERN",
    "MAX_ID_CHARS",
    "entity_id",
    "new_id_scope",
    "new_uuid",
    "parse_id",
    "split_entity_id",
]

# Device and module ids travel unencoded in MQTT usernames, topics and SAS resource URIs
# (the SDK never escapes them), so they are limited to characters that need no escaping.
MAX_ID_CHARS = 128
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def parse_id(value: object, field: str = "id") -> str:
    """Check a user-given id (device, module, project, ...).

    Raises:
        Invalid: when it is not a string of 1..128 characters from [A-Za-z0-9._:-].
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise Invalid(
            f"{field} must be 1 to {MAX_ID_CHARS} characters from A-Z a-z 0-9 . _ : -, "
            f"got {value!r}",
            field=field,
        )
    return value


def entity_id(device_id: str, module_id: str | None = None) -> str:
    """The one key of a device or of a gateway's module: `device` or `device/module`."""
    return device_id if module_id is None else f"{device_id}/{module_id}"


def split_entity_id(key: str) -> tuple[str, str | None]:
    device, _, module = key.partition("/")
    return device, module or None


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_id_scope() -> str:
    """An account's DPS id scope, shaped like Azure's (e.g. 0ne00D47E07)."""
    return "0ne" + secrets.token_hex(4).upper()
