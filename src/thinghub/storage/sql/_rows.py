"""Rows: how domain values are stored, and read back. Here and nowhere else.

Times are integer microseconds, JSON is text, flags are 0/1, binary is bytes. The SQL areas
write and read these tuples (in the column order of the `*_COLUMNS` lists); the memory
backend keeps the same tuples, so every backend answers alike (microsecond times, JSON
copies, bodies too deep to render as their text).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import orjson

from thinghub.domain.claims import ClaimState, Registration
from thinghub.domain.commands import Command, CommandMode, CommandStatus
from thinghub.domain.device_files import DeviceFile
from thinghub.domain.errors import Invalid
from thinghub.domain.events import Event, EventType
from thinghub.domain.json_depth import JSON_DEPTH_CEILING, exceeds_depth
from thinghub.domain.model import Account, ApiToken, Device, DeviceKind, Retention, Role, User
from thinghub.domain.products import Product
from thinghub.domain.roles import stored_role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.domain.twin import Twin, TwinSection
from thinghub.ports.store import C2DMessage

__all__ = [
    "ACCOUNT_COLUMNS",
    "COMMAND_COLUMNS",
    "DEVICE_COLUMNS",
    "END_US",
    "FILE_COLUMNS",
    "PRODUCT_COLUMNS",
    "REGISTRATION_COLUMNS",
    "TELEMETRY_COLUMNS",
    "TOKEN_COLUMNS",
    "USER_COLUMNS",
    "account_params",
    "as_account",
    "as_body",
    "as_c2d",
    "as_command",
    "as_device",
    "as_event",
    "as_file",
    "as_product",
    "as_registration",
    "as_telemetry",
    "as_token",
    "as_twin",
    "as_user",
    "body_text",
    "c2d_params",
    "command_params",
    "decode_cursor",
    "device_params",
    "dumps",
    "encode_cursor",
    "event_params",
    "file_params",
    "from_us",
    "loads",
    "product_params",
    "range_us",
    "registration_params",
    "retention_json",
    "section_json",
    "telemetry_params",
    "to_us",
    "token_params",
    "twin_params",
    "user_params",
]

# Past every stored time: the upper bound of a range with no end.
END_US = 2**62


def to_us(ts: float) -> int:
    return round(ts * 1_000_000)


def from_us(us: int | None) -> float | None:
    return None if us is None else us / 1_000_000


def _opt_us(ts: float | None) -> int | None:
    return None if ts is None else to_us(ts)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def range_us(since: float | None, until: float | None) -> tuple[int, int]:
    """[since, until] in microseconds; an open end is the whole past or future."""
    return (
        -END_US if since is None else to_us(since),
        END_US if until is None else to_us(until),
    )


def as_body(text: str | None) -> Any:
    """A stored body (telemetry, event, command payload or result), to be answered.

    Rows written before bodies were depth-checked may nest deeper than anything can render
    (orjson writes at most 254 levels, and answers wrap a body in a few more): such a body
    is answered as its stored text, a JSON string, never parsed. Nothing written now nests
    deeper than JSON_DEPTH_CEILING (max_json_depth is at most that).
    """
    if text is None:
        return None
    if exceeds_depth(text, JSON_DEPTH_CEILING):
        return text
    return orjson.loads(text)


def encode_cursor(ts_us: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts_us}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, row = raw.partition(":")
        return int(ts), int(row)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Invalid(
            f"continuation token {cursor!r} is not valid", field="continuationToken"
        ) from exc


DEVICE_COLUMNS = (
    "id, account_id, kind, name, primary_key, secondary_key, project, deployment, parent_id, "
    "module_id, enabled, simulated, provisioned, template, model_id, connection_state, "
    "last_activity_at, created_by, attributes, created_at, updated_at"
)
COMMAND_COLUMNS = (
    "id, account_id, device_id, name, payload, mode, status, created_at, expires_at, "
    "response_timeout_s, completed_at, response_code, result"
)
TELEMETRY_COLUMNS = (
    "account_id, device_id, project, deployment, enqueued_at, body, raw, properties, "
    "message_id, correlation_id, content_type, content_encoding, component, source"
)
TOKEN_COLUMNS = (
    "id, account_id, secret_hash, role, label, face, face_role, created_at, expires_at, project"
)
ACCOUNT_COLUMNS = "id, name, id_scope, created_at, retention"
USER_COLUMNS = "id, account_id, username, password_hash, role, created_at"


# -- accounts and principals -----------------------------------------------------------------


def retention_json(retention: Retention) -> str | None:
    """One JSON object per account (kind -> days), so a new kind (files) needs no migration."""
    days = {
        "telemetry": retention.telemetry_days,
        "events": retention.events_days,
        "files": retention.files_days,
    }
    kept = {kind: value for kind, value in days.items() if value is not None}
    return dumps(kept) if kept else None


def _retention(text: str | None) -> Retention:
    days = loads(text) or {}
    return Retention(
        telemetry_days=days.get("telemetry"),
        events_days=days.get("events"),
        files_days=days.get("files"),
    )


def account_params(a: Account) -> tuple[Any, ...]:
    return (a.id, a.name, a.id_scope, to_us(a.created_at), retention_json(a.retention))


def as_account(row: Sequence[Any]) -> Account:
    return Account(row[0], row[1], row[2], from_us(row[3]) or 0.0, _retention(row[4]))


def user_params(u: User) -> tuple[Any, ...]:
    return (u.id, u.account_id, u.username, u.password_hash, u.role.value, to_us(u.created_at))


def as_user(row: Sequence[Any]) -> User:
    return User(row[0], row[1], row[2], row[3], Role(row[4]), from_us(row[5]) or 0.0)


def token_params(t: ApiToken) -> tuple[Any, ...]:
    return (
        t.id,
        t.account_id,
        t.secret_hash,
        t.role.value,
        t.label,
        t.face,
        t.face_role,
        to_us(t.created_at),
        _opt_us(t.expires_at),
        t.project,
    )


def as_token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(
        id=row[0],
        account_id=row[1],
        secret_hash=row[2],
        # A Central App Builder token stored before Role.BUILDER reads as a builder.
        role=stored_role(row[3], row[5], row[6]),
        label=row[4],
        face=row[5],
        face_role=row[6],
        created_at=from_us(row[7]) or 0.0,
        expires_at=from_us(row[8]),
        project=row[9],
    )


# -- devices and twins -----------------------------------------------------------------------


def as_device(row: Sequence[Any]) -> Device:
    return Device(
        id=row[0],
        account_id=row[1],
        kind=DeviceKind(row[2]),
        name=row[3],
        primary_key=row[4],
        secondary_key=row[5],
        project=row[6],
        deployment=row[7],
        parent_id=row[8],
        module_id=row[9],
        enabled=bool(row[10]),
        simulated=bool(row[11]),
        provisioned=bool(row[12]),
        template=row[13],
        model_id=row[14],
        connection_state=row[15],
        last_activity_at=from_us(row[16]),
        created_by=row[17],
        attributes=loads(row[18]) or {},
        created_at=from_us(row[19]) or 0.0,
        updated_at=from_us(row[20]) or 0.0,
    )


def device_params(d: Device) -> tuple[Any, ...]:
    return (
        d.id,
        d.account_id,
        d.kind.value,
        d.name,
        d.primary_key,
        d.secondary_key,
        d.project,
        d.deployment,
        d.parent_id,
        d.module_id,
        int(d.enabled),
        int(d.simulated),
        int(d.provisioned),
        d.template,
        d.model_id,
        d.connection_state,
        _opt_us(d.last_activity_at),
        d.created_by,
        dumps(d.attributes),
        to_us(d.created_at),
        to_us(d.updated_at),
    )


def section_json(section: TwinSection) -> str:
    return dumps(
        {
            "properties": section.properties,
            "version": section.version,
            "metadata": section.metadata,
            "last_updated": section.last_updated,
        }
    )


def _section(text: str) -> TwinSection:
    data = orjson.loads(text)
    return TwinSection(
        properties=data["properties"],
        version=data["version"],
        metadata=data["metadata"],
        last_updated=data["last_updated"],
    )


def twin_params(t: Twin) -> tuple[Any, ...]:
    return (t.device_id, t.version, section_json(t.desired), section_json(t.reported))


def as_twin(row: Sequence[Any]) -> Twin:
    """(device_id, version, desired, reported)."""
    return Twin(row[0], _section(row[2]), _section(row[3]), row[1])


# -- commands and cloud-to-device messages ---------------------------------------------------


def command_params(c: Command) -> tuple[Any, ...]:
    return (
        c.id,
        c.account_id,
        c.device_id,
        c.name,
        dumps(c.payload),
        c.mode.value,
        c.status.value,
        to_us(c.created_at),
        to_us(c.expires_at),
        c.response_timeout_s,
        _opt_us(c.completed_at),
        c.response_code,
        None if c.result is None else dumps(c.result),
    )


def as_command(row: Sequence[Any]) -> Command:
    return Command(
        id=row[0],
        account_id=row[1],
        device_id=row[2],
        name=row[3],
        payload=as_body(row[4]),
        mode=CommandMode(row[5]),
        status=CommandStatus(row[6]),
        created_at=from_us(row[7]) or 0.0,
        expires_at=from_us(row[8]) or 0.0,
        response_timeout_s=row[9],
        completed_at=from_us(row[10]),
        response_code=row[11],
        result=as_body(row[12]),
    )


def c2d_params(m: C2DMessage) -> tuple[Any, ...]:
    """(id, device_id, body, properties, created_at, expires_at)."""
    return (m.id, m.device_id, m.body, dumps(m.properties), to_us(m.created_at),
            to_us(m.expires_at))  # fmt: skip


def as_c2d(row: Sequence[Any]) -> C2DMessage:
    return C2DMessage(
        row[0], row[1], bytes(row[2]), orjson.loads(row[3]), from_us(row[4]) or 0.0,
        from_us(row[5]) or 0.0,
    )  # fmt: skip


# -- telemetry and events --------------------------------------------------------------------


def body_text(m: TelemetryMessage) -> str | None:
    """The body column: the payload's own JSON text when it was JSON, else serialized."""
    if m.body_json is not None:
        return m.body_json.decode("utf-8")
    return None if m.body is None else dumps(m.body)


