"""Tests for thinghub.security.ca: files on disk, certificate contents, and real TLS handshakes.

The handshakes run in-process over ssl.MemoryBIO pairs: no sockets, no network.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from thinghub.security.ca import (
    CaError,
    CertificateAuthority,
    common_name_of,
    fingerprint_sha256,
)

HOSTNAMES = ("hub.iothub.test", "10.1.2.3")
TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


# --- helpers --------------------------------------------------------------------------------


class Link:
    """A client and a server SSLObject joined by two MemoryBIO pairs."""

    def __init__(
        self,
        client_ctx: ssl.SSLContext,
        server_ctx: ssl.SSLContext,
        server_hostname: str | None,
    ) -> None:
        self.client_in, self.client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.server_in, self.server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_ctx.wrap_bio(
            self.client_in, self.client_out, server_hostname=server_hostname
        )
        self.server = server_ctx.wrap_bio(self.server_in, self.server_out, server_side=True)

    def to_server(self) -> None:
        self.server_in.write(self.client_out.read())

    def to_client(self) -> None:
        self.client_in.write(self.server_out.read())

    def handshake(self) -> None:
        """Run both handshakes to completion; an ssl.SSLError from either side propagates."""
        client_done = server_done = False
        for _ in range(10):
            if not client_done:
                try:
                    self.client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            self.to_server()
            if not server_done:
                try:
                    self.server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
            self.to_client()
            if client_done and server_done:
                return
        raise AssertionError("handshake did not finish")

    def exchange(self) -> None:
        """Send application data both ways and check it arrives."""
        self.client.write(b"ping")
        self.to_server()
        assert self.server.read(100) == b"ping"
        self.server.write(b"pong")
        self.to_client()
        assert self.client.read(100) == b"pong"


def client_context(
    trust_pem: str,
    version: ssl.TLSVersion | None = None,
    cert_file: Path | None = None,
) -> ssl.SSLContext:
    """A verifying client (CERT_REQUIRED, check_hostname, strict X.509) that trusts only
    trust_pem."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Python 3.13's default client context is this strict (RFC 5280 profile checks).
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=trust_pem)
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
    if cert_file is not None:
        context.load_cert_chain(cert_file)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    return context


def write_pair(path: Path, cert_pem: str, key_pem: str) -> Path:
    path.write_text(cert_pem + key_pem)
    return path


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in ext}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make(directory: Path, hostnames: Sequence[str] = HOSTNAMES) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(directory, hostnames=hostnames)


def sign_with_ca(
    ca_dir: Path,
    *,
    common_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    usage: x509.ObjectIdentifier,
    names: Sequence[x509.GeneralName] = (),
) -> tuple[str, str]:
    """Issue a leaf with the CA key read from disk, independently of the code under test."""
    ca_cert = load_cert(ca_dir / "ca.pem")
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ca"


@pytest.fixture
def ca(ca_dir: Path) -> CertificateAuthority:
    return make(ca_dir)


# --- files and certificate contents ---------------------------------------------------------


def test_first_start_writes_four_files_with_private_keys_0600(
    ca: CertificateAuthority, ca_dir: Path
) -> None:
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]
    assert mode_of(ca_dir / "ca-key.pem") == 0o600
    assert mode_of(ca_dir / "server-key.pem") == 0o600
    assert mode_of(ca_dir / "ca.pem") == 0o644
    assert mode_of(ca_dir / "server.pem") == 0o644
    assert ca.ca_path == ca_dir / "ca.pem"
    assert ca.server_cert_path == ca_dir / "server.pem"
    assert ca.server_key_path == ca_dir / "server-key.pem"
    assert ca.ca_pem == (ca_dir / "ca.pem").read_text()
    assert ca.ca_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_key_files_are_0600_even_with_a_permissive_umask(ca_dir: Path) -> None:
    old = os.umask(0)
    try:
        make(ca_dir)
    finally:
        os.umask(old)
    assert mode_of(ca_dir / "ca-key.pem") == 0o600
    assert mode_of(ca_dir / "server-key.pem") == 0o600


def test_ca_certificate_is_a_proper_ca(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str)
    assert cn.startswith("thinghub CA ")
    assert len(cn) > len("thinghub CA ")
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3649) < lifetime < dt.timedelta(days=3651)
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_two_installs_get_different_ca_names(tmp_path: Path) -> None:
    first = x509.load_pem_x509_certificate(make(tmp_path / "a").ca_pem.encode())
    second = x509.load_pem_x509_certificate(make(tmp_path / "b").ca_pem.encode())
    assert first.subject != second.subject


