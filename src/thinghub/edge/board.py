"""The board: what the gateway's hardware can read and do, behind one interface.

Every reading and action of the seed's Edge REST API is a method here. The base class
answers each one with `Unsupported` (501, naming the board and the reading): a board
overrides what its hardware really has, and never makes a value up. Two boards ship:
`linux` (sysfs: thermal zones, power supplies, IIO pressure, LEDs; board_linux.py) and
`simulated` (documented fixed values and in-memory state; board_sim.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BatterySaver",
    "Board",
    "BoardError",
    "BoardInvalid",
    "PrivilegeRequired",
    "Unsupported",
]


class BoardError(Exception):
    """A reading or action the board refuses; `status` is the HTTP status to answer."""

    status = 500

    def __init__(self, message: str, *, board: str, reading: str) -> None:
        super().__init__(message)
        self.message = message
        self.board = board
        self.reading = reading


class Unsupported(BoardError):
    """This board has no way to give this reading or do this (501)."""

    status = 501


class PrivilegeRequired(BoardError):
    """The edge process lacks the privilege this action needs (403)."""

    status = 403

    def __init__(self, message: str, *, board: str, reading: str, privilege: str) -> None:
        super().__init__(message, board=board, reading=reading)
        self.privilege = privilege


class BoardInvalid(BoardError):
    """The request is well-formed but out of the board's range (400)."""

    status = 400

    def __init__(self, message: str, *, board: str, reading: str, field: str) -> None:
        super().__init__(message, board=board, reading=reading)
        self.field = field


@dataclass(frozen=True, slots=True)
class BatterySaver:
    """The charge controller: stop charging at `high` %, shut off at `low` % when enabled."""

    value: bool
    low: int
    high: int


class Board:
    """Base board: everything unsupported. Subclasses override what they can do."""

    name = "none"

    def _unsupported(self, reading: str, why: str = "") -> Unsupported:
        detail = f": {why}" if why else ""
        return Unsupported(
            f"board {self.name!r} cannot give {reading}{detail}", board=self.name, reading=reading
        )

    # identity and versions
    def serial_number(self) -> str:
        raise self._unsupported("serialNumber")

    def firmware(self) -> str:
        raise self._unsupported("firmware")

    def hardware(self) -> str:
        raise self._unsupported("hardware")

    # clock
    def now(self) -> float:
        raise self._unsupported("time")

    def set_time(self, epoch_s: float) -> None:
        raise self._unsupported("time")

    def time_accurate(self) -> bool:
        raise self._unsupported("timeAccurate")

    # power
    def input_voltage(self) -> float:
        raise self._unsupported("chargeInputVoltage")

    def input_current(self) -> float:
        raise self._unsupported("chargeInputCurrent")

    def battery_voltage(self) -> float:
        raise self._unsupported("batteryVoltage")

    def state_of_charge(self) -> float:
        raise self._unsupported("stateOfCharge")

    def battery_saver(self) -> BatterySaver:
        raise self._unsupported("batterySaver")

    def set_battery_saver(self, saver: BatterySaver) -> BatterySaver:
        raise self._unsupported("batterySaver")

    def sleep(self, duration_ms: int) -> None:
        raise self._unsupported("sleep")

    # device ports (the analog side: power output, ADC, 4-20 mA)
    def port_adc(self, port: int, option: int) -> float:
        raise self._unsupported("deviceAdcRead")

    def set_port_voltage(self, port: int, level: int) -> None:
        raise self._unsupported("deviceVoltage")

    def sensor_current(self, port: int) -> float:
        raise self._unsupported("deviceAdcRead420")

    # environment
    def temperature(self) -> float:
        raise self._unsupported("tempRead")

    def pressure(self) -> float:
        raise self._unsupported("pressRead")

    # LEDs
    def flash_led(self) -> None:
        raise self._unsupported("observation (LED flash)")

    def set_accessible(self, green: bool) -> None:
        raise self._unsupported("accessible (LED colour)")

    # network
    def interface_priority(self) -> str:
        raise self._unsupported("interfacePriority")

    def set_interface_priority(self, kind: str) -> str:
        raise self._unsupported(f"interfacePriority/{kind}")
