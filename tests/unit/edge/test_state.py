"""Tests for thinghub.edge.state: API changes as an overlay on edge.toml, kept on disk."""

from __future__ import annotations

import stat
from pathlib import Path

from thinghub.edge.state import EdgeState


def test_overlay_sets_and_hides_keys_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    base = {1: {"COMM_TYPE": "RS232", "DEVICE": "/dev/ttyS0", "BAUD_RATE": 9600}}
    state = EdgeState(path, base)
    state.set_properties(1, {"BAUD_RATE": 115200})
    state.delete_properties(1, ["DEVICE"])
    state.set_properties(2, {"COMM_TYPE": "TCP"})
    state.set_cloud_connection(False)
    state.set_device_connection(2, False)
    again = EdgeState(path, base)
    assert again.properties(1) == {"COMM_TYPE": "RS232", "BAUD_RATE": 115200}
    assert again.port_numbers() == [1, 2]
    assert again.cloud_connection is False and again.device_connection(2) is False
    assert again.device_connection(1) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again.set_properties(1, {"DEVICE": "/dev/ttyUSB0"})  # set again after a delete
    assert EdgeState(path, base).properties(1)["DEVICE"] == "/dev/ttyUSB0"
