"""The Store port in SQL, written once for SQLite and PostgreSQL (`?` placeholders).

Rows map to domain objects here and nowhere else: times are integer microseconds, JSON is
text, flags are 0/1.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from thinghub.domain.commands import Command, CommandMode, CommandStatus
from thinghub.domain.errors import Conflict, Invalid
from thinghub.domain.events import Event, EventType
from thinghub.domain.json_depth import JSON_DEPTH_CEILING, exceeds_depth
from thinghub.domain.model import (
    Account,
    ApiToken,
    Deployment,
    Device,
    DeviceKind,
    Project,
    Retention,
    Role,
    User,
)
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.domain.twin import Twin, TwinSection
from thinghub.ports import C2DMessage, EventQuery, Page, TelemetryQuery
from thinghub.storage.database import Database, DuplicateKeyError, Step

__all__ = ["SqlStore", "body_text", "from_us", "to_us"]

T = TypeVar("T")

# Past every stored time: the upper bound of a range with no end.
_END_US = 2**62


def to_us(ts: float) -> int:
    return round(ts * 1_000_000)


def from_us(us: int | None) -> float | None:
    return None if us is None else us / 1_000_000


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _account_term(device_id: str | None) -> str:
    """The account column as a query filtered by device should test it.

    `account_id || ''` is the same value, but no index can serve it, so the planner reads the
    device's own index (device_id, time) instead of walking every row of the account on
    (account_id, time) looking for the device's (which SQLite, without statistics, would
    otherwise pick for its order). Device ids are global, so the device picks few rows; the
    account test stays, for rows of an id another account held before.
    """
    return "account_id" if device_id is None else "account_id || ''"


def _range_us(since: float | None, until: float | None) -> tuple[int, int]:
    """[since, until] in microseconds; an open end is the whole past or future."""
    return (
        -_END_US if since is None else to_us(since),
        _END_US if until is None else to_us(until),
    )


def _body(text: str | None) -> Any:
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


def _encode_cursor(ts_us: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts_us}:{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, row = raw.partition(":")
        return int(ts), int(row)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Invalid(
            f"continuation token {cursor!r} is not valid", field="continuationToken"
        ) from exc


_DEVICE_COLUMNS = (
    "id, account_id, kind, name, primary_key, secondary_key, project, deployment, parent_id, "
    "module_id, enabled, simulated, provisioned, template, model_id, connection_state, "
    "last_activity_at, created_by, attributes, created_at, updated_at"
)
_COMMAND_COLUMNS = (
    "id, account_id, device_id, name, payload, mode, status, created_at, expires_at, "
    "response_timeout_s, completed_at, response_code, result"
)
_TELEMETRY_COLUMNS = (
    "account_id, device_id, project, deployment, enqueued_at, body, raw, properties, "
    "message_id, correlation_id, content_type, content_encoding, component, source"
)
_TOKEN_COLUMNS = (
    "id, account_id, secret_hash, role, label, face, face_role, created_at, expires_at, project"
)
_ACCOUNT_COLUMNS = "id, name, id_scope, created_at, retention"


def _retention_json(retention: Retention) -> str | None:
    """One JSON object per account (kind -> days), so a new kind (files) needs no migration."""
    days = {"telemetry": retention.telemetry_days, "events": retention.events_days}
    kept = {kind: value for kind, value in days.items() if value is not None}
    return _dumps(kept) if kept else None


def _retention(text: str | None) -> Retention:
    days = _loads(text) or {}
    return Retention(telemetry_days=days.get("telemetry"), events_days=days.get("events"))


def _account(row: Sequence[Any]) -> Account:
    return Account(row[0], row[1], row[2], from_us(row[3]) or 0.0, _retention(row[4]))


def _device(row: Sequence[Any]) -> Device:
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
        attributes=_loads(row[18]) or {},
        created_at=from_us(row[19]) or 0.0,
        updated_at=from_us(row[20]) or 0.0,
    )


def _device_params(d: Device) -> tuple[Any, ...]:
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
        None if d.last_activity_at is None else to_us(d.last_activity_at),
        d.created_by,
        _dumps(d.attributes),
        to_us(d.created_at),
        to_us(d.updated_at),
    )


def _section_json(section: TwinSection) -> str:
    return _dumps(
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


def _command(row: Sequence[Any]) -> Command:
    return Command(
        id=row[0],
        account_id=row[1],
        device_id=row[2],
        name=row[3],
        payload=_body(row[4]),
        mode=CommandMode(row[5]),
        status=CommandStatus(row[6]),
        created_at=from_us(row[7]) or 0.0,
        expires_at=from_us(row[8]) or 0.0,
        response_timeout_s=row[9],
        completed_at=from_us(row[10]),
        response_code=row[11],
        result=_body(row[12]),
    )


def _token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(
        id=row[0],
        account_id=row[1],
        secret_hash=row[2],
        role=Role(row[3]),
        label=row[4],
        face=row[5],
        face_role=row[6],
        created_at=from_us(row[7]) or 0.0,
        expires_at=from_us(row[8]),
        project=row[9],
    )


def body_text(m: TelemetryMessage) -> str | None:
    """The body column: the payload's own JSON text when it was JSON, else serialized."""
    if m.body_json is not None:
        return m.body_json.decode("utf-8")
    return None if m.body is None else _dumps(m.body)


