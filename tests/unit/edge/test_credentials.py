"""Tests for thinghub.edge.credentials and edge settings loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinghub.edge.config import EdgeConfigError, load_edge_settings
from thinghub.edge.credentials import HubIdentity, parse_connection_string
from thinghub.security import sas

KEY = sas.generate_key()


def test_connection_string_and_module_identity() -> None:
    parsed = parse_connection_string(f"HostName=hub;DeviceId=gw;SharedAccessKey={KEY}")
    module = HubIdentity(parsed.host_name, parsed.device_id, "port1", KEY)
    assert module.client_id == "gw/port1"
    assert module.username == "hub/gw/port1/?api-version=2021-04-12"
    token = sas.parse(module.password(now=1000.0))
    assert token.resource == "hub/devices/gw/modules/port1" and token.expiry == 4600
    sas.verify(token, key_b64=KEY, expected_resource="hub/devices/gw/modules/port1", now=1000)
    assert KEY not in repr(parsed)


@pytest.mark.parametrize(
    "text", ["HostName=h;DeviceId=d", "HostName=h;DeviceId=d;SharedAccessKey=%%", "nonsense",
             f"HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey={KEY}"],
)  # fmt: skip
def test_bad_connection_strings(text: str) -> None:
    with pytest.raises(ValueError):
        parse_connection_string(text)


def test_settings_need_a_cloud_identity_and_a_token_off_loopback(tmp_path: Path) -> None:
    cs = f"HostName=h;DeviceId=d;SharedAccessKey={KEY}"
    with pytest.raises(EdgeConfigError, match="connection-string"):
        load_edge_settings(None, {})
    with pytest.raises(EdgeConfigError, match="api_token"):
        load_edge_settings(None, {"connection_string": cs, "listen": "0.0.0.0:8090"})
    settings = load_edge_settings(
        None, {"connection_string": cs, "listen": "0.0.0.0:0", "api_token": "t"}
    )
    assert settings.cloud.host is None and settings.cloud.port == 8883
    config = tmp_path / "edge.toml"
    config.write_text('[board]\nkind = "simulated"\n[ports.1]\nBAUD_RATE = 7\n')
    with pytest.raises(EdgeConfigError, match=r"ports\.1\.BAUD_RATE"):
        load_edge_settings(config, {"connection_string": cs})
    config.write_text("[cloud]\nurl = 'http://x'\n")
    with pytest.raises(EdgeConfigError, match="mqtts"):
        load_edge_settings(config, {"connection_string": cs})
