"""What the local API changes and a restart keeps: port properties, connections on/off.

Kept in `<data_dir>/state.json` (mode 0600: it may hold module keys), written whole to a
temporary file, synced and renamed over the old one, so a crash leaves the old or the new
state, never half of one. Port properties set through the API are an overlay on edge.toml's
`[ports.N]`: `set` wins over the file, `deleted` hides a key of the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EdgeState"]

logger = logging.getLogger(__name__)


@dataclass
class _Overlay:
    deleted: set[str] = field(default_factory=set)
    set: dict[str, Any] = field(default_factory=dict)


class EdgeState:
    """Loaded once at start; every change is saved before the call returns."""

    def __init__(self, path: Path, base_ports: Mapping[int, Mapping[str, Any]]) -> None:
        self.path = path
        self.base_ports = {n: dict(p) for n, p in base_ports.items()}
        self.cloud_connection = True
        self.installed_version: str | None = None
        self._overlays: dict[int, _Overlay] = {}
        self._device_connection: dict[int, bool] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.error("state %s unreadable (%s): starting from edge.toml", self.path, exc)
            return
        self.cloud_connection = bool(raw.get("cloudConnection", True))
        version = raw.get("installedVersion")
        self.installed_version = version if isinstance(version, str) else None
        for key, overlay in (raw.get("ports") or {}).items():
            self._overlays[int(key)] = _Overlay(
                deleted=set(overlay.get("deleted") or []), set=dict(overlay.get("set") or {})
            )
        for key, value in (raw.get("deviceConnection") or {}).items():
            self._device_connection[int(key)] = bool(value)

    def save(self) -> None:
        document = {
            "cloudConnection": self.cloud_connection,
            "installedVersion": self.installed_version,
            "ports": {
                str(n): {"set": o.set, "deleted": sorted(o.deleted)}
                for n, o in sorted(self._overlays.items())
            },
            "deviceConnection": {str(n): v for n, v in sorted(self._device_connection.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)

    # -- ports -----------------------------------------------------------------------------

    def port_numbers(self) -> list[int]:
        numbers = set(self.base_ports) | {n for n, o in self._overlays.items() if o.set}
        return sorted(n for n in numbers if self.properties(n))

    def properties(self, number: int) -> dict[str, Any]:
        """The port's properties: edge.toml's, less the deleted keys, plus the API's."""
        overlay = self._overlays.get(number, _Overlay())
        props = {
            k: v for k, v in self.base_ports.get(number, {}).items() if k not in overlay.deleted
        }
        props.update(overlay.set)
        return props

    def set_properties(self, number: int, properties: Mapping[str, Any]) -> None:
        overlay = self._overlays.setdefault(number, _Overlay())
        overlay.set.update(properties)
        overlay.deleted.difference_update(properties)
        self.save()

    def delete_properties(self, number: int, keys: Iterable[str]) -> None:
        overlay = self._overlays.setdefault(number, _Overlay())
        for key in keys:
            overlay.set.pop(key, None)
            if key in self.base_ports.get(number, {}):
                overlay.deleted.add(key)
        self.save()

    def device_connection(self, number: int) -> bool:
        return self._device_connection.get(number, True)

    def set_device_connection(self, number: int, enabled: bool) -> None:
        self._device_connection[number] = enabled
        self.save()

    def set_cloud_connection(self, enabled: bool) -> None:
        self.cloud_connection = enabled
        self.save()

    def set_installed_version(self, version: str) -> None:
        self.installed_version = version
        self.save()
