"""CertificateService: device certificates come from the CA handed in at construction, with
the device id as CN and its account as OU; only those who may issue them get one."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import Node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.errors import Forbidden, NotFound
from thinghub.domain.model import Principal, Role
from thinghub.ports import Stores
from thinghub.security.ca import CertificateAuthority
from thinghub.services.certificates import CertificateService
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
IN_P1 = Principal("acc-1", Role.ADMIN, "limited", project="p1")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(
        tmp_path_factory.mktemp("ca"), hostnames=["localhost"]
    )


@pytest.fixture
async def with_ca(
    ca: CertificateAuthority, stores: Stores, live: Node, clock: TestClock
) -> Services:
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
    return built


def _names(pem: str) -> tuple[str, str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    return str(cn), str(ou)


async def test_a_certificate_names_the_device_and_its_account(
    with_ca: Services, ca: CertificateAuthority
) -> None:
    await with_ca.registry.create_device(ADMIN, name="d", device_id="d-1", project="p1")
    issued = await with_ca.certificates.issue_for(ADMIN, "d-1")
    assert issued.device_id == "d-1"
    assert _names(issued.certificate) == ("d-1", "acc-1")
    assert "PRIVATE KEY" in issued.private_key
    assert issued.ca_certificate == ca.ca_pem == with_ca.certificates.ca_pem
    issuer = x509.load_pem_x509_certificate(issued.certificate.encode()).issuer
    assert issuer == x509.load_pem_x509_certificate(ca.ca_pem.encode()).subject
    # A project-limited admin issues for its project's devices.
    assert _names((await with_ca.certificates.issue_for(IN_P1, "d-1")).certificate)[0] == "d-1"


@pytest.mark.parametrize(
    ("caller", "error"),
    [
        (Principal("acc-1", Role.OPERATOR, "op"), Forbidden),
        (Principal("acc-1", Role.BUILDER, "b"), Forbidden),
        (Principal("acc-1", Role.ADMIN, "limited", project="p2"), NotFound),
        (Principal("acc-2", Role.ADMIN, "other"), NotFound),
    ],
)
async def test_only_admins_who_see_the_device_get_one(
    with_ca: Services, caller: Principal, error: type[Exception]
) -> None:
    await with_ca.registry.create_device(ADMIN, name="d", device_id="d-1", project="p1")
    with pytest.raises(error):
        await with_ca.certificates.issue_for(caller, "d-1")


async def test_without_a_ca_nothing_is_issued(services: Services, tmp_path: Path) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d-1")
    assert services.certificates.ca_pem is None
    with pytest.raises(RuntimeError, match="no certificate authority"):
        await services.certificates.issue_for(ADMIN, "d-1")
    with pytest.raises(RuntimeError, match="without a registry"):
        await CertificateService(None).issue_for(ADMIN, "d-1")