def telemetry_params(m: TelemetryMessage) -> tuple[Any, ...]:
    return (
        m.account_id,
        m.device_id,
        m.project,
        m.deployment,
        to_us(m.enqueued_at),
        body_text(m),
        m.raw if m.body is None else None,
        dumps(m.properties) if m.properties else None,
        m.message_id,
        m.correlation_id,
        m.content_type,
        m.content_encoding,
        m.component,
        m.source,
    )


def as_telemetry(row: Sequence[Any]) -> TelemetryMessage:
    return TelemetryMessage(
        account_id=row[0],
        device_id=row[1],
        project=row[2],
        deployment=row[3],
        enqueued_at=from_us(row[4]) or 0.0,
        body=as_body(row[5]),
        raw=bytes(row[6] or b""),
        properties=loads(row[7]) or {},
        message_id=row[8],
        correlation_id=row[9],
        content_type=row[10],
        content_encoding=row[11],
        component=row[12],
        source=row[13],
    )


def event_params(e: Event) -> tuple[Any, ...]:
    """(account_id, device_id, project, deployment, type, ts, body)."""
    return (e.account_id, e.device_id, e.project, e.deployment, e.type.value, to_us(e.ts),
            dumps(e.body))  # fmt: skip


def as_event(row: Sequence[Any]) -> Event:
    return Event(row[0], row[1], EventType(row[4]), from_us(row[5]) or 0.0, as_body(row[6]),
                 row[2], row[3])  # fmt: skip


