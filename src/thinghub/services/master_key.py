"""The server's master key: the secret the Ioto device tokens and temporary credentials are
derived from (security.device_tokens, security.aws_credentials; each with its own label).

Kept like the JWT secret: a document of the system account, created on first start. Changing
it (deleting the document) voids every device token and credential at once; devices then
get new ones from register and getCreds.
"""

from __future__ import annotations

import secrets

from thinghub.ports import Clock, Stores

__all__ = ["MASTER_KEY_BYTES", "load_master_key"]

MASTER_KEY_BYTES = 32
SYSTEM_ACCOUNT = ""  # the account of server-wide documents (as services.auth)
DOCUMENT = "ioto_master_key"


async def load_master_key(stores: Stores, clock: Clock) -> bytes:
    """The master key, created (and stored) if there is none yet."""
    stored = await stores.documents.get(SYSTEM_ACCOUNT, "system", DOCUMENT)
    if isinstance(stored, str) and len(stored) >= 2 * MASTER_KEY_BYTES:
        return bytes.fromhex(stored)
    key = secrets.token_hex(MASTER_KEY_BYTES)
    await stores.documents.put(SYSTEM_ACCOUNT, "system", DOCUMENT, key, clock.now())
    return bytes.fromhex(key)
