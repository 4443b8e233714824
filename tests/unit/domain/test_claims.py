"""Tests for thinghub.domain.claims: the Ioto register/claim/provision/release machine."""

from __future__ import annotations

import pytest

from thinghub.domain import claims as c
from thinghub.domain.claims import ClaimState, Event, IotoRole, Refusal
from thinghub.domain.errors import Conflict, Forbidden, NotFound

NOW = 1_760_000_000.0
DEV = "JT08FFQXWQ"
ACC = "acc-1"
OTHER = "acc-2"


def registered(now: float = NOW) -> c.Registration:
    return c.register(None, device_id=DEV, product_id="prod-1", product_account_id=ACC, now=now)


def claimed() -> c.Registration:
    return c.claim(registered(), account_id=ACC, now=NOW + 10)


def provisioned(now: float = NOW + 20) -> c.Registration:
    return c.provisioned(claimed(), fingerprint="fp-1", now=now)


def test_the_table_covers_every_state_and_event() -> None:
    for state in (None, *ClaimState):
        for event in Event:
            assert (state, event) in c.TRANSITIONS
    assert c.TRANSITIONS[(ClaimState.PROVISIONED, Event.RELEASE)] is ClaimState.UNCLAIMED
    assert c.TRANSITIONS[(ClaimState.UNCLAIMED, Event.PROVISION)] is Refusal.NOT_CLAIMED


def test_register_records_an_unclaimed_device_then_refreshes_it() -> None:
    first = registered()
    assert (first.state, first.account_id, first.generation) == (ClaimState.UNCLAIMED, None, 0)
    assert not c.is_claimed(first)
    again = c.register(
        first,
        device_id=DEV,
        product_id="prod-1",
        product_account_id=ACC,
        now=NOW + 5,
        version="1.2",
    )
    assert (again.registered_at, again.accessed_at, again.version) == (NOW, NOW + 5, "1.2")
    with pytest.raises(Conflict) as info:
        c.register(first, device_id=DEV, product_id="prod-2", product_account_id=ACC, now=NOW)
    assert info.value.field == "id"


def test_auto_claim_only_into_the_products_account() -> None:
    auto = c.register(
        None, device_id=DEV, product_id="p", product_account_id=ACC, now=NOW, auto_claim_account=ACC
    )
    assert auto.state is ClaimState.CLAIMED and auto.account_id == ACC and c.is_claimed(auto)
    ignored = c.register(
        None,
        device_id=DEV,
        product_id="p",
        product_account_id=ACC,
        now=NOW,
        auto_claim_account=OTHER,
    )
    assert ignored.state is ClaimState.UNCLAIMED


def test_claim_sets_the_account_and_a_new_generation() -> None:
    device = claimed()
    assert (device.state, device.account_id, device.claimed_at, device.generation) == (
        ClaimState.CLAIMED,
        ACC,
        NOW + 10,
        1,
    )
    assert c.is_claimed(device)
    assert c.claim(device, account_id=ACC, now=NOW + 99) == device  # idempotent
    test_device = c.claim(registered(), account_id=ACC, now=NOW, test=True)
    assert test_device.test


def test_claim_refusals_look_like_absence() -> None:
    for current in (None, registered()):
        with pytest.raises(NotFound):
            c.claim(current, account_id=OTHER, now=NOW)
    with pytest.raises(NotFound):
        c.claim(claimed(), account_id=OTHER, now=NOW)


def test_provision_records_the_certificate_and_the_window() -> None:
    device = provisioned()
    assert device.state is ClaimState.PROVISIONED
    assert c.accepts_certificate(device, "fp-1")
    assert not c.accepts_certificate(device, "fp-2")
    assert not c.accepts_certificate(claimed(), "fp-1")
    assert c.provision_delay(device, now=NOW + 21) is None  # one retry is fine
    again = c.provisioned(device, fingerprint="fp-2", now=NOW + 21)
    assert c.accepts_certificate(again, "fp-2") and not c.accepts_certificate(again, "fp-1")
    # A third inside the window: wait until the older of the two leaves it.
    assert c.provision_delay(again, now=NOW + 30) == 50
    assert c.provision_delay(again, now=NOW + 79.5) == 1
    assert c.provision_delay(again, now=NOW + 80) is None
    with pytest.raises(ValueError):
        c.provisioned(again, fingerprint="fp-3", now=NOW + 30)
    later = c.provisioned(again, fingerprint="fp-3", now=NOW + 200)
    assert later.provisions == (NOW + 200,)


