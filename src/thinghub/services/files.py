"""Device files: signed URLs and temporary credentials, and the files they reach.

Theory of operation
-------------------
A device's files live in its account's bucket under ``{device id}/`` (domain.device_files):
the bytes in the BlobStore, a record (size, MD5, type, time) in `stores.files`. A device
reaches them two ways, both over thinghub's S3-compatible endpoint (faces/ioto):

- ``getSignedUrl``: a presigned URL for one action on one file, expiring (for a PUT, of the
  declared size and type);
- ``getCreds``: temporary credentials (access key, secret, session token) for any of its own
  files, which an unmodified AWS SDK signs requests with.

Both are a grant inside a session token (security.aws_credentials): nothing is stored per
credential. `authenticate` checks a signed request: the token's MAC and expiry, that it was
issued during the device's current claim (a release voids it), and the SigV4 signature.
Each file operation then checks the grant (`FileGrant.check`) before it touches anything.

Uploads stream to the blob store and become visible only once complete: the size is checked
against the grant and `max_file_bytes` while the bytes arrive, and the record is written
after the blob committed. Files age out with the account's retention for files (`purge`),
and go when their device is released (`delete_device`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

from thinghub.domain import claims
from thinghub.domain.claims import Registration
from thinghub.domain.device_files import (
    DeviceFile,
    FileAction,
    FileGrant,
    parse_filename,
)
from thinghub.domain.errors import Invalid, NotFound, TooLarge
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.ports import BlobStore, Clock, Stores
from thinghub.security import sigv4
from thinghub.security.aws_credentials import (
    CredentialError,
    CredentialIssuer,
    OpenedCredentials,
    TemporaryCredentials,
)
from thinghub.services.authz import authorize
from thinghub.services.claims import ClaimService
from thinghub.services.master_key import load_master_key
from thinghub.services.registry import Registry

__all__ = ["ALL_ACTIONS", "S3_MOUNT", "FileService"]

logger = logging.getLogger(__name__)

# Where the S3-compatible endpoint is mounted on the HTTP port (faces/ioto).
S3_MOUNT = "/ioto/s3"
ALL_ACTIONS = frozenset(FileAction)
_METHODS = {FileAction.GET: "GET", FileAction.PUT: "PUT", FileAction.DELETE: "DELETE"}
# Records read per step when the files of a device are deleted.
DELETE_BATCH = 1000
REVOKED = "AccessDenied"


class FileService:
    def __init__(
        self,
        stores: Stores,
        blobs: BlobStore,
        clock: Clock,
        *,
        claims: ClaimService,
        registry: Registry,
        region: str,
        credentials_ttl_s: float,
        signed_url_ttl_s: float,
        max_file_bytes: int,
    ) -> None:
        self.stores = stores
        self.blobs = blobs
        self.clock = clock
        self.claims = claims
        self.registry = registry
        self.region = region
        self.credentials_ttl_s = credentials_ttl_s
        self.signed_url_ttl_s = signed_url_ttl_s
        self.max_file_bytes = max_file_bytes
        self.s3_url = S3_MOUNT
        self._issuer: CredentialIssuer | None = None
        claims.on_released.append(self.delete_device)

    async def start(self) -> None:
        self._issuer = CredentialIssuer(await load_master_key(self.stores, self.clock))

    def bind(self, *, base_url: str) -> None:
        """The server's base URL (scheme, host, port), which signed URLs point at."""
        self.s3_url = base_url.rstrip("/") + S3_MOUNT

    @property
    def issuer(self) -> CredentialIssuer:
        if self._issuer is None:
            raise RuntimeError("FileService.start() was not called")
        return self._issuer

    # -- what devices ask for -----------------------------------------------------------------

    def credentials(self, device: Registration) -> TemporaryCredentials:
        """getCreds: credentials for any of the device's own files, for credentials_ttl_s."""
        grant = self._grant(device, ALL_ACTIONS, self.credentials_ttl_s)
        return self.issuer.issue(grant, region=self.region, now=self.clock.now())

    def signed_url(
        self,
        device: Registration,
        *,
        action: Literal[FileAction.GET, FileAction.PUT, FileAction.DELETE],
        filename: str,
        mime_type: str | None = None,
        size: int | None = None,
    ) -> str:
        """getSignedUrl: a presigned URL for one action on one of the device's files.

        A PUT URL takes exactly `size` bytes (and `mime_type`, if given, is the stored type).

        Raises:
            Invalid: a bad file name, or a PUT without a size.
            TooLarge: `size` over max_file_bytes.
        """
        filename = parse_filename(filename, device_id=device.id)
        if action is FileAction.PUT:
            if size is None:
                raise Invalid("size is required for put", field="size")
            if size > self.max_file_bytes:
                raise TooLarge(
                    f"size {size} is over the limit of {self.max_file_bytes} bytes", field="size"
                )
        else:
            size = mime_type = None
        now = self.clock.now()
        ttl = int(self.signed_url_ttl_s)
        grant = self._grant(device, frozenset({action}), ttl)
        key = grant.key_for(filename)
        grant = FileGrant(
            grant.account_id, grant.device_id, grant.actions, grant.expires_at, key, size, mime_type
        )
        creds = self.issuer.issue(grant, region=self.region, now=now)
        return sigv4.presign_url(
            method=_METHODS[action],
            url=f"{self.s3_url}/{grant.bucket}/{sigv4.uri_encode(key, keep_slash=True)}",
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            region=self.region,
            now=now,
            expires_s=ttl,
            session_token=creds.session_token,
        )

    def _grant(self, device: Registration, actions: frozenset[FileAction], ttl: float) -> FileGrant:
        if device.account_id is None:
            raise NotFound(f"device {device.id!r} is not claimed", field="id")
        return FileGrant(device.account_id, device.id, actions, int(self.clock.now() + ttl))

    # -- the S3-compatible endpoint ------------------------------------------------------------

    async def authenticate(self, signed: sigv4.SignedRequest) -> OpenedCredentials:
        """Check a parsed SigV4 request: its credentials, their claim, its signature.

        Raises:
            CredentialError: a missing, forged or expired session token, or credentials of a
                claim that ended (code AccessDenied).
            SigV4Error: a wrong region or service, a stale time, a bad signature.
        """
        now = self.clock.now()
        opened = self.issuer.open(signed.access_key_id, signed.session_token, now=now)
        grant = opened.grant
        current = await self.claims.registration(grant.device_id)
        if not claims.accepts_credentials(
            current, account_id=grant.account_id, issued_at=opened.issued_at
        ):
            raise CredentialError(REVOKED, "the credentials were revoked (the device was released)")
        sigv4.verify(signed, opened.secret_access_key, now=now, region=self.region)
        return opened

    def check(self, grant: FileGrant, action: FileAction, bucket: str, key: str) -> str:
        """Allow `action` on `key` (for LIST, the prefix) under `grant`; returns the file name
        below the device's folder (for LIST, the prefix below it).

        Raises:
            Forbidden: outside the grant.
            Invalid: a key the file rules refuse (an empty, `.` or `..` segment...).
        """
        grant.check(action, bucket=bucket, key=key, now=self.clock.now())
        rest = key[len(grant.prefix) :]
        if action is not FileAction.LIST:
            parse_filename(rest, device_id=grant.device_id, field="key")
        return rest

    async def put(
        self,
        grant: FileGrant,
        bucket: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_length: int | None,
        content_type: str | None,
    ) -> DeviceFile:
        """Store an upload; it replaces the file only once every byte arrived and checked.

        Raises:
            Forbidden, Invalid: see `check`; a length or type the grant refuses.
            TooLarge: more than the grant's size or max_file_bytes.
        """
        self.check(grant, FileAction.PUT, bucket, key)
        limit = self.max_file_bytes if grant.size is None else min(grant.size, self.max_file_bytes)
        if content_length is not None and content_length > limit:
            raise TooLarge(
                f"Content-Length {content_length} is over the limit of {limit} bytes",
                field="Content-Length",
            )
        stored_type = grant.check_upload(content_length=content_length, content_type=content_type)
        writer = self.blobs.writer(bucket, key)
        md5 = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise TooLarge(f"the upload is over {limit} bytes", field="Content-Length")
                md5.update(chunk)
                await writer.write(chunk)
            if content_length is not None and received != content_length:
                raise Invalid(
                    f"received {received} bytes, Content-Length said {content_length}",
                    field="Content-Length",
                )
            grant.check_received(received)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        record = DeviceFile(
            bucket, key, grant.device_id, received, md5.hexdigest(), stored_type, self.clock.now()
        )
        await self.stores.files.put(record)
        logger.info("device %s stored file %r (%d bytes)", grant.device_id, key, received)
        return record

    async def head(self, grant: FileGrant, bucket: str, key: str) -> DeviceFile:
        """The record of a file the grant may read.

        Raises:
            NotFound: no such file.
        """
        self.check(grant, FileAction.GET, bucket, key)
        record = await self.stores.files.get(bucket, key)
        if record is None:
            raise NotFound(f"no file {key!r}", field="key")
        return record

    async def get(
        self, grant: FileGrant, bucket: str, key: str
    ) -> tuple[DeviceFile, AsyncIterator[bytes]]:
        """A file's record and content.

        Raises:
            NotFound: no such file.
        """
        record = await self.head(grant, bucket, key)
        chunks = await self.blobs.read(bucket, key)
        if chunks is None:
            raise NotFound(f"no file {key!r}", field="key")
        return record, chunks

    async def delete(self, grant: FileGrant, bucket: str, key: str) -> bool:
        """Delete a file (S3 answers the same whether it existed or not)."""
        self.check(grant, FileAction.DELETE, bucket, key)
        return await self._delete(bucket, key)

    async def _delete(self, bucket: str, key: str) -> bool:
        # The record first: a blob without a record is unreachable, never the reverse.
        existed = await self.stores.files.delete(bucket, key)
        await self.blobs.delete(bucket, key)
        return existed

    async def list_keys(
        self, grant: FileGrant, bucket: str, *, prefix: str, after: str, limit: int
    ) -> list[DeviceFile]:
        """Records under `prefix` (inside the device's folder), after `after`, key order."""
        self.check(grant, FileAction.LIST, bucket, prefix)
        return await self.stores.files.scan(bucket, prefix=prefix, after=after, limit=limit)

    def check_bucket(self, grant: FileGrant, bucket: str) -> None:
        """HeadBucket: the grant's own bucket only.

        Raises:
            Forbidden: another bucket, or an expired grant.
        """
        grant.check(FileAction.LIST, bucket=bucket, key=grant.prefix, now=self.clock.now())

    # -- /v1: an account's view of its devices' files ------------------------------------------

    async def list_device_files(
        self, principal: Principal, device_id: str, *, after: str = "", limit: int
    ) -> list[DeviceFile]:
        device = await self.registry.get_device(principal, device_id)
        prefix = f"{device.id}/"
        return await self.stores.files.scan(
            device.account_id, prefix=prefix, after=prefix + after if after else "", limit=limit
        )

    async def read_device_file(
        self, principal: Principal, device_id: str, filename: str
    ) -> tuple[DeviceFile, AsyncIterator[bytes]]:
        device = await self.registry.get_device(principal, device_id)
        filename = parse_filename(filename, device_id=device.id, field="name")
        key = f"{device.id}/{filename}"
        record = await self.stores.files.get(device.account_id, key)
        chunks = None if record is None else await self.blobs.read(device.account_id, key)
        if record is None or chunks is None:
            raise NotFound(f"device {device.id!r} has no file {filename!r}", field="name")
        return record, chunks

    async def delete_device_file(self, principal: Principal, device_id: str, filename: str) -> None:
        authorize(principal, Permission.DEVICES_WRITE)
        device = await self.registry.get_device(principal, device_id)
        filename = parse_filename(filename, device_id=device.id, field="name")
        if not await self._delete(device.account_id, f"{device.id}/{filename}"):
            raise NotFound(f"device {device.id!r} has no file {filename!r}", field="name")

    # -- lifecycle -----------------------------------------------------------------------------

    async def delete_device(self, account_id: str, device_id: str) -> None:
        """Delete every file of a device (it was released)."""
        prefix = f"{device_id}/"
        count = 0
        while batch := await self.stores.files.scan(account_id, prefix=prefix, limit=DELETE_BATCH):
            for record in batch:
                await self._delete(account_id, record.key)
            count += len(batch)
        if count:
            logger.info("device %s: %d files deleted", device_id, count)

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        """Delete the account's files last written before `before`, oldest first."""
        total = 0
        while True:
            batch = await self.stores.files.older_than(account_id, before, batch_rows)
            for record in batch:
                await self._delete(account_id, record.key)
            total += len(batch)
            if len(batch) < batch_rows:
                return total
