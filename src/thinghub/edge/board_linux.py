"""The Linux board: readings from sysfs/procfs where the machine has them, else 501.

| reading | source |
| --- | --- |
| serialNumber | `[board] serial_number`, else the device tree serial, else machine-id |
| time / POST time | the system clock; setting it needs CAP_SYS_TIME (403 without) |
| timeAccurate | adjtimex(2): false while the kernel reports the clock unsynchronised |
| chargeInputVoltage/Current | `class/power_supply/*` (Mains, USB): voltage_now, current_now |
| batteryVoltage, stateOfCharge | `class/power_supply/*` of type Battery: voltage_now, capacity |
| tempRead | `class/thermal/thermal_zone*/temp` (the configured zone, else the first readable) |
| pressRead | `bus/iio/devices/*/in_pressure_input` (kPa, answered in daPa as the seed says) |
| observation (flash) | `class/leds/<board.led>/brightness` |
| accessible | `class/leds/<board.led_green>` and `<board.led_red>` |
| interfacePriority | /proc/net/route: the default route with the lowest metric |
| firmware, hardware | the kernel release; the device tree model or DMI product name |
| sleep | rtcwake(8) (`-m mem`), as root only |

Anything else (battery saver, port power and ADC, 4-20 mA, route changes) has no generic
Linux interface and answers 501 naming this board.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from .board import Board, PrivilegeRequired, Unsupported

__all__ = ["LinuxBoard"]

logger = logging.getLogger(__name__)

#: adjtimex(2) returns this state while the clock is not synchronised.
TIME_ERROR = 5
#: LED flashes of POST /api/observation, each on then off for FLASH_STEP_S.
FLASHES = 3
FLASH_STEP_S = 0.15
#: rtcwake is given this long beyond the sleep itself before we give up on it.
SLEEP_GRACE_S = 30


class LinuxBoard(Board):
    name = "linux"

    def __init__(
        self,
        *,
        sysfs: Path = Path("/sys"),
        procfs: Path = Path("/proc"),
        machine_id: Path = Path("/etc/machine-id"),
        serial_number: str | None = None,
        thermal_zone: str | None = None,
        led: str | None = None,
        led_green: str | None = None,
        led_red: str | None = None,
    ) -> None:
        self.sysfs = sysfs
        self.procfs = procfs
        self.machine_id = machine_id
        self._serial = serial_number
        self.thermal_zone = thermal_zone
        self.led = led
        self.led_green = led_green
        self.led_red = led_red

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text().strip("\x00 \n")
        except OSError:
            return None

    def _supplies(self, *types: str) -> list[Path]:
        base = self.sysfs / "class" / "power_supply"
        found = []
        for supply in sorted(base.glob("*")) if base.is_dir() else []:
            if self._read(supply / "type") in types:
                found.append(supply)
        return found

    def _supply_value(self, reading: str, types: tuple[str, ...], attr: str, scale: float) -> float:
        for supply in self._supplies(*types):
            raw = self._read(supply / attr)
            if raw is not None and raw.lstrip("-").isdigit():
                return int(raw) * scale
        kinds = " or ".join(types)
        raise self._unsupported(reading, f"no power supply of type {kinds} with {attr} in sysfs")

    def _write(self, path: Path, text: str, reading: str, privilege: str) -> None:
        try:
            path.write_text(text)
        except PermissionError as exc:
            raise PrivilegeRequired(
                f"writing {path} needs {privilege}",
                board=self.name,
                reading=reading,
                privilege=privilege,
            ) from exc
        except OSError as exc:
            raise self._unsupported(reading, f"writing {path} failed: {exc.strerror}") from exc

    def _led(self, name: str | None, reading: str, setting: str) -> Path:
        if name is None:
            raise self._unsupported(reading, f"no LED configured ([board] {setting})")
        path = self.sysfs / "class" / "leds" / name
        if not (path / "brightness").exists():
            raise self._unsupported(reading, f"LED {name!r} is not in {path.parent}")
        return path

    # -- identity --------------------------------------------------------------------------

    def serial_number(self) -> str:
        if self._serial:
            return self._serial
        for source in (self.sysfs / "firmware" / "devicetree" / "base" / "serial-number",):
            text = self._read(source)
            if text and all(c in "0123456789abcdefABCDEF" for c in text) and len(text) >= 6:
                return text[-6:].upper()
        text = self._read(self.machine_id)
        if text and len(text) >= 6:
            return text[:6].upper()
        raise self._unsupported("serialNumber", "no device tree serial and no machine id")

    def firmware(self) -> str:
        return platform.release()

    def hardware(self) -> str:
        for source in (
            self.sysfs / "firmware" / "devicetree" / "base" / "model",
            self.sysfs / "class" / "dmi" / "id" / "product_name",
        ):
            text = self._read(source)
            if text:
                return text
        raise self._unsupported("hardware", "no device tree model and no DMI product name")

    # -- clock -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.time()

    def set_time(self, epoch_s: float) -> None:
        try:
            time.clock_settime(time.CLOCK_REALTIME, epoch_s)
        except PermissionError as exc:
            raise PrivilegeRequired(
                "setting the system clock needs CAP_SYS_TIME: run the edge as root or grant "
                "it (systemd: AmbientCapabilities=CAP_SYS_TIME)",
                board=self.name,
                reading="time",
                privilege="CAP_SYS_TIME",
            ) from exc
        except OSError as exc:
            raise self._unsupported("time", f"clock_settime failed: {exc.strerror}") from exc

    def time_accurate(self) -> bool:
        path = ctypes.util.find_library("c")
        if path is None:
            raise self._unsupported("timeAccurate", "no C library for adjtimex")
        libc = ctypes.CDLL(path, use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buffer)
        if state < 0:
            raise self._unsupported("timeAccurate", os.strerror(ctypes.get_errno()))
        return bool(state != TIME_ERROR)

    # -- power -----------------------------------------------------------------------------

    def input_voltage(self) -> float:
        return self._supply_value("chargeInputVoltage", ("Mains", "USB"), "voltage_now", 1e-6)

    def input_current(self) -> float:
        return self._supply_value("chargeInputCurrent", ("Mains", "USB"), "current_now", 1e-6)

    def battery_voltage(self) -> float:
        return self._supply_value("batteryVoltage", ("Battery",), "voltage_now", 1e-6)

    def state_of_charge(self) -> float:
        return self._supply_value("stateOfCharge", ("Battery",), "capacity", 1.0)

    def sleep(self, duration_ms: int) -> None:
        if os.geteuid() != 0:
            raise PrivilegeRequired(
                "sleeping needs root (rtcwake suspends the machine)",
                board=self.name,
                reading="sleep",
                privilege="root",
            )
        rtcwake = shutil.which("rtcwake")
        if rtcwake is None or not (self.sysfs / "class" / "rtc" / "rtc0").exists():
            raise self._unsupported("sleep", "needs rtcwake (util-linux) and an RTC (rtc0)")
        seconds = max(1, round(duration_ms / 1000))
        result = subprocess.run(  # noqa: S603 - a fixed program with a number argument
            [rtcwake, "-m", "mem", "-s", str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + SLEEP_GRACE_S,
            check=False,
        )
        if result.returncode != 0:
            raise self._unsupported("sleep", f"rtcwake failed: {result.stderr.strip()[:200]}")

    # -- environment -----------------------------------------------------------------------

    def temperature(self) -> float:
        base = self.sysfs / "class" / "thermal"
        zones = (
            [base / self.thermal_zone]
            if self.thermal_zone
            else sorted(base.glob("thermal_zone*"))
            if base.is_dir()
            else []
        )
        for zone in zones:
            raw = self._read(zone / "temp")
            if raw is not None and raw.lstrip("-").isdigit():
                return int(raw) / 1000.0
        raise self._unsupported("tempRead", "no readable thermal zone in sysfs")

    def pressure(self) -> float:
        base = self.sysfs / "bus" / "iio" / "devices"
        for device in sorted(base.glob("*")) if base.is_dir() else []:
            raw = self._read(device / "in_pressure_input")
            if raw is not None:
                try:
                    return float(raw) * 100.0  # kPa -> daPa
                except ValueError:
                    continue
        raise self._unsupported("pressRead", "no IIO pressure sensor (in_pressure_input)")

    # -- LEDs ------------------------------------------------------------------------------

    def flash_led(self) -> None:
        led = self._led(self.led, "observation (LED flash)", "led")
        brightness = led / "brightness"
        high = self._read(led / "max_brightness") or "1"
        previous = self._read(brightness) or "0"
        for _ in range(FLASHES):
            self._write(brightness, high, "observation (LED flash)", "write access to the LED")
            time.sleep(FLASH_STEP_S)
            self._write(brightness, "0", "observation (LED flash)", "write access to the LED")
            time.sleep(FLASH_STEP_S)
        self._write(brightness, previous, "observation (LED flash)", "write access to the LED")

    def set_accessible(self, green: bool) -> None:
        on = self._led(self.led_green if green else self.led_red, "accessible", "led_green/led_red")
        off = self._led(
            self.led_red if green else self.led_green, "accessible", "led_green/led_red"
        )
        self._write(off / "brightness", "0", "accessible", "write access to the LEDs")
        high = self._read(on / "max_brightness") or "1"
        self._write(on / "brightness", high, "accessible", "write access to the LEDs")

    # -- network ---------------------------------------------------------------------------

    def interface_priority(self) -> str:
        text = self._read(self.procfs / "net" / "route")
        best: tuple[int, str] | None = None
        for line in (text or "").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 7 and parts[1] == "00000000" and parts[7:8] != ["FFFFFFFF"]:
                try:
                    metric = int(parts[6])
                except ValueError:
                    continue
                if best is None or metric < best[0]:
                    best = (metric, parts[0])
        if best is None:
            raise self._unsupported("interfacePriority", "no default route in /proc/net/route")
        return best[1]

    def set_interface_priority(self, kind: str) -> str:
        raise Unsupported(
            f"board {self.name!r} cannot change the route priority to {kind}: set route "
            "metrics with the network manager (e.g. NetworkManager ipv4.route-metric)",
            board=self.name,
            reading=f"interfacePriority/{kind}",
        )
