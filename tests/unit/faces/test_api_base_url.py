"""Where clients reach the API faces (faces/_http.py `api_base_url`): public_url, else the
shared HTTP port, with the Host header only where the caller trusts it."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from thinghub.config import Settings
from thinghub.faces._http import api_base_url

HTTP = {"http": {"host": "0.0.0.0", "port": 8080}}


def request(port: int, host_header: str = "evil.example:666", local: str = "10.0.0.5") -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/ux4iot/keys",
        "query_string": b"",
        "headers": [(b"host", host_header.encode())],
        "server": (local, port),
    }
    return Request(scope)


def test_the_public_url_wins() -> None:
    settings = dataclasses.replace(Settings.defaults(), public_url="https://iot.example.com/")
    assert api_base_url(request(9000), settings, HTTP) == "https://iot.example.com"


def test_the_shared_port_is_named_on_a_face_of_its_own() -> None:
    settings = Settings.defaults()
    # An API answer: the address the request reached, never the Host header.
    assert api_base_url(request(9000), settings, HTTP) == "http://10.0.0.5:8080"
    assert api_base_url(request(8080), settings, HTTP) == "http://10.0.0.5:8080"
    # A browser's page: the host name the browser used, on the HTTP port.
    shown = api_base_url(request(9000, "hub.lan:9000"), settings, HTTP, trust_host=True)
    assert shown == "http://hub.lan:8080"
    same = api_base_url(request(8080, "hub.lan:80"), settings, HTTP, trust_host=True)
    assert same == "http://hub.lan:80"  # the shared port as the browser sees it
    # An HTTP listener bound to one address is named by it; IPv6 in brackets.
    bound = {"http": {"host": "::1", "port": 8080}}
    assert api_base_url(request(9000, local="::1"), settings, bound) == "http://[::1]:8080"
