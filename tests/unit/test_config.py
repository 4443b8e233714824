"""Tests for thinghub.config: the settings table, precedence, validation and its documentation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest

from thinghub.cli import serve
from thinghub.config import SETTINGS, ConfigError, Settings, load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# THINGHUB_* variables that are not settings but are still documented or read.
NON_SETTING_ENV = {"THINGHUB_CONFIG", "THINGHUB_TEST_POSTGRES_DSN"}


def write_toml(tmp_path: Path, text: str, name: str = "thinghub.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def cli_flags() -> dict[str, list[str]]:
    """Setting name -> its `thinghub serve` flags (the option's parameter name is the key)."""
    return {
        p.name: list(p.opts)
        for p in serve.params
        if isinstance(p, click.Option) and p.name is not None
    }


# -- defaults: zero config works -------------------------------------------------------------


def test_defaults_need_no_config() -> None:
    settings = load_settings(environ={})
    for setting in SETTINGS:
        assert getattr(settings, setting.name) == setting.default, setting.name
    assert settings.host == "127.0.0.1"
    assert settings.database_url == f"sqlite:///{Path('thinghub-data') / 'thinghub.db'}"
    assert not settings.is_postgres


def test_the_table_and_the_settings_object_agree() -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert list(fields) == [s.name for s in SETTINGS]
    for setting in SETTINGS:
        # Defaults are written once, in the table: the Settings object has none of its own.
        assert fields[setting.name].default is dataclasses.MISSING, setting.name
        assert fields[setting.name].default_factory is dataclasses.MISSING, setting.name
        assert setting.help.strip(), f"{setting.name} has no help text"


def test_settings_defaults_are_the_tables() -> None:
    defaults = Settings.defaults()
    for setting in SETTINGS:
        assert getattr(defaults, setting.name) == setting.default, setting.name
    assert defaults == load_settings(environ={})


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.http_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "is_postgres"),
    [("postgresql://u@h/db", True), ("postgres://u@h/db", True), ("sqlite:///x.db", False)],
)
def test_database_url_selects_backend(url: str, is_postgres: bool) -> None:
    settings = load_settings(environ={}, overrides={"database": url})
    assert settings.database_url == url
    assert settings.is_postgres is is_postgres


def test_empty_database_means_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={"THINGHUB_DATABASE": "", "THINGHUB_DATA_DIR": str(tmp_path)})
    assert settings.database is None
    assert settings.database_url == f"sqlite:///{tmp_path / 'thinghub.db'}"


# -- precedence: defaults < TOML < THINGHUB_* env < overrides ----------------------------------


@pytest.mark.parametrize(
    ("toml", "env", "override", "expected"),
    [
        (None, None, None, 8080),
        (9001, None, None, 9001),
        (9001, "9002", None, 9002),
        (9001, "9002", 9003, 9003),
        (None, "9002", None, 9002),
        (9001, None, 9003, 9003),
    ],
)
def test_precedence(
    tmp_path: Path, toml: int | None, env: str | None, override: int | None, expected: int
) -> None:
    path = write_toml(tmp_path, "" if toml is None else f"http_port = {toml}\n")
    environ = {} if env is None else {"THINGHUB_HTTP_PORT": env}
    settings = load_settings(config_file=path, environ=environ, overrides={"http_port": override})
    assert settings.http_port == expected


def test_layers_merge_key_by_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'host = "0.0.0.0"\nhttp_port = 9001\nmqtt_port = 9101\n')
    settings = load_settings(
        config_file=path,
        environ={"THINGHUB_HTTP_PORT": "9002"},
        overrides={"mqtt_port": 9103, "log_level": None},
    )
    assert (settings.host, settings.http_port, settings.mqtt_port) == ("0.0.0.0", 9002, 9103)
    assert settings.log_level == "info"  # a None override means "not given"


@pytest.mark.parametrize(
    "text",
    [
        '[thinghub]\nhttp_port = 9001\nhostnames = ["a.example", "10.0.0.1"]\n',
        'http_port = 9001\nhostnames = ["a.example", "10.0.0.1"]\n',
    ],
    ids=["thinghub-table", "flat"],
)
def test_toml_file_table_or_flat(tmp_path: Path, text: str) -> None:
    settings = load_settings(config_file=write_toml(tmp_path, text), environ={})
    assert settings.http_port == 9001
    assert settings.hostnames == ("a.example", "10.0.0.1")


