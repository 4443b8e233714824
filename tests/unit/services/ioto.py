"""The Ioto services over memory stores with a real CA (provisioning issues certificates):
shared by test_claims.py and test_files.py."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import Node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.model import Principal, Role
from thinghub.ports import Stores
from thinghub.security import sigv4
from thinghub.security.ca import CertificateAuthority
from thinghub.services.core import Services

ACCOUNT = "acc-ioto"
ADMIN = Principal(ACCOUNT, Role.ADMIN, "admin")
OPERATOR = Principal(ACCOUNT, Role.OPERATOR, "operator")
IN_P1 = Principal(ACCOUNT, Role.ADMIN, "limited", project="p1")


async def ioto_services(clock: TestClock, stores: Stores, live: Node, tmp_path: Path) -> Services:
    """Every service, with a real CA, bound to a base URL and an MQTT port."""
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", hostnames=["localhost"])
    built = build_services(
        Settings.defaults(),
        stores,
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=ca,
    )
    await built.start()
    built.claims.bind(base_url="http://localhost:8080", mqtt_port=8883)
    built.files.bind(base_url="http://localhost:8080")
    return built


async def claimed(services: Services, device_id: str, product_name: str = "line") -> str:
    """Register `device_id` with a new product of ACCOUNT, claim it; answer its token."""
    product, _ = await services.products.create_in(ACCOUNT, product_name)
    first = await services.claims.register(product, device_id)
    assert first.token is None
    await services.claims.claim(ADMIN, device_id)
    again = await services.claims.register(product, device_id)
    assert again.token is not None
    return again.token


def signed(url: str, method: str) -> sigv4.SignedRequest:
    """A presigned URL as the S3 endpoint parses it."""
    parts = urlsplit(url)
    return sigv4.parse(method, parts.path, parts.query, [("host", parts.netloc)])