def test_server_certificate_contents(ca: CertificateAuthority, ca_dir: Path) -> None:
    cert = load_cert(ca.server_cert_path)
    ca_cert = load_cert(ca.ca_path)
    cert.verify_directly_issued_by(ca_cert)
    assert sans(cert) == {"localhost", "127.0.0.1", "::1", "hub.iothub.test", "10.1.2.3"}
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    assert ext.get_values_for_type(x509.DNSName) == ["localhost", "hub.iothub.test"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=729) < lifetime < dt.timedelta(days=731)
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    key = serialization.load_pem_private_key(ca.server_key_path.read_bytes(), None)
    assert key.public_key() == public_key
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


@pytest.mark.parametrize(
    "bad", ["", "bad name", "a..b", "-x.example", "x" * 64 + ".example", "é.example", "a/b"]
)
def test_bad_hostname_is_refused_before_anything_is_written(ca_dir: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="neither a DNS name nor an IP address"):
        make(ca_dir, [bad])
    assert not ca_dir.exists()


def test_hostnames_are_normalised(ca_dir: Path) -> None:
    ca = make(ca_dir, ["Hub.Example.", "[fd00::1]", "*.iothub.test"])
    assert sans(load_cert(ca.server_cert_path)) >= {"hub.example", "fd00::1", "*.iothub.test"}


# --- reload and re-issue --------------------------------------------------------------------


def test_reload_keeps_everything(ca: CertificateAuthority, ca_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in ca_dir.iterdir()}
    again = make(ca_dir)
    assert again.ca_pem == ca.ca_pem
    assert {p.name: p.read_bytes() for p in ca_dir.iterdir()} == before


def test_reload_with_fewer_or_differently_spelt_names_keeps_the_leaf(ca_dir: Path) -> None:
    make(ca_dir)
    before = (ca_dir / "server.pem").read_bytes()
    make(ca_dir, [])
    make(ca_dir, ["HUB.IoTHub.test", "10.1.2.3", "localhost"])
    assert (ca_dir / "server.pem").read_bytes() == before


def test_new_hostname_reissues_the_leaf_and_keeps_the_ca(
    ca: CertificateAuthority, ca_dir: Path
) -> None:
    ca_before = (ca_dir / "ca.pem").read_bytes()
    ca_key_before = (ca_dir / "ca-key.pem").read_bytes()
    server_before = (ca_dir / "server.pem").read_bytes()
    server_key_before = (ca_dir / "server-key.pem").read_bytes()

    again = make(ca_dir, [*HOSTNAMES, "dps.iothub.test"])

    assert (ca_dir / "ca.pem").read_bytes() == ca_before
    assert (ca_dir / "ca-key.pem").read_bytes() == ca_key_before
    assert (ca_dir / "server.pem").read_bytes() != server_before
    assert (ca_dir / "server-key.pem").read_bytes() != server_key_before
    assert mode_of(ca_dir / "server-key.pem") == 0o600
    assert "dps.iothub.test" in sans(load_cert(again.server_cert_path))
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]
    # A client that trusted the CA before the re-issue still connects, by the new name.
    link = Link(client_context(ca.ca_pem), again.server_ssl_context(), "dps.iothub.test")
    link.handshake()
    link.exchange()


def test_missing_server_key_reissues_the_leaf(ca: CertificateAuthority, ca_dir: Path) -> None:
    before = (ca_dir / "server.pem").read_bytes()
    (ca_dir / "server-key.pem").unlink()
    again = make(ca_dir)
    assert (ca_dir / "server.pem").read_bytes() != before
    Link(client_context(ca.ca_pem), again.server_ssl_context(), "localhost").handshake()


def test_mismatched_server_key_reissues_the_leaf(tmp_path: Path, ca_dir: Path) -> None:
    make(ca_dir)
    other = make(tmp_path / "other")
    (ca_dir / "server-key.pem").write_bytes(other.server_key_path.read_bytes())
    again = make(ca_dir)
    Link(client_context(again.ca_pem), again.server_ssl_context(), "localhost").handshake()


def test_server_leaf_from_another_ca_is_reissued(tmp_path: Path, ca_dir: Path) -> None:
    ca = make(ca_dir)
    other = make(tmp_path / "other")
    for name in ("server.pem", "server-key.pem"):
        (ca_dir / name).write_bytes((tmp_path / "other" / name).read_bytes())
    again = make(ca_dir)
    assert again.ca_pem == ca.ca_pem
    load_cert(again.server_cert_path).verify_directly_issued_by(load_cert(ca.ca_path))
    assert other.ca_pem != again.ca_pem


def test_server_leaf_near_expiry_is_reissued(ca: CertificateAuthority, ca_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    names += [x509.IPAddress(ipaddress.ip_address("::1")), x509.DNSName("hub.iothub.test")]
    names += [x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]
    cert_pem, key_pem = sign_with_ca(
        ca_dir,
        common_name="short",
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=10),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=names,
    )
    (ca_dir / "server.pem").write_text(cert_pem)
    (ca_dir / "server-key.pem").write_text(key_pem)
    again = make(ca_dir)
    lifetime = load_cert(again.server_cert_path).not_valid_after_utc - now
    assert lifetime > dt.timedelta(days=700)


