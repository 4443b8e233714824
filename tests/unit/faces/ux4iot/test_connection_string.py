"""The connection string (faces/ux4iot/connection_string.py), as ux4iot-react parses it."""

from __future__ import annotations

import pytest

from thinghub.domain.errors import Invalid
from thinghub.faces.ux4iot.connection_string import (
    ConnectionString,
    build_connection_string,
    parse_connection_string,
    socket_namespace,
)


def test_build_and_parse_round_trip() -> None:
    text = build_connection_string("http://127.0.0.1:8080/ux4iot/", "k3y=with+sign/")
    assert text == "Endpoint=http://127.0.0.1:8080/ux4iot;SharedAccessKey=k3y=with+sign/"
    parsed = parse_connection_string(text)
    assert parsed == ConnectionString("http://127.0.0.1:8080/ux4iot", "k3y=with+sign/")
    assert str(parsed) == text


def test_the_namespace_is_the_endpoint_path() -> None:
    assert socket_namespace("http://h:8080/ux4iot") == "/ux4iot"
    assert socket_namespace("http://h:8080") == "/"
    assert socket_namespace("https://h") == "/"
    assert (
        parse_connection_string("Endpoint=http://h/ux4iot;SharedAccessKey=k").namespace == "/ux4iot"
    )


def test_parse_like_the_client_other_keys_ignored_order_free() -> None:
    assert parse_connection_string("SharedAccessKey=k;Foo=bar;Endpoint=http://h;junk") == (
        ConnectionString("http://h", "k")
    )


@pytest.mark.parametrize(
    "text",
    [
        "HostName=h;Key=secret",
        "Endpoint=http://h",
        "SharedAccessKey=k",
        "Endpoint=;SharedAccessKey=k",
        "",
    ],
)
def test_parse_refuses_what_the_client_refuses(text: str) -> None:
    with pytest.raises(Invalid, match="Invalid Connection String") as caught:
        parse_connection_string(text)
    assert caught.value.field == "connectionString"


@pytest.mark.parametrize(
    ("endpoint", "key"),
    [
        ("ftp://h", "k"),
        ("h:8080", "k"),
        ("http://h?x=1", "k"),
        ("http://h", ""),
        ("http://h", "a;b"),
    ],
)
def test_build_refuses_what_would_not_parse_back(endpoint: str, key: str) -> None:
    with pytest.raises(ValueError):
        build_connection_string(endpoint, key)
