"""Tests for thinghub.security.sas: Azure SAS tokens as the azure-iot-device SDK builds them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest

from thinghub.security import sas
from thinghub.security.sas import SasError, SasToken

NOW = 1_700_000_000.0
HUB_URI = "localhost/devices/thermo-1"
DPS_URI = "0ne00000001/registrations/thermo-1"

# bytes 0..63; the expected values below were computed with the openssl CLI, not with Python:
#   printf 'thermo-1' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...3f -binary | base64
KNOWN_KEY = base64.b64encode(bytes(range(64))).decode()
KNOWN_DERIVED_THERMO_1 = "4RtfEJl2C9dmH/hgxxcaMssbORvYT2H3GIvI0mk1xAw="
#   printf 'localhost%2Fdevices%2Fthermo-1\n1700000000' | openssl dgst ... | base64
KNOWN_SIG = "YViqVL7wT+1zMRd8vtD69UDT1kV2MB065lxMq+eAIoQ="


def sdk_token(key_b64: str, uri: str, expiry: int, key_name: str | None = None) -> str:
    """The azure-iot-device 2.14 algorithm, written from spec §2 (sastoken.py _build_token
    and SymmetricKeySigningMechanism.sign), independently of the code under test."""
    enc_uri = quote(uri, safe="")
    message = (enc_uri + "\n" + str(expiry)).encode("utf-8")
    digest = hmac.new(base64.b64decode(key_b64), message, hashlib.sha256).digest()
    enc_sig = quote(base64.b64encode(digest).decode("utf-8"), safe="")
    token = f"SharedAccessSignature sr={enc_uri}&sig={enc_sig}&se={expiry}"
    if key_name is not None:
        token += f"&skn={key_name}"
    return token


def check(token: str, key: str, resource: str = HUB_URI, now: float = NOW) -> None:
    sas.verify(sas.parse(token), key_b64=key, expected_resource=resource, now=now)


def reason_of(token: str, key: str = KNOWN_KEY, resource: str = HUB_URI) -> str:
    with pytest.raises(SasError) as info:
        check(token, key, resource)
    return info.value.reason


# --- keys -----------------------------------------------------------------------------------


def test_generate_key_is_64_random_bytes_in_base64() -> None:
    keys = {sas.generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 64
        assert len(key) == 88


def test_derive_group_key_matches_openssl_vector() -> None:
    assert sas.derive_group_key(KNOWN_KEY, "thermo-1") == KNOWN_DERIVED_THERMO_1


def test_derive_group_key_matches_the_sample_formula() -> None:
    group_key = sas.generate_key()
    # samples/async-hub-scenarios/provision_symmetric_key_group.py derive_device_key
    expected = base64.b64encode(
        hmac.new(base64.b64decode(group_key), msg=b"dev-7", digestmod=hashlib.sha256).digest()
    ).decode()
    assert sas.derive_group_key(group_key, "dev-7") == expected
    assert sas.derive_group_key(group_key, "dev-8") != expected


def test_derived_key_signs_a_dps_token_that_verifies() -> None:
    group_key = sas.generate_key()
    device_key = sas.derive_group_key(group_key, "thermo-1")
    token = sdk_token(device_key, DPS_URI, int(NOW) + 3600)
    check(token, sas.derive_group_key(group_key, "thermo-1"), DPS_URI)
    assert reason_of(token, group_key, DPS_URI) == "signature mismatch"


def test_bad_key_raises_sas_error() -> None:
    with pytest.raises(SasError, match="base64"):
        sas.derive_group_key("not base64!", "x")
    with pytest.raises(SasError, match="base64"):
        sas.sign("@@@", HUB_URI, 1)
    with pytest.raises(SasError, match="empty"):
        sas.sign("", HUB_URI, 1)
    token = sas.sign(KNOWN_KEY, HUB_URI, int(NOW) + 60)
    assert "base64" in reason_of(token, key="abc$")


# --- signing --------------------------------------------------------------------------------


def test_sign_matches_openssl_vector() -> None:
    assert sas.sign(KNOWN_KEY, HUB_URI, 1_700_000_000) == (
        "SharedAccessSignature sr=localhost%2Fdevices%2Fthermo-1"
        f"&sig={quote(KNOWN_SIG, safe='')}&se=1700000000"
    )
    assert quote(KNOWN_SIG, safe="") == "YViqVL7wT%2B1zMRd8vtD69UDT1kV2MB065lxMq%2BeAIoQ%3D"


def test_sign_is_identical_to_the_sdk_algorithm() -> None:
    key = sas.generate_key()
    for uri in (HUB_URI, DPS_URI, "Hub.Example/devices/d/modules/m", "h/devices/a b:c"):
        assert sas.sign(key, uri, 1_800_000_000) == sdk_token(key, uri, 1_800_000_000)


def test_own_token_round_trips() -> None:
    key = sas.generate_key()
    check(sas.sign(key, HUB_URI, int(NOW) + 3600), key)


def test_sign_rejects_negative_expiry() -> None:
    with pytest.raises(ValueError, match="expiry"):
        sas.sign(KNOWN_KEY, HUB_URI, -1)


# --- parsing --------------------------------------------------------------------------------


def test_parse_fields() -> None:
    token = sas.parse(sdk_token(KNOWN_KEY, HUB_URI, 1_700_000_000, key_name="registration"))
    assert token == SasToken(
        resource_raw="localhost%2Fdevices%2Fthermo-1",
        resource=HUB_URI,
        signature=KNOWN_SIG,
        expiry=1_700_000_000,
        key_name="registration",
    )
    assert sas.parse(sdk_token(KNOWN_KEY, HUB_URI, 5)).key_name is None


def test_signature_is_kept_out_of_repr() -> None:
    token = sas.parse(sdk_token(KNOWN_KEY, HUB_URI, 5))
    assert KNOWN_SIG not in repr(token)
    assert "YViq" not in repr(sas.parse(sdk_token(KNOWN_KEY, HUB_URI, 1_700_000_000)))


GOOD_SIG = quote(KNOWN_SIG, safe="")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "does not start with"),
        ("garbage", "does not start with"),
        ("sharedaccesssignature sr=a&sig=b&se=1", "does not start with"),
        ("SharedAccessSignature", "does not start with"),
        ("SharedAccessSignature ", "'' has no '='"),
        (f"SharedAccessSignature sig={GOOD_SIG}&se=1", "missing field 'sr'"),
        ("SharedAccessSignature sr=a%2Fb&se=1", "missing field 'sig'"),
        (f"SharedAccessSignature sr=a%2Fb&sig={GOOD_SIG}", "missing field 'se'"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1&foo=bar", "unknown field 'foo'"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1&SE=2", "unknown field 'SE'"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1&se=2", "duplicate field 'se'"),
        (f"SharedAccessSignature sr=a&sr=b&sig={GOOD_SIG}&se=1", "duplicate field 'sr'"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1&skn=x&skn=y", "duplicate field 'skn'"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=soon", "se is not a whole number"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=-5", "se is not a whole number"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1.5", "se is not a whole number"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=+15", "se is not a whole number"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=0015", "se is not a whole number"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1_0", "se is not a whole number"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=" + "9" * 40, "se is not a whole"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=", "empty field 'se'"),
        (f"SharedAccessSignature sr=&sig={GOOD_SIG}&se=1", "empty field 'sr'"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se=1&", "'' has no '='"),
        (f"SharedAccessSignature sr=a&sig={GOOD_SIG}&se", "'se' has no '='"),
        (f"SharedAccessSignature sr=%ff%fe&sig={GOOD_SIG}&se=1", "'sr' is not valid UTF-8"),
        ("SharedAccessSignature sr=a&sig=b&se=1&skn=" + "x" * 5000, "longer than 4096"),
    ],
)
def test_parse_rejects(token: str, reason: str) -> None:
    with pytest.raises(SasError) as info:
        sas.parse(token)
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)
    # The reason names the field, never echoes the signature.
    assert KNOWN_SIG[:8] not in info.value.reason


# --- verification ---------------------------------------------------------------------------


def test_sdk_token_verifies_with_and_without_skn() -> None:
    key = sas.generate_key()
    expiry = int(NOW) + 3600
    check(sdk_token(key, HUB_URI, expiry), key)
    check(sdk_token(key, HUB_URI, expiry, key_name="registration"), key)
    check(sdk_token(key, DPS_URI, expiry), key, DPS_URI)
    check(sdk_token(key, DPS_URI, expiry, key_name="registration"), key, DPS_URI)


def test_module_resource_verifies() -> None:
    key = sas.generate_key()
    uri = "hub.example/devices/dev-1/modules/mod-a"
    check(sdk_token(key, uri, int(NOW) + 60), key, uri)
    assert reason_of(sdk_token(key, uri, int(NOW) + 60), key, "hub.example/devices/dev-1")


def test_wrong_key() -> None:
    token = sdk_token(sas.generate_key(), HUB_URI, int(NOW) + 60)
    assert reason_of(token, sas.generate_key()) == "signature mismatch"


def test_expired() -> None:
    key = sas.generate_key()
    expiry = int(NOW) + 60
    check(sdk_token(key, HUB_URI, expiry), key, now=expiry - 0.001)
    for now in (expiry, expiry + 0.5, expiry + 3600):
        with pytest.raises(SasError, match="^expired"):
            check(sdk_token(key, HUB_URI, expiry), key, now=now)


def test_expired_is_only_reported_for_genuine_tokens() -> None:
    token = sdk_token(sas.generate_key(), HUB_URI, int(NOW) - 60)
    assert reason_of(token, sas.generate_key()) == "signature mismatch"


def test_wrong_resource() -> None:
    key = sas.generate_key()
    token = sdk_token(key, "localhost/devices/other", int(NOW) + 60)
    reason = reason_of(token, key)
    assert reason.startswith("wrong resource")
    assert "localhost/devices/other" in reason
    assert HUB_URI in reason
    # The device part is case-sensitive, only the host is not.
    token = sdk_token(key, "localhost/devices/Thermo-1", int(NOW) + 60)
    assert reason_of(token, key).startswith("wrong resource")


def test_host_is_case_insensitive() -> None:
    key = sas.generate_key()
    token = sdk_token(key, "LocalHost/devices/thermo-1", int(NOW) + 60)
    check(token, key, "localhost/devices/thermo-1")
    check(sdk_token(key, HUB_URI, int(NOW) + 60), key, "LOCALHOST/devices/thermo-1")
    dps = sdk_token(key, "0NE00000001/registrations/thermo-1", int(NOW) + 60)
    check(dps, key, DPS_URI)


def test_tampered_expiry() -> None:
    key = sas.generate_key()
    expiry = int(NOW) + 60
    token = sdk_token(key, HUB_URI, expiry).replace(f"se={expiry}", f"se={expiry + 86400}")
    assert reason_of(token, key) == "signature mismatch"


def test_tampered_resource_signed_for_another_device() -> None:
    key = sas.generate_key()
    token = sdk_token(key, "localhost/devices/other", int(NOW) + 60)
    token = token.replace("other", "thermo-1")
    assert reason_of(token, key) == "signature mismatch"


def test_resource_signed_exactly_as_received() -> None:
    """A client that encodes sr differently (here: '/' left raw) signs what it sent; we
    recompute over sr as received, so its token is accepted, as spec §2 says."""
    key = sas.generate_key()
    expiry = int(NOW) + 60
    digest = hmac.new(
        base64.b64decode(key), f"{HUB_URI}\n{expiry}".encode(), hashlib.sha256
    ).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    check(f"SharedAccessSignature sr={HUB_URI}&sig={sig}&se={expiry}", key)
    # ...while the SDK-encoded sr with that signature does not match.
    bad = f"SharedAccessSignature sr={quote(HUB_URI, safe='')}&sig={sig}&se={expiry}"
    assert reason_of(bad, key) == "signature mismatch"


def test_signature_spellings_of_the_same_bytes_all_verify() -> None:
    key = KNOWN_KEY
    se = 1_700_000_000
    raw = KNOWN_SIG  # contains '+' and ends in '='
    spellings = [
        quote(raw, safe=""),  # what the SDK sends: %2B, %3D
        raw,  # unencoded '+' and '='
        raw.rstrip("="),  # padding dropped
        quote(raw.rstrip("="), safe=""),
        raw.replace("+", "-").replace("/", "_"),  # URL-safe alphabet
    ]
    for sig in spellings:
        check(
            f"SharedAccessSignature sr=localhost%2Fdevices%2Fthermo-1&sig={sig}&se={se}",
            key,
            now=se - 1,
        )


@pytest.mark.parametrize("sig", ["%%%", "A", "not*base64", "QUJD", "x" * 200])
def test_undecodable_or_short_signature_is_a_mismatch(sig: str) -> None:
    token = f"SharedAccessSignature sr=localhost%2Fdevices%2Fthermo-1&sig={sig}&se=1800000000"
    assert reason_of(token) == "signature mismatch"


def test_sas_error_carries_reason() -> None:
    error = SasError("expired")
    assert error.reason == "expired"
    assert str(error) == "expired"
    assert isinstance(error, ValueError)