def _telemetry_params(m: TelemetryMessage) -> tuple[Any, ...]:
    body = body_text(m)
    return (
        m.account_id,
        m.device_id,
        m.project,
        m.deployment,
        to_us(m.enqueued_at),
        body,
        m.raw if m.body is None else None,
        _dumps(m.properties) if m.properties else None,
        m.message_id,
        m.correlation_id,
        m.content_type,
        m.content_encoding,
        m.component,
        m.source,
    )


def _telemetry(row: Sequence[Any]) -> TelemetryMessage:
    return TelemetryMessage(
        account_id=row[0],
        device_id=row[1],
        project=row[2],
        deployment=row[3],
        enqueued_at=from_us(row[4]) or 0.0,
        body=_body(row[5]),
        raw=bytes(row[6] or b""),
        properties=_loads(row[7]) or {},
        message_id=row[8],
        correlation_id=row[9],
        content_type=row[10],
        content_encoding=row[11],
        component=row[12],
        source=row[13],
    )


class SqlStore:
    """The Store port over a Database driver."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self) -> None:
        await self.db.start()

    async def close(self) -> None:
        await self.db.close()

    async def _write(self, *steps: Step, conflict: str | None = None) -> list[Any]:
        try:
            return await self.db.write(steps)
        except DuplicateKeyError as exc:
            raise Conflict(conflict or "already exists") from exc

    # -- accounts and principals ---------------------------------------------------------

    async def insert_account(self, account: Account) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO accounts (id, name, id_scope, created_at, retention) "
                "VALUES (?,?,?,?,?)",
                (
                    account.id,
                    account.name,
                    account.id_scope,
                    to_us(account.created_at),
                    _retention_json(account.retention),
                ),
            ),
            conflict=f"account {account.name!r} already exists",
        )

    async def _account(self, where: str, value: str) -> Account | None:
        row = await self.db.fetch_one(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE {where} = ?", (value,)
        )
        return None if row is None else _account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self.db.fetch_all(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"
        )
        return [_account(r) for r in rows]

    async def set_retention(self, account_id: str, retention: Retention) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "UPDATE accounts SET retention = ? WHERE id = ?",
                (_retention_json(retention), account_id),
            )
        )
        return bool(count)

    async def get_account(self, account_id: str) -> Account | None:
        return await self._account("id", account_id)

    async def get_account_by_name(self, name: str) -> Account | None:
        return await self._account("name", name)

    async def get_account_by_scope(self, id_scope: str) -> Account | None:
        return await self._account("id_scope", id_scope)

    async def insert_user(self, user: User) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO users (id, account_id, username, password_hash, role, "
                "created_at) VALUES (?,?,?,?,?,?)",
                (
                    user.id,
                    user.account_id,
                    user.username,
                    user.password_hash,
                    user.role.value,
                    to_us(user.created_at),
                ),
            ),
            conflict=f"user {user.username!r} already exists",
        )

    async def get_user_by_name(self, username: str) -> User | None:
        row = await self.db.fetch_one(
            "SELECT id, account_id, username, password_hash, role, created_at FROM users "
            "WHERE username = ?",
            (username,),
        )
        if row is None:
            return None
        return User(row[0], row[1], row[2], row[3], Role(row[4]), from_us(row[5]) or 0.0)

    async def insert_api_token(self, token: ApiToken) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    token.id,
                    token.account_id,
                    token.secret_hash,
                    token.role.value,
                    token.label,
                    token.face,
                    token.face_role,
                    to_us(token.created_at),
                    None if token.expires_at is None else to_us(token.expires_at),
                    token.project,
                ),
            ),
            conflict=f"API token {token.id!r} already exists",
        )

    async def get_api_token(self, account_id: str, token_id: str) -> ApiToken | None:
        row = await self.db.fetch_one(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE account_id = ? AND id = ?",
            (account_id, token_id),
        )
        return None if row is None else _token(row)

    async def get_api_token_by_hash(self, secret_hash: str) -> ApiToken | None:
        row = await self.db.fetch_one(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ?", (secret_hash,)
        )
        return None if row is None else _token(row)

    async def list_api_tokens(self, account_id: str, face: str | None = None) -> list[ApiToken]:
        sql = f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE account_id = ?"
        params: list[Any] = [account_id]
        if face is not None:
            sql += " AND face = ?"
            params.append(face)
        rows = await self.db.fetch_all(sql + " ORDER BY created_at, id", params)
        return [_token(r) for r in rows]

    async def delete_api_token(self, account_id: str, token_id: str) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "DELETE FROM api_tokens WHERE account_id = ? AND id = ?",
                (account_id, token_id),
            )
        )
        return bool(count)

    # -- projects and deployments --------------------------------------------------------

    async def ensure_project(self, account_id: str, name: str, now: float) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO projects (account_id, name, created_at) VALUES (?,?,?) "
                "ON CONFLICT DO NOTHING",
                (account_id, name, to_us(now)),
            )
        )

    async def ensure_deployment(self, account_id: str, project: str, name: str, now: float) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO projects (account_id, name, created_at) VALUES (?,?,?) "
                "ON CONFLICT DO NOTHING",
                (account_id, project, to_us(now)),
            ),
            Step(
                "exec",
                "INSERT INTO deployments (account_id, project, name, created_at) "
                "VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (account_id, project, name, to_us(now)),
            ),
        )

    async def list_projects(self, account_id: str) -> list[Project]:
        rows = await self.db.fetch_all(
            "SELECT account_id, name, created_at FROM projects WHERE account_id = ? ORDER BY name",
            (account_id,),
        )
        return [Project(r[0], r[1], from_us(r[2]) or 0.0) for r in rows]

    async def list_deployments(self, account_id: str, project: str) -> list[Deployment]:
        rows = await self.db.fetch_all(
            "SELECT account_id, project, name, created_at FROM deployments "
            "WHERE account_id = ? AND project = ? ORDER BY name",
            (account_id, project),
        )
        return [Deployment(r[0], r[1], r[2], from_us(r[3]) or 0.0) for r in rows]

    # -- devices -------------------------------------------------------------------------

    async def insert_device(self, device: Device, twin: Twin) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({','.join('?' * 21)})",
                _device_params(device),
            ),
            Step(
                "exec",
                "INSERT INTO twins (device_id, version, desired, reported) VALUES (?,?,?,?)",
                (
                    twin.device_id,
                    twin.version,
                    _section_json(twin.desired),
                    _section_json(twin.reported),
                ),
            ),
            conflict=f"device {device.id!r} already exists",
        )

    async def get_device(self, device_id: str) -> Device | None:
        row = await self.db.fetch_one(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?", (device_id,)
        )
        return None if row is None else _device(row)

    async def list_devices(
        self,
        account_id: str,
        *,
        project: str | None = None,
        deployment: str | None = None,
        parent_id: str | None = None,
        kinds: Sequence[DeviceKind] | None = None,
    ) -> list[Device]:
        sql = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account_id = ?"
        params: list[Any] = [account_id]
        for column, value in (
            ("project", project),
            ("deployment", deployment),
            ("parent_id", parent_id),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(k.value for k in kinds)
        rows = await self.db.fetch_all(sql + " ORDER BY created_at, id", params)
        return [_device(r) for r in rows]

    async def update_device(self, device: Device) -> None:
        params = _device_params(device)
        columns = _DEVICE_COLUMNS.split(", ")[1:]
        await self._write(
            Step(
                "exec",
                f"UPDATE devices SET {', '.join(c + ' = ?' for c in columns)} WHERE id = ?",
                (*params[1:], device.id),
            )
        )

    async def touch_device(
        self, device_id: str, last_activity_at: float, connection_state: str | None = None
    ) -> None:
        if connection_state is None:
            step = Step(
                "exec",
                "UPDATE devices SET last_activity_at = ? WHERE id = ?",
                (to_us(last_activity_at), device_id),
            )
        else:
            step = Step(
                "exec",
                "UPDATE devices SET last_activity_at = ?, connection_state = ?, "
                "provisioned = 1 WHERE id = ?",
                (to_us(last_activity_at), connection_state, device_id),
            )
        await self._write(step)

    async def delete_device(self, device_id: str) -> bool:
        """The device, its modules and what waits for them: twins, commands, C2D messages and
        MQTT sessions (client id = device key), so an id used again starts with nothing."""
        children = "SELECT id FROM devices WHERE parent_id = ?"
        results = await self._write(
            Step("exec", f"DELETE FROM twins WHERE device_id IN ({children})", (device_id,)),
            Step("exec", f"DELETE FROM commands WHERE device_id IN ({children})", (device_id,)),
            Step("exec", f"DELETE FROM c2d_messages WHERE device_id IN ({children})", (device_id,)),
            Step(
                "exec", f"DELETE FROM mqtt_sessions WHERE client_id IN ({children})", (device_id,)
            ),
            Step("exec", "DELETE FROM mqtt_sessions WHERE client_id = ?", (device_id,)),
            Step("exec", "DELETE FROM devices WHERE parent_id = ?", (device_id,)),
            Step("exec", "DELETE FROM twins WHERE device_id = ?", (device_id,)),
            Step("exec", "DELETE FROM commands WHERE device_id = ?", (device_id,)),
            Step("exec", "DELETE FROM c2d_messages WHERE device_id = ?", (device_id,)),
            Step("exec", "DELETE FROM devices WHERE id = ?", (device_id,)),
        )
        return bool(results[-1])

    # -- twins ---------------------------------------------------------------------------

    async def get_twin(self, device_id: str) -> Twin | None:
        row = await self.db.fetch_one(
            "SELECT device_id, version, desired, reported FROM twins WHERE device_id = ?",
            (device_id,),
        )
        if row is None:
            return None
        return Twin(row[0], _section(row[2]), _section(row[3]), row[1])

    async def put_twin(self, twin: Twin, expected_version: int) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "UPDATE twins SET version = ?, desired = ?, reported = ? "
                "WHERE device_id = ? AND version = ?",
                (
                    twin.version,
                    _section_json(twin.desired),
                    _section_json(twin.reported),
                    twin.device_id,
                    expected_version,
                ),
            )
        )
        return bool(count)

    # -- telemetry and observations ------------------------------------------------------

    async def append_telemetry(
        self, messages: Sequence[TelemetryMessage], observations: Sequence[Observation]
    ) -> list[bool]:
        """One write unit for the whole batch.

        Messages without an id are always new: one executemany. Messages with an id may be
        redeliveries: inserted one by one (ON CONFLICT DO NOTHING) to learn which landed.
        """
        insert = (
            f"INSERT INTO telemetry ({_TELEMETRY_COLUMNS}) VALUES "
            f"({','.join('?' * 14)}) ON CONFLICT DO NOTHING"
        )
        with_id = [m for m in messages if m.message_id is not None]
        without_id = [m for m in messages if m.message_id is None]
        steps = [
            Step("each", insert, [_telemetry_params(m) for m in with_id]),
            Step("many", insert, [_telemetry_params(m) for m in without_id]),
        ]
        if observations:
            steps += self._observation_steps(messages, observations)
        result = await self._write(*steps)
        landed = iter(bool(n) for n in result[0])
        return [True if m.message_id is None else next(landed) for m in messages]

    @staticmethod
    def _observation_steps(
        messages: Sequence[TelemetryMessage], observations: Sequence[Observation]
    ) -> list[Step]:
        """Observations of new messages only: a redelivered duplicate adds none.

        An observation of a message with an id is written only if the stored row for that id
        is this message's (same enqueued time), i.e. this insert is the one that landed. The
        latest value per (entity, metric) is upserted once per batch for plain rows.
        """
        ids = {(m.device_id, to_us(m.enqueued_at)): m.message_id for m in messages}
        plain: list[tuple[Any, ...]] = []
        guarded: list[tuple[Any, ...]] = []
        newest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for o in observations:
            row = (o.account_id, o.entity_id, o.metric, to_us(o.ts), o.value)
            message_id = ids.get((o.entity_id, row[3]))
            if message_id is None:
                plain.append(row)
                prior = newest.get((o.entity_id, o.metric))
                if prior is None or row[3] >= prior[3]:
                    newest[(o.entity_id, o.metric)] = row
            else:
                guarded.append((*row, o.entity_id, message_id, row[3]))
        latest = (
            " ON CONFLICT (entity_id, metric) DO UPDATE SET ts = excluded.ts, "
            "value = excluded.value WHERE excluded.ts >= latest_observations.ts"
        )
        landed = (
            " WHERE EXISTS (SELECT 1 FROM telemetry WHERE device_id = ? AND message_id = ? "
            "AND enqueued_at = ?)"
        )
        columns = "(account_id, entity_id, metric, ts, value)"
        steps = []
        if plain:
            steps += [
                Step("many", f"INSERT INTO observations {columns} VALUES (?,?,?,?,?)", plain),
                Step(
                    "many",
                    f"INSERT INTO latest_observations {columns} VALUES (?,?,?,?,?){latest}",
                    list(newest.values()),
                ),
            ]
        if guarded:
            steps += [
                Step(
                    "many", f"INSERT INTO observations {columns} SELECT ?,?,?,?,?{landed}", guarded
                ),
                Step(
                    "many",
                    f"INSERT INTO latest_observations {columns} SELECT ?,?,?,?,?{landed}{latest}",
                    guarded,
                ),
            ]
        return steps

    async def query_telemetry(self, query: TelemetryQuery) -> Page[TelemetryMessage]:
        account = _account_term(query.device_id)
        sql = f"SELECT id, {_TELEMETRY_COLUMNS} FROM telemetry WHERE {account} = ?"
        return await self._page(
            sql, [query.account_id], query, "enqueued_at", 5, lambda r: _telemetry(r[1:])
        )

    async def _page(
        self,
        sql: str,
        params: list[Any],
        query: TelemetryQuery | EventQuery,
        ts_column: str,
        ts_index: int,
        item: Callable[[Sequence[Any]], T],
    ) -> Page[T]:
        """Newest first, `query.limit` rows, and a cursor (time, id) when more remain."""
        sql, params = self._scope_filters(
            sql, params, query.project, query.deployment, query.device_id, query.since,
            query.until, query.cursor, ts_column,
        )  # fmt: skip
        sql += f" ORDER BY {ts_column} DESC, id DESC LIMIT ?"
        params.append(query.limit + 1)
        rows = await self.db.fetch_all(sql, params, bulk=True)
        cursor = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            cursor = _encode_cursor(last[ts_index], last[0])
        return Page([item(r) for r in rows[: query.limit]], cursor)

    @staticmethod
    def _scope_filters(
        sql: str,
        params: list[Any],
        project: str | None,
        deployment: str | None,
        device_id: str | None,
        since: float | None,
        until: float | None,
        cursor: str | None,
        ts_column: str,
    ) -> tuple[str, list[Any]]:
        for column, value in (("project", project), ("deployment", deployment)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if device_id is not None and "/" in device_id:
            sql += " AND device_id = ?"
            params.append(device_id)
        elif device_id is not None:
            # A device and its modules (`device/module`): the keys from `device/` up to, not
            # including, `device0` ('0' follows '/'), a range the index serves.
            sql += " AND (device_id = ? OR (device_id >= ? AND device_id < ?))"
            params += [device_id, device_id + "/", device_id + "0"]
        if since is not None:
            sql += f" AND {ts_column} >= ?"
            params.append(to_us(since))
        if until is not None:
            sql += f" AND {ts_column} <= ?"
            params.append(to_us(until))
        if cursor is not None:
            ts_us, row_id = _decode_cursor(cursor)
            sql += f" AND ({ts_column} < ? OR ({ts_column} = ? AND id < ?))"
            params += [ts_us, ts_us, row_id]
        return sql, params

    async def latest_observations(self, account_id: str, entity_id: str) -> dict[str, Observation]:
        rows = await self.db.fetch_all(
            "SELECT metric, ts, value FROM latest_observations "
            "WHERE account_id = ? AND entity_id = ?",
            (account_id, entity_id),
        )
        return {
            r[0]: Observation(account_id, entity_id, r[0], from_us(r[1]) or 0.0, r[2]) for r in rows
        }

    async def query_observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[Observation]:
        sql = (
            "SELECT ts, value FROM observations WHERE account_id = ? AND entity_id = ? "
            "AND metric = ?"
        )
        params: list[Any] = [account_id, entity_id, metric]
        if since is not None:
            sql += " AND ts >= ?"
            params.append(to_us(since))
        if until is not None:
            sql += " AND ts <= ?"
            params.append(to_us(until))
        rows = await self.db.fetch_all(
            sql + " ORDER BY ts DESC LIMIT ?", [*params, limit], bulk=True
        )
        return [
            Observation(account_id, entity_id, metric, from_us(r[0]) or 0.0, r[1]) for r in rows
        ]

    # -- events --------------------------------------------------------------------------

    async def append_event(self, event: Event) -> int:
        (row,) = await self._write(
            Step(
                "one",
                "INSERT INTO events (account_id, device_id, project, deployment, type, "
                "ts, body) VALUES (?,?,?,?,?,?,?) RETURNING id",
                (
                    event.account_id,
                    event.device_id,
                    event.project,
                    event.deployment,
                    event.type.value,
                    to_us(event.ts),
                    _dumps(event.body),
                ),
            )
        )
        return int(row[0])

    async def query_events(self, query: EventQuery) -> Page[Event]:
        sql = (
            "SELECT id, account_id, device_id, project, deployment, type, ts, body "
            f"FROM events WHERE {_account_term(query.device_id)} = ?"
        )
        params: list[Any] = [query.account_id]
        if query.event_types is not None:
            types = sorted(t.value for t in query.event_types)
            sql += f" AND type IN ({','.join('?' * len(types))})" if types else " AND 0 = 1"
            params.extend(types)
        return await self._page(
            sql, params, query, "ts", 6,
            lambda r: Event(r[1], r[2], EventType(r[5]), from_us(r[6]) or 0.0,
                            _body(r[7]), r[3], r[4]),
        )  # fmt: skip

    # -- retention and deletion ----------------------------------------------------------
    # Rows go oldest first, `batch_rows` at a time, each batch its own write unit: the SQLite
    # writer is never held for more than one batch (ingest commits between batches), and on
    # PostgreSQL no transaction locks more than one batch of rows.

    async def purge_telemetry(self, account_id: str, before: float, batch_rows: int) -> int:
        """An account's telemetry and observations older than `before`; returns the number
        of messages deleted. The latest value of each metric stays."""
        where = "account_id = ? AND {ts} < ?"
        count = await self._delete_batches(
            "telemetry", "enqueued_at", where, [account_id, to_us(before)], batch_rows
        )
        await self._delete_batches(
            "observations", "ts", where, [account_id, to_us(before)], batch_rows
        )
        return count

    async def purge_events(self, account_id: str, before: float, batch_rows: int) -> int:
        return await self._delete_batches(
            "events", "ts", "account_id = ? AND {ts} < ?", [account_id, to_us(before)], batch_rows
        )

    async def delete_device_telemetry(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int:
        """A device's telemetry in [since, until] (a device id includes its modules), with
        its observations; a latest value in the range gives way to the newest one left.
        Returns the number of messages deleted."""
        low, high = _range_us(since, until)
        where = f"{_account_term(device_id)} = ? AND device_id = ? AND {{ts}} >= ? AND {{ts}} <= ?"
        count = 0
        for entity in await self._entities("telemetry", device_id):
            count += await self._delete_batches(
                "telemetry", "enqueued_at", where, [account_id, entity, low, high], batch_rows
            )
        sql, params = self._device_filter(
            "SELECT entity_id, metric, ts FROM latest_observations WHERE account_id = ?",
            [account_id],
            "entity_id",
            device_id,
        )
        for entity, metric, latest_us in await self.db.fetch_all(sql, params):
            await self._delete_batches(
                "observations",
                "ts",
                f"{_account_term(device_id)} = ? AND entity_id = ? AND metric = ? "
                "AND {ts} >= ? AND {ts} <= ?",
                [account_id, entity, metric, low, high],
                batch_rows,
            )
            if low <= latest_us <= high:
                await self._write(
                    Step(
                        "exec",
                        "DELETE FROM latest_observations WHERE entity_id = ? AND metric = ? "
                        "AND ts >= ? AND ts <= ?",
                        (entity, metric, low, high),
                    ),
                    Step(
                        "exec",
                        "INSERT INTO latest_observations (account_id, entity_id, metric, ts, "
                        "value) SELECT account_id, entity_id, metric, ts, value FROM "
                        "observations WHERE account_id = ? AND entity_id = ? AND metric = ? "
                        "ORDER BY ts DESC LIMIT 1 ON CONFLICT (entity_id, metric) DO UPDATE "
                        "SET ts = excluded.ts, value = excluded.value "
                        "WHERE excluded.ts >= latest_observations.ts",
                        (account_id, entity, metric),
                    ),
                )
        return count

    async def delete_device_events(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int:
        """A device's events in [since, until] (a device id includes its modules)."""
        low, high = _range_us(since, until)
        where = f"{_account_term(device_id)} = ? AND device_id = ? AND {{ts}} >= ? AND {{ts}} <= ?"
        count = 0
        for entity in await self._entities("events", device_id):
            count += await self._delete_batches(
                "events", "ts", where, [account_id, entity, low, high], batch_rows
            )
        return count

    async def _entities(self, table: str, device_id: str) -> list[str]:
        """The device and each module key (`device/module`) with rows in `table`, one index
        seek per key rather than a scan of the modules' rows."""
        if "/" in device_id:
            return [device_id]
        found = [device_id]
        low, above = device_id + "/", ">="
        while True:
            row = await self.db.fetch_one(
                f"SELECT min(device_id) FROM {table} WHERE device_id {above} ? AND device_id < ?",
                (low, device_id + "0"),
            )
            if row is None or row[0] is None:
                return found
            found.append(row[0])
            low, above = row[0], ">"

    @staticmethod
    def _device_filter(
        sql: str, params: list[Any], column: str, device_id: str
    ) -> tuple[str, list[Any]]:
        if "/" in device_id:
            return f"{sql} AND {column} = ?", [*params, device_id]
        return (
            f"{sql} AND ({column} = ? OR ({column} >= ? AND {column} < ?))",
            [*params, device_id, device_id + "/", device_id + "0"],
        )

    async def _delete_batches(
        self, table: str, ts_column: str, where: str, params: list[Any], batch_rows: int
    ) -> int:
        """Delete the rows `where` ({ts} = `ts_column`) matches, oldest first.

        Each batch ends at the time of the batch_rows-th oldest row (found on an index that
        leads with the filter's equality columns and then the time), so it deletes that many
        rows plus any sharing its last microsecond; with fewer left, it deletes them all.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        match = where.format(ts=ts_column)
        sql = (
            f"DELETE FROM {table} WHERE {match} AND {ts_column} <= COALESCE("
            f"(SELECT {ts_column} FROM {table} WHERE {match} ORDER BY {ts_column} "
            "LIMIT 1 OFFSET ?), ?)"
        )
        total = 0
        while True:
            (deleted,) = await self._write(
                Step("exec", sql, (*params, *params, batch_rows - 1, _END_US))
            )
            count = int(deleted)
            total += count
            if count < batch_rows:
                return total

    # -- commands ------------------------------------------------------------------------

    async def insert_command(self, command: Command) -> None:
        c = command
        await self._write(
            Step(
                "exec",
                f"INSERT INTO commands ({_COMMAND_COLUMNS}) VALUES ({','.join('?' * 13)})",
                (
                    c.id,
                    c.account_id,
                    c.device_id,
                    c.name,
                    _dumps(c.payload),
                    c.mode.value,
                    c.status.value,
                    to_us(c.created_at),
                    to_us(c.expires_at),
                    c.response_timeout_s,
                    None if c.completed_at is None else to_us(c.completed_at),
                    c.response_code,
                    None if c.result is None else _dumps(c.result),
                ),
            ),
            conflict=f"command {c.id!r} already exists",
        )

    async def get_command(self, command_id: str) -> Command | None:
        row = await self.db.fetch_one(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE id = ?", (command_id,)
        )
        return None if row is None else _command(row)

    async def update_command(self, command: Command) -> None:
        c = command
        await self._write(
            Step(
                "exec",
                "UPDATE commands SET status = ?, completed_at = ?, response_code = ?, "
                "result = ? WHERE id = ?",
                (
                    c.status.value,
                    None if c.completed_at is None else to_us(c.completed_at),
                    c.response_code,
                    None if c.result is None else _dumps(c.result),
                    c.id,
                ),
            )
        )

    async def pending_commands(self, device_id: str) -> list[Command]:
        rows = await self.db.fetch_all(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE device_id = ? AND status = ? "
            "ORDER BY created_at",
            (device_id, CommandStatus.PENDING.value),
        )
        return [_command(r) for r in rows]

    # -- cloud-to-device messages --------------------------------------------------------

    async def enqueue_c2d(self, message: C2DMessage) -> None:
        m = message
        await self._write(
            Step(
                "exec",
                "INSERT INTO c2d_messages (id, device_id, body, properties, created_at, "
                "expires_at) VALUES (?,?,?,?,?,?)",
                (
                    m.id,
                    m.device_id,
                    m.body,
                    _dumps(m.properties),
                    to_us(m.created_at),
                    to_us(m.expires_at),
                ),
            )
        )

    async def pending_c2d(self, device_id: str) -> list[C2DMessage]:
        rows = await self.db.fetch_all(
            "SELECT id, device_id, body, properties, created_at, expires_at FROM c2d_messages "
            "WHERE device_id = ? ORDER BY created_at",
            (device_id,),
        )
        return [
            C2DMessage(
                r[0],
                r[1],
                bytes(r[2]),
                orjson.loads(r[3]),
                from_us(r[4]) or 0.0,
                from_us(r[5]) or 0.0,
            )
            for r in rows
        ]

    async def delete_c2d(self, message_id: str) -> None:
        await self._write(Step("exec", "DELETE FROM c2d_messages WHERE id = ?", (message_id,)))

    # -- MQTT sessions -------------------------------------------------------------------

    async def save_session(self, client_id: str, state: dict[str, Any]) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO mqtt_sessions (client_id, subscriptions, updated_at) "
                "VALUES (?,?,?) ON CONFLICT (client_id) DO UPDATE SET "
                "subscriptions = excluded.subscriptions, updated_at = excluded.updated_at",
                (client_id, _dumps(state), 0),
            )
        )

    async def load_session(self, client_id: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            "SELECT subscriptions FROM mqtt_sessions WHERE client_id = ?", (client_id,)
        )
        return None if row is None else dict(orjson.loads(row[0]))

    async def delete_session(self, client_id: str) -> None:
        await self._write(
            Step("exec", "DELETE FROM mqtt_sessions WHERE client_id = ?", (client_id,))
        )

    # -- documents -----------------------------------------------------------------------

    async def put_document(
        self, account_id: str, kind: str, key: str, body: Any, now: float
    ) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO documents (account_id, kind, key, body, updated_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (account_id, kind, key) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at",
                (account_id, kind, key, _dumps(body), to_us(now)),
            )
        )

    async def get_document(self, account_id: str, kind: str, key: str) -> Any | None:
        row = await self.db.fetch_one(
            "SELECT body FROM documents WHERE account_id = ? AND kind = ? AND key = ?",
            (account_id, kind, key),
        )
        return None if row is None else orjson.loads(row[0])

    async def list_documents(self, account_id: str, kind: str) -> list[tuple[str, Any]]:
        rows = await self.db.fetch_all(
            "SELECT key, body FROM documents WHERE account_id = ? AND kind = ? ORDER BY key",
            (account_id, kind),
        )
        return [(r[0], orjson.loads(r[1])) for r in rows]

    async def delete_document(self, account_id: str, kind: str, key: str) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "DELETE FROM documents WHERE account_id = ? AND kind = ? AND key = ?",
                (account_id, kind, key),
            )
        )
        return bool(count)
