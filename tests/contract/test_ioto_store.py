"""The storage contract of the Ioto areas (products, registrations, device file records) and
of the blob stores: every backend must pass every test here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from thinghub.domain import claims
from thinghub.domain.claims import ClaimState, Registration
from thinghub.domain.device_files import DeviceFile
from thinghub.domain.errors import Conflict
from thinghub.domain.model import Account, Retention
from thinghub.domain.products import Product
from thinghub.ports import BlobStore, Stores
from thinghub.storage.blobs import CHUNK_BYTES, FileBlobStore
from thinghub.storage.memory.blobs import MemoryBlobStore

T0 = 1_700_000_000.123456
ACC = "acc-1"
OTHER = "acc-2"


def product(pid: str = "p-1", account: str = ACC, token_hash: str = "h" * 64) -> Product:
    return Product(pid, account, f"name-{pid}", token_hash, T0)


def registration(claim_id: str, account: str | None = ACC, **fields: object) -> Registration:
    base = claims.register(
        None, device_id=claim_id, product_id="p-1", product_account_id=ACC, now=T0
    )
    if account is not None:
        base = claims.claim(base, account_id=ACC, now=T0 + 1.000001)
        base = dataclasses.replace(base, account_id=account)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def file(key: str, account: str = ACC, modified: float = T0, size: int = 3) -> DeviceFile:
    device = key.split("/", 1)[0]
    return DeviceFile(account, key, device, size, "0" * 32, "text/plain", modified)


# -- products --------------------------------------------------------------------------------


async def test_products_insert_find_list_and_revoke(stores: Stores) -> None:
    first, second = product("p-1"), product("p-2", token_hash="g" * 64)
    other = product("p-3", OTHER, token_hash="f" * 64)
    for p in (first, second, other):
        await stores.products.insert(p)
    assert await stores.products.get("p-1") == first
    assert await stores.products.get_by_token_hash("g" * 64) == second
    assert await stores.products.get_by_token_hash("x" * 64) is None
    assert await stores.products.in_account(ACC) == [first, second]
    assert await stores.products.revoke("p-1", T0 + 5)
    assert not await stores.products.revoke("p-1", T0 + 6)  # once
    assert not await stores.products.revoke("nope", T0)
    revoked = await stores.products.get("p-1")
    assert revoked is not None and revoked.revoked_at == T0 + 5 and revoked.is_revoked
    with pytest.raises(Conflict):
        await stores.products.insert(product("p-1", token_hash="e" * 64))
    with pytest.raises(Conflict):  # token hashes are unique: a token finds one product
        await stores.products.insert(product("p-9", token_hash="g" * 64))


# -- registrations -----------------------------------------------------------------------------


async def test_registrations_round_trip_every_field(stores: Stores) -> None:
    unclaimed = registration("DEV1", account=None)
    await stores.claims.put(unclaimed)
    assert await stores.claims.get("DEV1") == unclaimed
    full = dataclasses.replace(
        registration("DEV1"),
        state=ClaimState.PROVISIONED,
        certificate_fingerprint="AB" * 32,
        provisions=(T0 + 2.5, T0 + 3.000001),
        version="1.2.3",
        checked="1.2.0",
        test=True,
        generation=7,
    )
    await stores.claims.put(full)  # replaces
    assert await stores.claims.get("DEV1") == full
    assert await stores.claims.get("DEV2") is None


async def test_registrations_found_by_account_in_id_order_both_ways(stores: Stores) -> None:
    ids = ["A1", "B2", "a0", "b-9", "C.3", "z:1"]  # byte order: upper case before lower
    for claim_id in ids:
        await stores.claims.put(registration(claim_id))
    await stores.claims.put(registration("OTHER1", account=OTHER))
    await stores.claims.put(registration("FREE1", account=None))
    await stores.claims.put(registration("PROD2", product_id="p-2"))
    order = sorted([*ids, "PROD2"], key=lambda s: s.encode())

    async def page(**kw: object) -> list[str]:
        found = await stores.claims.find(ACC, **kw)  # type: ignore[arg-type]
        return [r.id for r in found]

    assert await page(limit=100) == order
    assert await page(limit=3) == order[:3]
    assert await page(after=order[2], limit=3) == order[3:6]
    assert await page(before=order[5], limit=3) == order[2:5]  # ascending still
    assert await page(before=order[1], limit=3) == order[:1]
    assert await page(product_id="p-2", limit=10) == ["PROD2"]
    assert await stores.claims.find(OTHER, limit=10) == [registration("OTHER1", account=OTHER)]


# -- device file records -----------------------------------------------------------------------


async def test_file_records_put_get_delete(stores: Stores) -> None:
    one = file("dev-1/a.txt")
    await stores.files.put(one)
    assert await stores.files.get(ACC, "dev-1/a.txt") == one
    assert await stores.files.get(OTHER, "dev-1/a.txt") is None
    newer = dataclasses.replace(one, size=10, md5_hex="1" * 32, content_type=None,
                                modified_at=T0 + 1)  # fmt: skip
    await stores.files.put(newer)  # replaces
    assert await stores.files.get(ACC, "dev-1/a.txt") == newer
    assert await stores.files.delete(ACC, "dev-1/a.txt")
    assert not await stores.files.delete(ACC, "dev-1/a.txt")
    assert await stores.files.get(ACC, "dev-1/a.txt") is None


async def test_file_records_list_in_utf8_byte_order_by_prefix(stores: Stores) -> None:
    keys = ["d/B", "d/a", "d/a/b", "d/é", "d/z", "d/\U0001f600", "d/~", "d0/x", "c/x"]
    for key in keys:
        await stores.files.put(file(key))
    await stores.files.put(file("d/other-account", OTHER))
    in_d = sorted((k for k in keys if k.startswith("d/")), key=lambda s: s.encode())
    listed = await stores.files.scan(ACC, prefix="d/", limit=100)
    assert [f.key for f in listed] == in_d
    assert [f.key for f in await stores.files.scan(ACC, prefix="d/", limit=2)] == in_d[:2]
    after = await stores.files.scan(ACC, prefix="d/", after=in_d[2], limit=100)
    assert [f.key for f in after] == in_d[3:]
    everything = await stores.files.scan(ACC, limit=100)
    assert [f.key for f in everything] == sorted(keys, key=lambda s: s.encode())
    assert await stores.files.scan(ACC, prefix="nothing/", limit=10) == []


async def test_file_records_older_than_oldest_first(stores: Stores) -> None:
    for i, key in enumerate(["d/c", "d/a", "d/b"]):
        await stores.files.put(file(key, modified=T0 + i))
    await stores.files.put(file("d/old", OTHER, modified=T0 - 100))
    old = await stores.files.older_than(ACC, T0 + 2, limit=10)
    assert [f.key for f in old] == ["d/c", "d/a"]
    assert [f.key for f in await stores.files.older_than(ACC, T0 + 9, limit=1)] == ["d/c"]


async def test_file_retention_days_round_trip(stores: Stores) -> None:
    account = Account(ACC, "files", "0ne00000001", T0)
    await stores.accounts.insert(account)
    retention = Retention(telemetry_days=3, events_days=None, files_days=1.5)
    assert await stores.accounts.set_retention(ACC, retention)
    loaded = await stores.accounts.get(ACC)
    assert loaded is not None and loaded.retention == retention


# -- blob stores -------------------------------------------------------------------------------


@pytest.fixture(params=["file", "memory"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return FileBlobStore(tmp_path / "files") if request.param == "file" else MemoryBlobStore()


async def read_all(blobs: BlobStore, bucket: str, key: str) -> bytes | None:
    chunks = await blobs.read(bucket, key)
    if chunks is None:
        return None
    return b"".join([chunk async for chunk in chunks])


async def test_blobs_write_commit_read_delete(blobs: BlobStore) -> None:
    big = bytes(range(256)) * (CHUNK_BYTES // 128 + 3)  # more than two chunks
    writer = blobs.writer(ACC, "dev/../../etc/passwd")
    for start in range(0, len(big), 100_000):
        await writer.write(big[start : start + 100_000])
    assert await read_all(blobs, ACC, "dev/../../etc/passwd") is None  # not before commit
    await writer.commit()
    assert await read_all(blobs, ACC, "dev/../../etc/passwd") == big
    assert await read_all(blobs, OTHER, "dev/../../etc/passwd") is None
    empty = blobs.writer(ACC, "dev/empty")
    await empty.commit()
    assert await read_all(blobs, ACC, "dev/empty") == b""
    assert await blobs.delete(ACC, "dev/../../etc/passwd")
    assert not await blobs.delete(ACC, "dev/../../etc/passwd")
    assert await read_all(blobs, ACC, "dev/../../etc/passwd") is None


async def test_blobs_abort_keeps_the_old_content(blobs: BlobStore) -> None:
    first = blobs.writer(ACC, "dev/a")
    await first.write(b"old")
    await first.commit()
    second = blobs.writer(ACC, "dev/a")
    await second.write(b"new content" * 200_000)
    await second.abort()
    await second.abort()  # twice is fine
    assert await read_all(blobs, ACC, "dev/a") == b"old"
    with pytest.raises(ValueError):
        await second.write(b"x")


async def test_file_blobs_stay_under_the_root(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "files")
    for key in ("../x", "a/../../b", "/etc/passwd", "\x00", "é" * 300):
        writer = store.writer(ACC, key)
        await writer.write(b"1")
        await writer.commit()
        path = store.path_of(ACC, key)
        assert path.is_relative_to(tmp_path / "files" / ACC) and path.read_bytes() == b"1"
    assert not any(p.name != ".partial" for p in (tmp_path / "files" / ACC / ".partial").iterdir())
    with pytest.raises(ValueError):
        store.writer("../etc", "k")