def test_thinghub_config_env_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "mqtt_port = 1883\n")
    assert load_settings(environ={"THINGHUB_CONFIG": str(path)}).mqtt_port == 1883


def test_config_file_argument_wins_over_thinghub_config(tmp_path: Path) -> None:
    from_env = write_toml(tmp_path, "mqtt_port = 1883\n", "env.toml")
    given = write_toml(tmp_path, "mqtt_port = 8884\n", "given.toml")
    settings = load_settings(config_file=given, environ={"THINGHUB_CONFIG": str(from_env)})
    assert settings.mqtt_port == 8884


def test_environment_values_are_parsed_from_strings() -> None:
    settings = load_settings(
        environ={
            "THINGHUB_HTTP_PORT": "0",
            "THINGHUB_HOSTNAMES": "a.example, 10.0.0.1,,",
            "THINGHUB_FACE_LISTEN": "st=127.0.0.1:9000",
            "THINGHUB_LOG_LEVEL": "DEBUG",
            "THINGHUB_READY_FILE": "/tmp/ready.json",
            "THINGHUB_COMMIT_INTERVAL_MS": "0.5",
            "THINGHUB_PAGE_MAX": "50",
            "THINGHUB_ADMIN_TOKEN": "secret-value",
        }
    )
    assert settings.http_port == 0
    assert settings.hostnames == ("a.example", "10.0.0.1")
    assert settings.face_listen == ("st=127.0.0.1:9000",)
    assert settings.log_level == "debug"
    assert settings.ready_file == Path("/tmp/ready.json")
    assert settings.commit_interval_ms == 0.5
    assert settings.page_max == 50
    assert settings.admin_token == "secret-value"


def test_other_environment_variables_are_ignored() -> None:
    settings = load_settings(
        environ={
            "THINGHUB_TEST_POSTGRES_DSN": "postgresql://x",  # a test knob, not a setting
            "THINGHUB_NO_SUCH_THING": "1",
            "HTTP_PORT": "1",
            "thinghub_http_port": "1",
        }
    )
    assert settings == load_settings(environ={})


# -- validation: bad values name the key and the value -----------------------------------------


BAD_VALUES: list[tuple[str, Any]] = [
    ("http_port", "eighty"),
    ("http_port", -1),
    ("http_port", 65536),
    ("mqtt_port", 70000),
    ("log_level", "verbose"),
    ("jwt_ttl_s", 0),
    ("batch_max_rows", -5),
    ("commit_interval_ms", "soon"),
    ("max_payload_bytes", "big"),
    ("method_timeout_max_s", 0),
    ("command_ttl_s", -1),
    ("page_max", 0),
    ("hostnames", 5),
    ("max_json_depth", 0),
    ("max_json_depth", 129),  # over JSON_DEPTH_CEILING: orjson could no longer write answers
    ("max_json_depth", "deep"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_override_names_key_and_value(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={key: value})
    assert key in str(info.value)
    assert repr(value) in str(info.value)
    assert "command line" in str(info.value)


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, v in BAD_VALUES if k != "hostnames"])
def test_bad_environment_value_names_key_and_value(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={f"THINGHUB_{key.upper()}": str(value)})
    assert key in str(info.value)
    assert repr(str(value)) in str(info.value)
    assert "environment" in str(info.value)


def test_bad_toml_value_names_file_key_and_value(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[thinghub]\nmqtt_port = "tls"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert "mqtt_port" in message
    assert "'tls'" in message


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("text", ["http_prot = 8080\n", "[thinghub]\nhttp_prot = 8080\n"])
def test_unknown_toml_keys_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'http_prot'"):
        load_settings(config_file=write_toml(tmp_path, text), environ={})


def test_unknown_override_keys_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'http_prot'"):
        load_settings(environ={}, overrides={"http_prot": 8080})


def test_unreadable_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="missing.toml"):
        load_settings(config_file=missing, environ={})
    broken = write_toml(tmp_path, "http_port = = 1\n", "broken.toml")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_settings(config_file=broken, environ={})


@pytest.mark.parametrize("key", ["http_port", "mqtt_port"])
@pytest.mark.parametrize("port", [0, 1, 8080, 65535])
def test_ports_from_0_to_65535_are_accepted(key: str, port: int) -> None:
    assert getattr(load_settings(environ={}, overrides={key: port}), key) == port
    env = {f"THINGHUB_{key.upper()}": str(port)}
    assert getattr(load_settings(environ=env), key) == port