def test_half_a_ca_is_an_error_and_nothing_is_replaced(ca_dir: Path) -> None:
    make(ca_dir)
    key = (ca_dir / "ca-key.pem").read_bytes()
    (ca_dir / "ca.pem").unlink()
    with pytest.raises(CaError, match=r"ca\.pem is missing"):
        make(ca_dir)
    assert (ca_dir / "ca-key.pem").read_bytes() == key
    assert not (ca_dir / "ca.pem").exists()


def test_missing_ca_key_is_an_error(ca_dir: Path) -> None:
    make(ca_dir)
    (ca_dir / "ca-key.pem").unlink()
    with pytest.raises(CaError, match=r"ca-key\.pem is missing"):
        make(ca_dir)


def test_ca_key_of_another_ca_is_an_error(tmp_path: Path, ca_dir: Path) -> None:
    make(ca_dir)
    make(tmp_path / "other")
    (ca_dir / "ca-key.pem").write_bytes((tmp_path / "other" / "ca-key.pem").read_bytes())
    with pytest.raises(CaError, match="does not match"):
        make(ca_dir)


def test_unreadable_ca_files_are_errors(ca_dir: Path) -> None:
    make(ca_dir)
    good = (ca_dir / "ca.pem").read_bytes()
    (ca_dir / "ca.pem").write_text("not a certificate")
    with pytest.raises(CaError, match="cannot read the CA certificate"):
        make(ca_dir)
    (ca_dir / "ca.pem").write_bytes(good)
    (ca_dir / "ca-key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(CaError, match="cannot read the CA key") as info:
        make(ca_dir)
    assert "AAAA" not in str(info.value)


def test_a_leaf_in_place_of_the_ca_is_an_error(ca_dir: Path) -> None:
    make(ca_dir)
    for name in ("ca.pem", "ca-key.pem"):
        server_name = name.replace("ca", "server")
        (ca_dir / name).write_bytes((ca_dir / server_name).read_bytes())
    with pytest.raises(CaError, match="not a CA certificate"):
        make(ca_dir)


# --- TLS: server authentication -------------------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", *HOSTNAMES])
def test_handshake_with_a_client_that_trusts_only_ca_pem(
    ca: CertificateAuthority, version: ssl.TLSVersion, host: str
) -> None:
    link = Link(client_context(ca.ca_pem, version), ca.server_ssl_context(), host)
    link.handshake()
    assert link.client.version() == VERSION_NAMES[version]
    assert link.server.version() == VERSION_NAMES[version]
    link.exchange()


def test_client_trusting_ca_path_file(ca: CertificateAuthority) -> None:
    """What SSL_CERT_FILE=ca.pem gives an unmodified SDK sample (spec §1.3)."""
    context = ssl.create_default_context(cafile=str(ca.ca_path))
    link = Link(context, ca.server_ssl_context(), "localhost")
    link.handshake()
    link.exchange()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_handshake_with_the_azure_sdk_context(ca: CertificateAuthority, host: str) -> None:
    """mqtt_transport.py _create_ssl_context: PROTOCOL_TLSv1_2, CERT_REQUIRED, check_hostname,
    load_verify_locations(cadata=<PEM text>) (spec §1.3)."""
    with pytest.warns(DeprecationWarning, match="PROTOCOL_TLSv1_2"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLSv1_2)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.load_verify_locations(cadata=ca.ca_pem)
    link = Link(context, ca.server_ssl_context(), host)
    link.handshake()
    assert link.client.version() == "TLSv1.2"
    link.exchange()


def test_server_context_allows_tls_1_2_and_up(ca: CertificateAuthority) -> None:
    for request_client_cert in (True, False):
        context = ca.server_ssl_context(request_client_cert=request_client_cert)
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.2", "hub.iothub.test.evil"])
def test_name_not_in_the_certificate_is_rejected_by_the_client(
    ca: CertificateAuthority, host: str
) -> None:
    link = Link(client_context(ca.ca_pem), ca.server_ssl_context(), host)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        link.handshake()


def test_client_trusting_another_ca_rejects_the_server(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    other = make(tmp_path / "other")
    link = Link(client_context(other.ca_pem), ca.server_ssl_context(), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        link.handshake()


# --- TLS: device certificates ---------------------------------------------------------------


def test_device_certificate_contents(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.issue_device_certificate("dev-1", days=30)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.verify_directly_issued_by(load_cert(ca.ca_path))
    assert cert.subject.rfc4514_string() == "CN=dev-1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=29) < lifetime < dt.timedelta(days=31)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert key.public_key() == cert.public_key()
    assert common_name_of(cert.public_bytes(serialization.Encoding.DER)) == "dev-1"
    second, _ = ca.issue_device_certificate("dev-1")
    assert fingerprint_sha256(second) != fingerprint_sha256(cert_pem)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=lambda v: v.name)
def test_device_certificate_authenticates_over_tls(
    tmp_path: Path, ca: CertificateAuthority, version: ssl.TLSVersion
) -> None:
    cert_pem, key_pem = ca.issue_device_certificate("thermo-1")
    cert_file = write_pair(tmp_path / "device.pem", cert_pem, key_pem)
    client = client_context(ca.ca_pem, version, cert_file)
    link = Link(client, ca.server_ssl_context(), "localhost")
    link.handshake()
    link.exchange()
    der = link.server.getpeercert(binary_form=True)
    assert der is not None
    assert common_name_of(der) == "thermo-1"
    assert fingerprint_sha256(der) == fingerprint_sha256(cert_pem)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=lambda v: v.name)
def test_sas_client_without_certificate_still_connects(
    ca: CertificateAuthority, version: ssl.TLSVersion
) -> None:
    link = Link(client_context(ca.ca_pem, version), ca.server_ssl_context(), "localhost")
    link.handshake()
    link.exchange()
    assert link.server.getpeercert(binary_form=True) is None
    assert link.server.getpeercert() is None


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=lambda v: v.name)
def test_device_certificate_from_another_ca_fails_the_handshake(
    tmp_path: Path, ca: CertificateAuthority, version: ssl.TLSVersion
) -> None:
    """CERT_OPTIONAL means "no certificate is fine", not "any certificate is fine": a
    certificate that does not chain to our CA makes the server abort with unknown_ca."""
    other = make(tmp_path / "other")
    cert_file = write_pair(tmp_path / "foreign.pem", *other.issue_device_certificate("dev-1"))
    link = Link(client_context(ca.ca_pem, version, cert_file), ca.server_ssl_context(), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        link.handshake()
    # With TLS 1.3 the client has already finished its side; either way it gets the alert.
    link.to_client()
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        link.client.read(100)


def test_expired_device_certificate_fails_the_handshake(
    tmp_path: Path, ca: CertificateAuthority, ca_dir: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    cert_pem, key_pem = sign_with_ca(
        ca_dir,
        common_name="dev-old",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    cert_file = write_pair(tmp_path / "old.pem", cert_pem, key_pem)
    link = Link(client_context(ca.ca_pem, None, cert_file), ca.server_ssl_context(), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        link.handshake()


def test_without_request_client_cert_no_certificate_is_asked_for(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server = ca.server_ssl_context(request_client_cert=False)
    assert server.verify_mode == ssl.CERT_NONE
    cert_file = write_pair(tmp_path / "device.pem", *ca.issue_device_certificate("dev-1"))
    link = Link(client_context(ca.ca_pem, None, cert_file), server, "localhost")
    link.handshake()
    link.exchange()
    assert link.server.getpeercert(binary_form=True) is None


def test_request_client_cert_is_optional_mode(ca: CertificateAuthority) -> None:
    assert ca.server_ssl_context().verify_mode == ssl.CERT_OPTIONAL


@pytest.mark.parametrize("common_name", ["", "x" * 65])
def test_device_certificate_rejects_bad_common_name(
    ca: CertificateAuthority, common_name: str
) -> None:
    with pytest.raises(ValueError, match="common name"):
        ca.issue_device_certificate(common_name)


def test_device_certificate_rejects_bad_days(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="days"):
        ca.issue_device_certificate("dev-1", days=0)


# --- helpers: fingerprint and common name ---------------------------------------------------


def test_fingerprint_of_pem_text_pem_bytes_and_der(ca: CertificateAuthority) -> None:
    cert_pem, _ = ca.issue_device_certificate("dev-1")
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest().upper()
    assert fingerprint_sha256(cert_pem) == expected
    assert fingerprint_sha256(cert_pem.encode()) == expected
    assert fingerprint_sha256(der) == expected
    assert len(expected) == 64


def test_fingerprint_of_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        fingerprint_sha256(b"\x30\x03\x02\x01\x01")
    with pytest.raises(ValueError):
        fingerprint_sha256("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def _self_signed_der(name: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_common_name_of_missing_or_ambiguous_cn_is_none() -> None:
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme")])
    assert common_name_of(_self_signed_der(no_cn)) is None
    two_cn = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "a"),
            x509.NameAttribute(NameOID.COMMON_NAME, "b"),
        ]
    )
    assert common_name_of(_self_signed_der(two_cn)) is None
    one = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-9")])
    assert common_name_of(_self_signed_der(one)) == "dev-9"


def test_common_name_of_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        common_name_of(b"not der")
