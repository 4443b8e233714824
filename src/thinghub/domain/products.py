"""Ioto products: what a device registers with (its product token), owned by one account.

A product has an id, a name and a product token. The token is what the Ioto agent sends as
its register bearer (``device.json5`` ``product``); only its SHA-256 is kept, and it is shown
once, when the product is created. A revoked product's token no longer registers devices;
devices already claimed keep working (they hold device tokens of their own).

The product's name is also the project its claimed devices go into (the core model's
"ioto product = project"), so it follows the id rules of projects.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from thinghub.domain.ids import parse_id

__all__ = ["PRODUCT_TOKEN_PREFIX", "Product", "new_product_token", "parse_product_name"]

PRODUCT_TOKEN_PREFIX = "thpt_"
PRODUCT_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    account_id: str
    name: str
    token_hash: str  # security.secrets.hash_secret of the token
    created_at: float
    revoked_at: float | None = None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


def new_product_token() -> str:
    """A fresh product token: the prefix and 32 random bytes, URL-safe base64."""
    return PRODUCT_TOKEN_PREFIX + secrets.token_urlsafe(PRODUCT_TOKEN_BYTES)


def parse_product_name(value: object, field: str = "name") -> str:
    """A product name: the project its devices go into, so an id (1 to 128 of A-Z a-z 0-9 . _ : -).

    Raises:
        Invalid: naming the field.
    """
    return parse_id(value, field)
