"""Security: the hub's CA and certificates, SAS signatures, passwords, API tokens and JWTs."""

from thinghub.security import sas
from thinghub.security.ca import (
    CaError,
    CertificateAuthority,
    common_name_of,
    device_identity_of,
    fingerprint_sha256,
)
from thinghub.security.jwt import Claims, JwtError, JwtIssuer
from thinghub.security.passwords import hash_password, needs_rehash, verify_password
from thinghub.security.sas import SasError, SasToken, derive_group_key, generate_key
from thinghub.security.secrets import (
    NewApiToken,
    hash_secret,
    new_api_token,
    parse_api_token,
    verify_secret,
)

__all__ = [
    "CaError",
    "CertificateAuthority",
    "Claims",
    "JwtError",
    "JwtIssuer",
    "NewApiToken",
    "SasError",
    "SasToken",
    "common_name_of",
    "derive_group_key",
    "device_identity_of",
    "fingerprint_sha256",
    "generate_key",
    "hash_password",
    "hash_secret",
    "needs_rehash",
    "new_api_token",
    "parse_api_token",
    "sas",
    "verify_password",
    "verify_secret",
]
