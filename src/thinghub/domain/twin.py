"""Twins: desired and reported state kept apart, each with $version and per-property $metadata.

A section holds user properties (JSON, no `$` keys), its version and metadata mirroring the
property tree, where every node carries `$lastUpdated` (Azure IoT Hub twin conventions).
Patches merge: an object merges into an object, `null` deletes, anything else replaces.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from thinghub.domain.clock import format_ts, parse_ts
from thinghub.domain.errors import Invalid, TooLarge

__all__ = [
    "MAX_TWIN_DEPTH",
    "MAX_TWIN_PATCH_BYTES",
    "MAX_TWIN_SECTION_BYTES",
    "Twin",
    "TwinSection",
    "check_patch_size",
    "validate_patch",
]

# IoT Hub limits twin documents to 10 levels of nesting and 32 KiB per section; a patch can
# be no larger than the section it lands in.
MAX_TWIN_DEPTH = 10
MAX_TWIN_SECTION_BYTES = 32 * 1024
MAX_TWIN_PATCH_BYTES = MAX_TWIN_SECTION_BYTES


@dataclass(frozen=True, slots=True)
class TwinSection:
    properties: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    last_updated: float | None = None

    def apply(self, patch: dict[str, Any], now: float) -> TwinSection:
        """Merge a validated patch; the version goes up by one.

        Raises:
            TooLarge: the section would hold more than MAX_TWIN_SECTION_BYTES of JSON.
        """
        props = _merge(self.properties, patch)
        size = _json_size(props)
        if size > MAX_TWIN_SECTION_BYTES:
            raise TooLarge(
                f"the section would hold {size} bytes of properties; the limit is "
                f"{MAX_TWIN_SECTION_BYTES}",
                field="properties",
            )
        meta = _merge_metadata(self.metadata, patch, format_ts(now))
        return replace(
            self, properties=props, version=self.version + 1, metadata=meta, last_updated=now
        )

    def changed_at(self, *path: str) -> float | None:
        """When the property at `path` (e.g. component, name) last changed: its `$metadata`
        `$lastUpdated`, else (no metadata for it) when the section last changed."""
        meta: Any = self.metadata
        for key in path:
            meta = meta.get(key) if isinstance(meta, dict) else None
        stamp = meta.get("$lastUpdated") if isinstance(meta, dict) else None
        if not isinstance(stamp, str):
            return self.last_updated
        try:
            return parse_ts(stamp, "$lastUpdated")
        except Invalid:
            return self.last_updated

    def document(self) -> dict[str, Any]:
        """The wire form: properties plus `$metadata` and `$version`."""
        meta: dict[str, Any] = {}
        if self.last_updated is not None:
            meta["$lastUpdated"] = format_ts(self.last_updated)
        meta.update(self.metadata)
        return {**self.properties, "$metadata": meta, "$version": self.version}

    def with_version(self) -> dict[str, Any]:
        """Properties plus `$version` only (the MQTT twin GET shape)."""
        return {**self.properties, "$version": self.version}


@dataclass(frozen=True, slots=True)
class Twin:
    device_id: str
    desired: TwinSection = field(default_factory=TwinSection)
    reported: TwinSection = field(default_factory=TwinSection)
    # The whole twin's version: up by one on every change to either section.
    version: int = 1

    def patch_desired(self, patch: dict[str, Any], now: float) -> Twin:
        return replace(self, desired=self.desired.apply(patch, now), version=self.version + 1)

    def patch_reported(self, patch: dict[str, Any], now: float) -> Twin:
        return replace(self, reported=self.reported.apply(patch, now), version=self.version + 1)


def check_patch_size(patch: bytes | Mapping[str, Any], field_name: str = "properties") -> int:
    """The one twin patch size cap: refuse a patch over MAX_TWIN_PATCH_BYTES.

    Every way in calls it: a device's reported patch (as the bytes it sent, before they are
    parsed) and an application's desired patch on every face.

    Args:
        patch: The patch as it arrived (bytes, measured as they are) or parsed (measured as
            compact UTF-8 JSON, the way a section's size is).
        field_name: The input the patch came from, named in the error.

    Returns:
        The patch's size in bytes.

    Raises:
        TooLarge: the patch is over MAX_TWIN_PATCH_BYTES.
    """
    size = len(patch) if isinstance(patch, bytes | bytearray) else _json_size(patch)
    if size > MAX_TWIN_PATCH_BYTES:
        raise TooLarge(
            f"{field_name} is {size} bytes; the limit is {MAX_TWIN_PATCH_BYTES}",
            field=field_name,
        )
    return size


def _json_size(value: Mapping[str, Any]) -> int:
    # surrogatepass: a lone surrogate is refused elsewhere (domain/storable.py); measuring
    # one must not raise.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def validate_patch(patch: Any, field_name: str = "properties") -> dict[str, Any]:
    """Check a twin patch: a JSON object, no `$` keys (a top-level `$version` is dropped).

    Raises:
        Invalid: naming the offending key.
    """
    if not isinstance(patch, dict):
        raise Invalid(f"{field_name} must be a JSON object", field=field_name)
    cleaned = {k: v for k, v in patch.items() if k != "$version"}
    _check(cleaned, field_name, 1)
    return cleaned


def _check(node: dict[str, Any], path: str, depth: int) -> None:
    if depth > MAX_TWIN_DEPTH:
        raise Invalid(f"{path} nests deeper than {MAX_TWIN_DEPTH} levels", field=path)
    for key, value in node.items():
        where = f"{path}.{key}"
        if not isinstance(key, str) or not key or key.startswith("$") or "." in key or " " in key:
            raise Invalid(
                f"{where}: property names must not be empty or hold $ . or space", field=where
            )
        _check_value(value, where, depth)


def _check_value(value: Any, where: str, depth: int) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{where} must be a finite number", field=where)
    if isinstance(value, dict):
        _check(value, where, depth + 1)
    elif isinstance(value, list):
        if depth + 1 > MAX_TWIN_DEPTH:
            raise Invalid(f"{where} nests deeper than {MAX_TWIN_DEPTH} levels", field=where)
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", depth + 1)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = _merge({}, value)
        else:
            out[key] = value
    return out


def _merge_metadata(base: dict[str, Any], patch: dict[str, Any], stamp: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            prior = out.get(key)
            node = _merge_metadata(prior if isinstance(prior, dict) else {}, value, stamp)
            node["$lastUpdated"] = stamp
            out[key] = node
        else:
            out[key] = {"$lastUpdated": stamp}
    return out
