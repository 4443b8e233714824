"""The simulated board: fixed, documented readings and in-memory state, for any machine.

Readings are the seed's example values unless edge.toml's `[board.simulated]` sets others
(docs/edge.md lists them). Actions change only this object's state: setting the time moves a
simulated clock (an offset from the system clock, which is never touched), sleep records
the request, LEDs are flags. Nothing here is hardware; `GET /api/hardware` says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .board import BatterySaver, Board, BoardInvalid

__all__ = ["SimulatedBoard", "SimulatedValues"]

#: Port output levels of POST /api/deviceVoltage and the volts each gives (seed: 0 off,
#: 1 12 V, 2 15 V).
OUTPUT_VOLTS = {0: 0.0, 1: 12.0, 2: 15.0}


@dataclass(frozen=True, slots=True)
class SimulatedValues:
    """What the simulated board reads; every field can be set in `[board.simulated]`."""

    serial_number: str = "5EED01"
    input_voltage: float = 14.5288
    input_current: float = 0.0225
    battery_voltage: float = 13.7456
    state_of_charge: float = 87.0
    temperature: float = 36.75
    pressure: float = 101788.50996
    sensor_current: float = -0.00429
    port_current: float = 0.0125  # amps drawn on a powered port (deviceAdcRead option 1)
    firmware: str = "simulated-1.0.0"
    hardware: str = "thinghub simulated board"
    interface: str = "eth0"
    time_accurate: bool = True
    ports: tuple[int, ...] = (1, 2, 3)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SimulatedValues:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            spec = known.get(key)
            if spec is None:
                raise ValueError(f"board.simulated.{key}: unknown; known: {', '.join(known)}")
            default = getattr(cls(), key)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif isinstance(default, tuple):
                ok = isinstance(value, list) and all(isinstance(v, int) for v in value)
                value = tuple(value) if ok else value
            else:
                ok = isinstance(value, str) and bool(value)
            if not ok:
                raise ValueError(
                    f"board.simulated.{key}: {value!r} is not a {type(default).__name__}"
                )
            values[key] = value
        return cls(**values)


@dataclass
class _State:
    clock_offset_s: float = 0.0
    saver: BatterySaver = field(default_factory=lambda: BatterySaver(False, 0, 100))
    outputs: dict[int, int] = field(default_factory=dict)
    flashes: int = 0
    accessible_green: bool = False  # red after a reboot (seed)
    interface: str = "eth0"
    sleeps: list[int] = field(default_factory=list)


class SimulatedBoard(Board):
    name = "simulated"

    def __init__(self, values: SimulatedValues | None = None) -> None:
        self.values = values or SimulatedValues()
        self.state = _State(interface=self.values.interface)

    def _port(self, port: int, reading: str, field: str = "port") -> int:
        """`field`: where the request gave the port (`port` in a query, else `portNumber`)."""
        if port not in self.values.ports:
            raise BoardInvalid(
                f"port {port} is not one of the board's ports {list(self.values.ports)}",
                board=self.name,
                reading=reading,
                field=field,
            )
        return port

    def serial_number(self) -> str:
        return self.values.serial_number

    def firmware(self) -> str:
        return self.values.firmware

    def hardware(self) -> str:
        return self.values.hardware

    def now(self) -> float:
        return time.time() + self.state.clock_offset_s

    def set_time(self, epoch_s: float) -> None:
        self.state.clock_offset_s = epoch_s - time.time()

    def time_accurate(self) -> bool:
        return self.values.time_accurate

    def input_voltage(self) -> float:
        return self.values.input_voltage

    def input_current(self) -> float:
        return self.values.input_current

    def battery_voltage(self) -> float:
        return self.values.battery_voltage

    def state_of_charge(self) -> float:
        return self.values.state_of_charge

    def battery_saver(self) -> BatterySaver:
        return self.state.saver

    def set_battery_saver(self, saver: BatterySaver) -> BatterySaver:
        self.state.saver = saver
        return saver

    def sleep(self, duration_ms: int) -> None:
        self.state.sleeps.append(duration_ms)

    def port_adc(self, port: int, option: int) -> float:
        level = self.state.outputs.get(self._port(port, "deviceAdcRead"), 0)
        if option == 0:
            return OUTPUT_VOLTS[level]
        return self.values.port_current if level else 0.0

    def set_port_voltage(self, port: int, level: int) -> None:
        self.state.outputs[self._port(port, "deviceVoltage", "portNumber")] = level

    def sensor_current(self, port: int) -> float:
        self._port(port, "deviceAdcRead420")
        return self.values.sensor_current

    def temperature(self) -> float:
        return self.values.temperature

    def pressure(self) -> float:
        return self.values.pressure

    def flash_led(self) -> None:
        self.state.flashes += 1

    def set_accessible(self, green: bool) -> None:
        self.state.accessible_green = green

    def interface_priority(self) -> str:
        return self.state.interface

    def set_interface_priority(self, kind: str) -> str:
        self.state.interface = "ppp0" if kind == "cellular" else "eth0"
        return self.state.interface