@pytest.mark.parametrize("key", ["http_port", "mqtt_port"])
@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_ports_outside_0_to_65535_are_rejected(key: str, port: int) -> None:
    with pytest.raises(ConfigError, match=f"{key} = {port}"):
        load_settings(environ={}, overrides={key: port})


# -- docs/configuration.md documents every setting --------------------------------------------


@pytest.fixture(scope="module")
def config_docs() -> str:
    assert DOCS.is_file(), f"{DOCS} is missing"
    return DOCS.read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_is_documented(setting: Any, config_docs: str) -> None:
    assert f"`{setting.name}`" in config_docs, f"{setting.name} is not in {DOCS.name}"
    env = f"THINGHUB_{setting.name.upper()}"
    assert re.search(rf"\b{env}\b", config_docs), f"{env} is not in {DOCS.name}"
    for flag in cli_flags().get(setting.name, []):
        assert re.search(rf"`{re.escape(flag)}\b", config_docs), f"{flag} is not in {DOCS.name}"


def test_every_serve_flag_is_a_setting() -> None:
    names = {s.name for s in SETTINGS}
    assert set(cli_flags()) <= names
    assert cli_flags()["hostnames"] == ["--hostname"]


def serve_options() -> list[click.Option]:
    return [p for p in serve.params if isinstance(p, click.Option) and p.name is not None]


@pytest.mark.parametrize("option", serve_options(), ids=lambda o: o.name)
def test_serve_help_and_defaults_come_from_the_table(option: click.Option) -> None:
    setting = next(s for s in SETTINGS if s.name == option.name)
    assert option.help is not None and option.help.startswith(setting.help), option.help
    default = setting.default
    if isinstance(default, tuple):
        default = ",".join(default)
    if default not in (None, ""):
        assert option.help.endswith(f"[default: {default}]"), option.help
    else:
        assert "[default:" not in option.help
    # No click default of its own: an absent flag leaves the file's and environment's values.
    with serve.make_context("serve", [], resilient_parsing=True) as ctx:
        assert ctx.params[option.name] in (None, ()), ctx.params[option.name]


def test_a_changed_default_shows_in_the_help() -> None:
    from thinghub import cli

    setting = next(s for s in SETTINGS if s.name == "http_port")
    moved = dataclasses.replace(setting, default=9090)
    assert cli.setting_help(moved).endswith("[default: 9090]")
    assert cli.setting_help(moved).startswith(setting.help)


def test_docs_name_no_setting_that_does_not_exist(config_docs: str) -> None:
    documented = set(re.findall(r"\bTHINGHUB_[A-Z0-9_]+\b", config_docs))
    known = {f"THINGHUB_{s.name.upper()}" for s in SETTINGS} | NON_SETTING_ENV
    assert documented <= known, f"unknown variables in {DOCS.name}: {documented - known}"


def test_max_json_depth_defaults_to_64_and_takes_1_to_128() -> None:
    assert load_settings(environ={}).max_json_depth == 64
    for depth in (1, 128):
        assert load_settings(environ={"THINGHUB_MAX_JSON_DEPTH": str(depth)}).max_json_depth == (
            depth
        )


# -- several nodes: the NATS bus ------------------------------------------------------------


def test_bus_needs_postgresql() -> None:
    with pytest.raises(ConfigError, match="needs database = postgresql") as info:
        load_settings(environ={}, overrides={"bus": "nats://127.0.0.1:4222"})
    assert "SQLite" in str(info.value)
    settings = load_settings(
        environ={"THINGHUB_BUS": "nats://nats.internal:4222", "THINGHUB_NODE_ID": "n1"},
        overrides={"database": "postgresql://u@db/thinghub", "node_lease_s": "5"},
    )
    assert (settings.bus, settings.node_id, settings.node_lease_s) == (
        "nats://nats.internal:4222",
        "n1",
        5.0,
    )


@pytest.mark.parametrize("url", ["http://x:4222", "nats://", "nats://h:4222/path", "4222"])
def test_bus_must_be_a_nats_url(url: str) -> None:
    with pytest.raises(ConfigError, match="bus"):
        load_settings(environ={}, overrides={"bus": url, "database": "postgresql://u@db/x"})
