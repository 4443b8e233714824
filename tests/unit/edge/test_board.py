"""Tests for the boards: the simulated values, sysfs readings, and honest refusals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from thinghub.edge.board import PrivilegeRequired, Unsupported
from thinghub.edge.board_linux import LinuxBoard
from thinghub.edge.board_sim import SimulatedBoard, SimulatedValues


def test_simulated_clock_moves_without_touching_the_system_clock() -> None:
    board = SimulatedBoard()
    board.set_time(1_574_178_090.0)
    assert abs(board.now() - 1_574_178_090.0) < 5
    assert time.time() > 1_700_000_000


def test_simulated_values_come_from_the_table_and_are_checked() -> None:
    assert SimulatedValues.from_table({"temperature": 20}).temperature == 20.0
    with pytest.raises(ValueError, match="board.simulated.nope"):
        SimulatedValues.from_table({"nope": 1})
    with pytest.raises(ValueError, match="temperature"):
        SimulatedValues.from_table({"temperature": "hot"})


def test_linux_board_reads_sysfs(tmp_path: Path) -> None:
    supply = tmp_path / "class" / "power_supply" / "AC"
    supply.mkdir(parents=True)
    (supply / "type").write_text("Mains\n")
    (supply / "voltage_now").write_text("5100000\n")
    iio = tmp_path / "bus" / "iio" / "devices" / "iio:device0"
    iio.mkdir(parents=True)
    (iio / "in_pressure_input").write_text("101.325\n")
    proc = tmp_path / "proc" / "net"
    proc.mkdir(parents=True)
    (proc / "route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\n"
    )
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("c0ffee1234567890\n")
    board = LinuxBoard(sysfs=tmp_path, procfs=tmp_path / "proc", machine_id=machine_id)
    assert board.input_voltage() == pytest.approx(5.1)
    assert board.pressure() == pytest.approx(10132.5)
    assert board.interface_priority() == "eth0"
    assert board.serial_number() == "C0FFEE"
    with pytest.raises(Unsupported, match="board 'linux' cannot give chargeInputCurrent"):
        board.input_current()
    with pytest.raises(Unsupported, match="tempRead"):
        board.temperature()
    with pytest.raises(Unsupported, match="batterySaver"):
        board.battery_saver()


def test_linux_board_says_which_privilege_setting_the_clock_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(clock: int, value: float) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(time, "clock_settime", refuse)
    with pytest.raises(PrivilegeRequired) as refused:
        LinuxBoard().set_time(0.0)
    assert refused.value.privilege == "CAP_SYS_TIME" and refused.value.status == 403


def test_linux_board_led_without_permission_is_403(tmp_path: Path) -> None:
    led = tmp_path / "class" / "leds" / "ACT"
    led.mkdir(parents=True)
    (led / "brightness").write_text("0\n")
    (led / "brightness").chmod(0o444)
    board = LinuxBoard(sysfs=tmp_path, led="ACT", led_green="ACT", led_red="ACT")
    import os

    if os.geteuid() == 0:  # root writes anyway: the flash then really happens
        board.flash_led()
        assert (led / "brightness").read_text().strip() == "0"
    else:
        with pytest.raises(PrivilegeRequired):
            board.flash_led()
    with pytest.raises(Unsupported, match="led"):
        LinuxBoard(sysfs=tmp_path).flash_led()
