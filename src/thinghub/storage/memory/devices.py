"""The registry in memory: projects, deployments and devices."""

from __future__ import annotations

from collections.abc import Sequence

from thinghub.domain.model import Deployment, Device, DeviceKind, Project
from thinghub.domain.twin import Twin
from thinghub.ports.store import ConnectionChange
from thinghub.storage.memory._tables import MemoryArea, unique
from thinghub.storage.sql._rows import (
    as_device,
    device_params,
    event_params,
    from_us,
    to_us,
    twin_params,
)

__all__ = ["MemoryDeviceStore"]

# Columns of a device row (DEVICE_COLUMNS) this area reads or changes.
_ACCOUNT, _KIND, _PROJECT, _DEPLOYMENT, _PARENT = 1, 2, 6, 7, 8
_PROVISIONED, _CONNECTION_STATE, _LAST_ACTIVITY, _CREATED = 12, 15, 16, 19
# The device column of a command row (COMMAND_COLUMNS) and of a C2D message row.
_COMMAND_DEVICE, _C2D_DEVICE = 2, 1


class MemoryDeviceStore(MemoryArea):
    # -- projects and deployments --------------------------------------------------------

    async def ensure_project(self, account_id: str, name: str, now: float) -> None:
        self.tables.projects.setdefault((account_id, name), to_us(now))

    async def ensure_deployment(self, account_id: str, project: str, name: str, now: float) -> None:
        self.tables.projects.setdefault((account_id, project), to_us(now))
        self.tables.deployments.setdefault((account_id, project, name), to_us(now))

    async def list_projects(self, account_id: str) -> list[Project]:
        found = [
            (name, us) for (acc, name), us in self.tables.projects.items() if acc == account_id
        ]
        return [Project(account_id, name, from_us(us) or 0.0) for name, us in sorted(found)]

    async def list_deployments(self, account_id: str, project: str) -> list[Deployment]:
        found = [
            (name, us)
            for (acc, proj, name), us in self.tables.deployments.items()
            if (acc, proj) == (account_id, project)
        ]
        return [
            Deployment(account_id, project, name, from_us(us) or 0.0) for name, us in sorted(found)
        ]

    async def delete_project(self, account_id: str, name: str) -> bool:
        t = self.tables
        if (account_id, name) not in t.projects or any(
            row[_ACCOUNT] == account_id and row[_PROJECT] == name for row in t.devices.values()
        ):
            return False
        del t.projects[(account_id, name)]
        for key in [k for k in t.deployments if k[:2] == (account_id, name)]:
            del t.deployments[key]
        return True

    # -- devices -------------------------------------------------------------------------

    async def insert(self, device: Device, twin: Twin) -> None:
        t = self.tables
        unique(
            device.id in t.devices or twin.device_id in t.twins,
            f"device {device.id!r} already exists",
        )
        t.devices[device.id] = device_params(device)
        t.twins[twin.device_id] = twin_params(twin)

    async def get(self, device_id: str) -> Device | None:
        row = self.tables.devices.get(device_id)
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
        wanted_kinds = {k.value for k in kinds} if kinds else None
        rows = [
            r
            for r in self.tables.devices.values()
            if r[_ACCOUNT] == account_id
            and (project is None or r[_PROJECT] == project)
            and (deployment is None or r[_DEPLOYMENT] == deployment)
            and (parent_id is None or r[_PARENT] == parent_id)
            and (wanted_kinds is None or r[_KIND] in wanted_kinds)
        ]
        return [as_device(r) for r in sorted(rows, key=lambda r: (r[_CREATED], r[0]))]

    async def update(self, device: Device) -> None:
        if device.id in self.tables.devices:
            self.tables.devices[device.id] = device_params(device)

    async def touch(
        self, device_id: str, last_activity_at: float, connection_state: str | None = None
    ) -> None:
        row = self.tables.devices.get(device_id)
        if row is None:
            return
        changed = list(row)
        changed[_LAST_ACTIVITY] = to_us(last_activity_at)
        if connection_state is not None:
            changed[_CONNECTION_STATE] = connection_state
            changed[_PROVISIONED] = 1
        self.tables.devices[device_id] = tuple(changed)

    async def record_connections(self, changes: Sequence[ConnectionChange]) -> None:
        for change in changes:
            await self.touch(change.device_id, change.ts, change.state)
            self.tables.events[next(self.tables.event_ids)] = event_params(change.event)

    async def delete(self, device_id: str) -> bool:
        """The device, its modules and what waits for them: twins, commands, C2D messages and
        MQTT sessions (client id = device key), so an id used again starts with nothing."""
        t = self.tables
        children = [key for key, row in t.devices.items() if row[_PARENT] == device_id]
        for key in [*children, device_id]:
            t.twins.pop(key, None)
            t.sessions.pop(key, None)
            for gone in [k for k, row in t.commands.items() if row[_COMMAND_DEVICE] == key]:
                del t.commands[gone]
            for gone in [k for k, row in t.c2d.items() if row[_C2D_DEVICE] == key]:
                del t.c2d[gone]
        for key in children:
            del t.devices[key]
        return t.devices.pop(device_id, None) is not None
