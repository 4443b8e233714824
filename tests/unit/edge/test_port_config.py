"""Tests for thinghub.edge.port_config: the seed's port properties, checked."""

from __future__ import annotations

import pytest

from thinghub.edge.port_config import (
    PortConfigError,
    check_port_number,
    check_properties,
    effective,
)


def test_the_seed_example_body_is_accepted_and_normalised() -> None:
    props = check_properties(
        {"COMM_TYPE": "rs232", "BAUD_RATE": "9600", "DELIMITERS_HEX": "0d0a", "PORT": 1234,
         "HOST": "127.0.0.1"}
    )  # fmt: skip
    assert props == {
        "COMM_TYPE": "RS232", "BAUD_RATE": 9600, "DELIMITERS_HEX": ["0D0A"], "PORT": 1234,
        "HOST": "127.0.0.1",
    }  # fmt: skip
    settings = effective(1, props)
    assert settings.delimiters == (b"\r\n",) and not settings.is_tcp and settings.module == "port1"


@pytest.mark.parametrize(
    ("props", "key"),
    [
        ({"BAUD_RATE": 12}, "BAUD_RATE"),
        ({"DATA_BITS": 9}, "DATA_BITS"),
        ({"PARITY_BIT": "SOMETIMES"}, "PARITY_BIT"),
        ({"DELIMITERS_HEX": ["0G"]}, "DELIMITERS_HEX"),
        ({"PORT": 70000}, "PORT"),
        ({"REGEX": "(unnamed)"}, "REGEX"),
        ({"REGEX": "(?P<x>"}, "REGEX"),
        ({"JSON_PATHS": {"t": "env.t"}}, "JSON_PATHS"),
        ({"MODULE": "a/b"}, "MODULE"),
        ({"MODULE_KEY": "not base64!"}, "MODULE_KEY"),
        ({"SPEED": 1}, "SPEED"),
        ({"BAUD_RATE": True}, "BAUD_RATE"),
    ],
)
def test_bad_properties_name_the_key(props: dict[str, object], key: str) -> None:
    with pytest.raises(PortConfigError) as refused:
        check_properties(props)
    assert refused.value.key == key


def test_tcp_per_comm_type() -> None:
    usb = effective(
        2, check_properties({"COMM_TYPE": "USB", "HOST": "192.168.254.3", "PORT": 1212})
    )
    assert usb.is_tcp and usb.where() == "192.168.254.3:1212"
    serial = effective(2, check_properties({"COMM_TYPE": "USB", "DEVICE": "/dev/ttyACM0"}))
    assert not serial.is_tcp and serial.where() == "/dev/ttyACM0"
    assert not effective(3, {"COMM_TYPE": "OFF"}).has_stream


def test_regex_and_json_paths_exclude_each_other() -> None:
    with pytest.raises(PortConfigError):
        effective(1, check_properties({"REGEX": "(?P<t>1)", "JSON_PATHS": {"t": "$.t"}}))


@pytest.mark.parametrize("value", [0, 65, "x", True, None])
def test_port_numbers(value: object) -> None:
    with pytest.raises(PortConfigError):
        check_port_number(value)
    assert check_port_number("3") == 3