def test_provision_needs_a_claim() -> None:
    with pytest.raises(NotFound) as info:
        c.provision_delay(registered(), now=NOW)
    assert "not claimed" in info.value.message
    with pytest.raises(NotFound):
        c.provision_delay(None, now=NOW)


def test_release_voids_token_certificate_and_credentials() -> None:
    device = provisioned()
    assert c.accepts_token(device, account_id=ACC, generation=1)
    assert c.accepts_credentials(device, account_id=ACC, issued_at=NOW + 30)
    released = c.release(device, account_id=ACC, now=NOW + 40)
    assert released.was_provisioned and released.account_id == ACC
    after = released.registration
    assert (after.state, after.account_id, after.certificate_fingerprint) == (
        ClaimState.UNCLAIMED,
        None,
        None,
    )
    assert after.generation == 2
    assert not c.accepts_token(after, account_id=ACC, generation=1)
    assert not c.accepts_certificate(after, "fp-1")
    assert not c.accepts_credentials(after, account_id=ACC, issued_at=NOW + 30)
    assert not c.is_claimed(after)
    # Claimed again: a new generation; credentials from the earlier claim stay void.
    again = c.claim(after, account_id=ACC, now=NOW + 50)
    assert again.generation == 3
    assert not c.accepts_token(again, account_id=ACC, generation=1)
    assert c.accepts_token(again, account_id=ACC, generation=3)
    assert not c.accepts_credentials(again, account_id=ACC, issued_at=NOW + 30)
    assert c.accepts_credentials(again, account_id=ACC, issued_at=NOW + 50)
    assert not c.release(claimed(), account_id=ACC, now=NOW).was_provisioned


def test_release_refusals() -> None:
    for current in (None, registered()):
        with pytest.raises(NotFound):
            c.release(current, account_id=ACC, now=NOW)
    with pytest.raises(NotFound):
        c.release(claimed(), account_id=OTHER, now=NOW)


def test_credentials_of_another_account_are_refused() -> None:
    assert not c.accepts_credentials(provisioned(), account_id=OTHER, issued_at=NOW + 30)
    assert not c.accepts_credentials(None, account_id=ACC, issued_at=NOW)
    assert not c.accepts_token(provisioned(), account_id=OTHER, generation=1)


@pytest.mark.parametrize(
    ("core", "allowed"),
    [
        ("admin", {IotoRole.USER, IotoRole.CLAIM_DEVICE, IotoRole.RELEASE_DEVICE, IotoRole.OWNER}),
        ("builder", {IotoRole.USER, IotoRole.CLAIM_DEVICE, IotoRole.RELEASE_DEVICE}),
        ("operator", {IotoRole.USER, IotoRole.CLAIM_DEVICE, IotoRole.RELEASE_DEVICE}),
        ("viewer", {IotoRole.USER}),
        ("nobody", set()),
    ],
)
def test_role_mapping(core: str, allowed: set[IotoRole]) -> None:
    for role in IotoRole:
        assert c.may(core, role) is (role in allowed)
        if role not in allowed:
            with pytest.raises(Forbidden) as info:
                c.require(core, role)
            assert role.value in info.value.message
    assert not c.may("admin", IotoRole.DEVICE)  # devices authenticate with device tokens


def test_account_parameter_is_an_owner_option_and_stays_isolated() -> None:
    assert c.check_account_param("viewer", caller_account=ACC, requested=None) == ACC
    assert c.check_account_param("viewer", caller_account=ACC, requested=ACC) == ACC
    with pytest.raises(Forbidden):
        c.check_account_param("operator", caller_account=ACC, requested=OTHER)
    with pytest.raises(NotFound) as info:
        c.check_account_param("admin", caller_account=ACC, requested=OTHER)
    assert info.value.field == "accountId"
