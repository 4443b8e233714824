"""The registry in SQL: projects, deployments and devices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinghub.domain.model import Deployment, Device, DeviceKind, Project
from thinghub.domain.twin import Twin
from thinghub.ports.store import ConnectionChange
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import (
    DEVICE_COLUMNS,
    as_device,
    device_params,
    event_params,
    from_us,
    to_us,
    twin_params,
)

__all__ = ["SqlDeviceStore"]


class SqlDeviceStore(SqlArea):
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

    async def delete_project(self, account_id: str, name: str) -> bool:
        empty = "NOT EXISTS (SELECT 1 FROM devices WHERE account_id = ? AND project = ?)"
        counts = await self._write(
            Step(
                "exec",
                f"DELETE FROM deployments WHERE account_id = ? AND project = ? AND {empty}",
                (account_id, name, account_id, name),
            ),
            Step(
                "exec",
                f"DELETE FROM projects WHERE account_id = ? AND name = ? AND {empty}",
                (account_id, name, account_id, name),
            ),
        )
        return bool(counts[1])

    # -- devices -------------------------------------------------------------------------

    async def insert(self, device: Device, twin: Twin) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ({','.join('?' * 21)})",
                device_params(device),
            ),
            Step(
                "exec",
                "INSERT INTO twins (device_id, version, desired, reported) VALUES (?,?,?,?)",
                twin_params(twin),
            ),
            conflict=f"device {device.id!r} already exists",
        )

    async def get(self, device_id: str) -> Device | None:
        row = await self.db.fetch_one(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?", (device_id,)
        )
        return None if row is None else as_device(row)

    async def find(
        self,
        account_id: str,
        *,
        project: str | None = None,
        deployment: str | None = None,
        parent_id: str | None = None,
        kinds: Sequence[DeviceKind] | None = None,
    ) -> list[Device]:
        sql = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = ?"
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
        return [as_device(r) for r in rows]

    async def update(self, device: Device) -> None:
        params = device_params(device)
        columns = DEVICE_COLUMNS.split(", ")[1:]
        await self._write(
            Step(
                "exec",
                f"UPDATE devices SET {', '.join(c + ' = ?' for c in columns)} WHERE id = ?",
                (*params[1:], device.id),
            )
        )

    async def touch(
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

    async def record_connections(self, changes: Sequence[ConnectionChange]) -> None:
        """One write unit for every change: the device rows (executemany), then the event
        rows (a multi-row INSERT). A device appears at most once per call in practice (its
        transitions are serialized), and executemany keeps the order if it does not."""
        if not changes:
            return
        await self._write(
            Step(
                "many",
                "UPDATE devices SET last_activity_at = ?, connection_state = ?, "
                "provisioned = 1 WHERE id = ?",
                [(to_us(c.ts), c.state, c.device_id) for c in changes],
            ),
            Step(
                "many",
                "INSERT INTO events (account_id, device_id, project, deployment, type, ts, "
                "body) VALUES (?,?,?,?,?,?,?)",
                [event_params(c.event) for c in changes],
            ),
        )

    async def delete(self, device_id: str) -> bool:
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
