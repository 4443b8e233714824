"""The hub's certificate authority: a local CA, the TLS server certificate, device certificates.

Files in the CA directory (normally <data dir>/ca):

    ca.pem          the CA certificate, what clients trust (SSL_CERT_FILE or
                    server_verification_cert in the Azure SDK, spec §1.3)
    ca-key.pem      the CA private key (mode 0600)
    server.pem      the server leaf certificate, issued by the CA
    server-key.pem  the server private key (mode 0600)

The CA is created once and kept: replacing it would break every client that trusts it. The
server leaf is cheap and is re-issued at load time whenever it no longer fits (a configured
hostname is missing from its SANs, it is close to expiry, its key is missing or does not match,
or it was not issued by this CA).

Why the extensions look the way they do: the Azure SDK verifies the chain and the hostname
(spec §1.3, §9), so the leaf carries DNS SANs for names and IP SANs for IP literals, and the
CA is a proper CA (basicConstraints CA:TRUE critical, keyCertSign). Python 3.13 turns on
VERIFY_X509_STRICT by default, which also wants keyUsage on the CA and key identifiers, so both
certificates carry them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import secrets
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_VALIDITY_DAYS",
    "DEFAULT_SERVER_NAMES",
    "DEVICE_VALIDITY_DAYS",
    "SERVER_VALIDITY_DAYS",
    "CaError",
    "CertificateAuthority",
    "common_name_of",
    "fingerprint_sha256",
]

logger = logging.getLogger(__name__)

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"

CA_VALIDITY_DAYS = 3650
SERVER_VALIDITY_DAYS = 730
DEVICE_VALIDITY_DAYS = 365
# A server leaf this close to its end is re-issued at start-up rather than left to lapse.
SERVER_RENEW_BEFORE_DAYS = 30
# notBefore is set a little in the past so that clients whose clock lags still accept it.
BACKDATE = dt.timedelta(minutes=5)

# Always in the server leaf: what a local client uses to reach us (spec §10).
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644

# X.509 upper bound for a commonName (RFC 5280 ub-common-name).
MAX_COMMON_NAME_CHARS = 64

_DNS_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_MAX_DNS_NAME_CHARS = 253

_IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CaError(Exception):
    """The CA directory is unusable as it stands, e.g. ca.pem without ca-key.pem."""


class CertificateAuthority:
    """The hub's CA, loaded from (or created in) a directory. Build with load_or_create."""

    def __init__(self, directory: Path, ca_cert: x509.Certificate, ca_key: _IssuerKey) -> None:
        self._directory = directory
        self._ca_cert = ca_cert
        self._ca_key = ca_key
        self._ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @classmethod
    def load_or_create(cls, directory: Path, *, hostnames: Sequence[str]) -> CertificateAuthority:
        """Load the CA and server certificate from directory, creating what is missing.

        Args:
            directory: created if missing.
            hostnames: names clients use to reach the server, besides DEFAULT_SERVER_NAMES.
                Strings that parse as IP addresses become IP SANs, the rest DNS SANs.

        Raises:
            ValueError: a hostname is neither a DNS name nor an IP address.
            CaError: only half of the CA is there, it cannot be read, or the key does not
                match the certificate. The CA is never silently replaced.
        """
        wanted = _server_names(hostnames)
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
        if cert_path.exists() or key_path.exists():
            ca_cert, ca_key = _load_ca(cert_path, key_path)
        else:
            ca_cert, ca_key = _create_ca(cert_path, key_path)
        ca = cls(directory, ca_cert, ca_key)
        now = _utcnow()
        reason = ca._server_unfit_reason(wanted, now)
        if reason is not None:
            logger.info("issuing server certificate (%s)", reason)
            ca._issue_server(wanted, now)
        return ca

    @property
    def ca_pem(self) -> str:
        """The CA certificate as PEM text (what ``server_verification_cert`` takes)."""
        return self._ca_pem

    @property
    def ca_path(self) -> Path:
        return self._directory / CA_FILE

    @property
    def server_cert_path(self) -> Path:
        return self._directory / SERVER_CERT_FILE

    @property
    def server_key_path(self) -> Path:
        return self._directory / SERVER_KEY_FILE

    def server_ssl_context(self, *, request_client_cert: bool = True) -> ssl.SSLContext:
        """Build a TLS server context with the server certificate.

        TLS 1.2 is the minimum and must stay enabled: the Azure SDK speaks exactly TLS 1.2
        (spec §1.3). TLS 1.3 is allowed for everyone else.

        Args:
            request_client_cert: ask clients for a certificate (CERT_OPTIONAL). A client that
                sends none (SAS devices) still connects; one that sends a certificate not
                issued by this CA fails the handshake (unknown_ca alert). After the
                handshake ``getpeercert(binary_form=True)`` is the verified certificate's DER
                (read the device id with common_name_of), or None when none was sent.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        context.load_cert_chain(self.server_cert_path, self.server_key_path)
        if request_client_cert:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=self._ca_pem)
        return context

    def issue_device_certificate(
        self,
        common_name: str,
        *,
        days: int = DEVICE_VALIDITY_DAYS,
        organizational_unit: str | None = None,
    ) -> tuple[str, str]:
        """Issue a client certificate for X.509 device authentication.

        By IoT Hub convention the CN is the device id, or the registration id for DPS
        (spec §1.3, §7). `organizational_unit` (OU) binds the certificate to more than the
        id: thinghub puts the device's account there, so a certificate for an id some
        account deleted is no key to the same id in another account.

        Returns:
            (certificate PEM, unencrypted PKCS#8 private key PEM). The key is not kept.

        Raises:
            ValueError: empty or over-long common name, or days < 1.
        """
        if not common_name or len(common_name) > MAX_COMMON_NAME_CHARS:
            raise ValueError(
                f"common name must be 1 to {MAX_COMMON_NAME_CHARS} characters, got {common_name!r}"
            )
        if days < 1:
            raise ValueError(f"days must be >= 1, got {days}")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue_leaf(
            common_name,
            key.public_key(),
            now=_utcnow(),
            days=days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            names=(),
            organizational_unit=organizational_unit,
        )
        return (
            cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            _private_pem(key).decode("ascii"),
        )

    def _server_unfit_reason(
        self, wanted: Sequence[x509.GeneralName], now: dt.datetime
    ) -> str | None:
        """Say why the server leaf on disk cannot be used as it is, or None if it can."""
        cert_path, key_path = self.server_cert_path, self.server_key_path
        if not cert_path.exists() or not key_path.exists():
            return "none on disk"
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            logger.warning(
                "server certificate or key in %s is unreadable: %s",
                self._directory,
                type(exc).__name__,
            )
            return "unreadable"
        if _spki(key.public_key()) != _spki(cert.public_key()):
            return "key does not match certificate"
        try:
            cert.verify_directly_issued_by(self._ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return "not issued by this CA"
        if cert.not_valid_after_utc - now < dt.timedelta(days=SERVER_RENEW_BEFORE_DAYS):
            return "expiring"
        missing = set(wanted) - _sans_of(cert)
        if missing:
            return "new names " + ", ".join(sorted(_name_text(n) for n in missing))
        _warn_if_loose(key_path)
        return None

    def _issue_server(self, names: Sequence[x509.GeneralName], now: dt.datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._issue_leaf(
            "thinghub server",
            key.public_key(),
            now=now,
            days=SERVER_VALIDITY_DAYS,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            names=names,
        )
        # Key first: if we stop in between, the mismatch is seen next time and both are redone.
        _write_file(self.server_key_path, _private_pem(key), KEY_FILE_MODE)
        _write_file(
            self.server_cert_path,
            cert.public_bytes(serialization.Encoding.PEM),
            CERT_FILE_MODE,
        )
        logger.info(
            "server certificate for %s written to %s",
            ", ".join(_name_text(n) for n in names),
            self.server_cert_path,
        )

    def _issue_leaf(
        self,
        common_name: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        now: dt.datetime,
        days: int,
        usage: x509.ObjectIdentifier,
        names: Sequence[x509.GeneralName],
        organizational_unit: str | None = None,
    ) -> x509.Certificate:
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organizational_unit is not None:
            subject.append(
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit)
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self._ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(names)), critical=False
            )
        return builder.sign(self._ca_key, hashes.SHA256())


def fingerprint_sha256(cert: str | bytes) -> str:
    """SHA-256 fingerprint of a certificate, uppercase hex without separators.

    Args:
        cert: PEM (text or bytes) or DER.

    Raises:
        ValueError: not a certificate.
    """
    return _load_certificate(cert).fingerprint(hashes.SHA256()).hex().upper()


def common_name_of(der: bytes) -> str | None:
    """The subject CN of a DER certificate, e.g. from ``getpeercert(binary_form=True)``.

    Returns:
        The CN, or None when the subject has no CN or more than one (ambiguous).

    Raises:
        ValueError: not a DER certificate.
    """
    return _single(x509.load_der_x509_certificate(der).subject, NameOID.COMMON_NAME)


def device_identity_of(der: bytes) -> tuple[str | None, str | None]:
    """(CN, OU) of a DER device certificate: the device id and the account it was issued for.

    Either is None when absent or given more than once (ambiguous).

    Raises:
        ValueError: not a DER certificate.
    """
    subject = x509.load_der_x509_certificate(der).subject
    return _single(subject, NameOID.COMMON_NAME), _single(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)


def _single(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    if len(attributes) != 1:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else None


def _create_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, _IssuerKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix tells apart the CAs of different installs in a trust store.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"thinghub CA {secrets.token_hex(4)}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "thinghub"),
        ]
    )
    now = _utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_VALIDITY_DAYS))
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_file(key_path, _private_pem(key), KEY_FILE_MODE)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_FILE_MODE)
    logger.info(
        "created certificate authority %s in %s", cert.subject.rfc4514_string(), cert_path.parent
    )
    return cert, key


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, _IssuerKey]:
    for path in (cert_path, key_path):
        if not path.exists():
            raise CaError(
                f"{path} is missing while {cert_path.parent} holds the rest of a CA; "
                f"restore it, or remove {CA_FILE} and {CA_KEY_FILE} to create a new CA "
                "(clients will then have to trust the new one)"
            )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CaError(f"cannot read the CA certificate {cert_path}: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        # The exception text names no key material; still, keep it to the type.
        raise CaError(
            f"cannot read the CA key {key_path} ({type(exc).__name__}); "
            "it must be an unencrypted PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaError(f"the CA key {key_path} must be an EC or RSA key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CaError(f"the CA key {key_path} does not match {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE)")
    _warn_if_loose(key_path)
    return cert, key


def _server_names(hostnames: Iterable[str]) -> list[x509.GeneralName]:
    """DEFAULT_SERVER_NAMES plus hostnames as SAN entries, in order, without repeats."""
    names: list[x509.GeneralName] = []
    for hostname in (*DEFAULT_SERVER_NAMES, *hostnames):
        name = _general_name(hostname)
        if name not in names:
            names.append(name)
    return names


def _general_name(hostname: str) -> x509.GeneralName:
    text = hostname.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    text = text.lower().removesuffix(".")
    labels = text.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if len(text) > _MAX_DNS_NAME_CHARS or not all(_DNS_LABEL_RE.fullmatch(x) for x in labels):
        raise ValueError(f"hostname {hostname!r} is neither a DNS name nor an IP address")
    return x509.DNSName(text)


def _sans_of(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found: set[x509.GeneralName] = set()
    for name in sans:
        found.add(x509.DNSName(name.value.lower()) if isinstance(name, x509.DNSName) else name)
    return found


def _name_text(name: x509.GeneralName) -> str:
    return str(name.value)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _load_certificate(cert: str | bytes) -> x509.Certificate:
    data = cert.encode("ascii") if isinstance(cert, str) else cert
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file, fsync, rename) with mode set from the start."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)  # the umask may have changed it
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _warn_if_loose(key_path: Path) -> None:
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        logger.warning(
            "%s is readable by others (mode %03o); it should be %03o", key_path, mode, KEY_FILE_MODE
        )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