# -- Ioto: products, registrations, device files -------------------------------------------

PRODUCT_COLUMNS = "id, account_id, name, token_hash, created_at, revoked_at"
REGISTRATION_COLUMNS = (
    "id, product_id, product_account_id, state, registered_at, accessed_at, generation, "
    "account_id, claimed_at, test, version, checked, certificate_fingerprint, provisions"
)
FILE_COLUMNS = "account_id, key, device_id, size, md5, content_type, modified_at"


def product_params(p: Product) -> tuple[Any, ...]:
    return (p.id, p.account_id, p.name, p.token_hash, to_us(p.created_at), _opt_us(p.revoked_at))


def as_product(row: Sequence[Any]) -> Product:
    return Product(row[0], row[1], row[2], row[3], from_us(row[4]) or 0.0, from_us(row[5]))


def registration_params(r: Registration) -> tuple[Any, ...]:
    return (
        r.id,
        r.product_id,
        r.product_account_id,
        r.state.value,
        to_us(r.registered_at),
        to_us(r.accessed_at),
        r.generation,
        r.account_id,
        _opt_us(r.claimed_at),
        int(r.test),
        r.version,
        r.checked,
        r.certificate_fingerprint,
        dumps([to_us(t) for t in r.provisions]),
    )


def as_registration(row: Sequence[Any]) -> Registration:
    return Registration(
        id=row[0],
        product_id=row[1],
        product_account_id=row[2],
        state=ClaimState(row[3]),
        registered_at=from_us(row[4]) or 0.0,
        accessed_at=from_us(row[5]) or 0.0,
        generation=int(row[6]),
        account_id=row[7],
        claimed_at=from_us(row[8]),
        test=bool(row[9]),
        version=row[10],
        checked=row[11],
        certificate_fingerprint=row[12],
        provisions=tuple(us / 1_000_000 for us in loads(row[13]) or ()),
    )


def file_params(f: DeviceFile) -> tuple[Any, ...]:
    return (f.account_id, f.key, f.device_id, f.size, f.md5_hex, f.content_type,
            to_us(f.modified_at))  # fmt: skip


def as_file(row: Sequence[Any]) -> DeviceFile:
    return DeviceFile(row[0], row[1], row[2], int(row[3]), row[4], row[5],
                      from_us(row[6]) or 0.0)  # fmt: skip
