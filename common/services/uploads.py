"""Uploads: each key's own input objects, `uploads/<owner>/<name>` in the store, streamed
in (PUT /uploads/{name}, POST /jobs with a CSV or Parquet body), listed and deleted; the
one rule for what a job's `input_object` may name; and where a caller fetches an object
of its own (a presigned URL).

A body is spooled to a temporary file as it arrives (never whole in memory), counted
against the limit, then written to the store in one `put_file`: a body past the limit
leaves nothing in the store, and a re-upload replaces the object only once it is whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from pydantic import BaseModel

from common.errors import (
    BodyTooLarge,
    InvalidInput,
    MalformedBody,
    StoreUnavailable,
    UnsupportedMediaType,
    UploadNotFound,
)
from common.settings import Settings
from common.store import UPLOADS_PREFIX, ObjectMissing, ObjectStore
from common.tenancy import Tenant

T = TypeVar("T")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# Each accepted media type and the one suffix its uploads' names end in (the workers read
# an input object by its suffix: common.job_inputs.input_format).
MEDIA_TYPES = {"text/csv": ".csv", "application/vnd.apache.parquet": ".parquet"}
_NAME = re.compile(NAME_PATTERN)
_OWNER = re.compile(r"^[0-9a-f]{24}$")  # common.tenancy.owner_of: 12 bytes, in hex
# Written to the spool file (off the event loop) in pieces of about this much.
SPOOL_WRITE_BYTES = 1024 * 1024


class UploadInfo(BaseModel):
    input_object: str  # what a job's `input_object` names
    name: str
    owner: str  # the key's digest (an admin's list shows every key's uploads)
    bytes: int
    content_type: str


class UploadList(BaseModel):
    uploads: list[UploadInfo]


@dataclass(frozen=True)
class Stored:
    info: UploadInfo
    sha256: str  # of the body, for a job's Idempotency-Key


def media_type_of(content_type: str) -> str:
    """The body's media type, if it is one an upload takes (415 naming them otherwise)."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"an upload's Content-Type must be one of {', '.join(MEDIA_TYPES)}; "
            f"got {content_type[:100]!r}",
            {"accepted": list(MEDIA_TYPES)},
        )
    return media_type


def check_upload_name(name: str, media_type: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid upload name {name[:200]!r}: use letters, digits, '.', '_' or '-' "
            "(at most 128, starting with a letter or digit, no '..')"
        )
    suffix = MEDIA_TYPES[media_type]
    if not name.endswith(suffix):
        raise InvalidInput(f"the name of a {media_type} upload must end in {suffix!r}: {name!r}")
    return name


def upload_key(owner: str, name: str) -> str:
    return f"{UPLOADS_PREFIX}/{owner}/{name}"


def _media_type_of_name(name: str) -> str | None:
    return next((m for m, suffix in MEDIA_TYPES.items() if name.endswith(suffix)), None)


def _listed(key: str, size: int) -> UploadInfo | None:
    """A listed key as an upload (None for anything that is not one)."""
    parts = key.split("/")
    if len(parts) != 3 or not _OWNER.fullmatch(parts[1]):
        return None
    media_type = _media_type_of_name(parts[2])
    if media_type is None:
        return None
    return UploadInfo(
        input_object=key, name=parts[2], owner=parts[1], bytes=size, content_type=media_type
    )


def named_key(tenant: Tenant, input_object: str) -> str | None:
    """The upload a job's `input_object` names, if it may: `<name>` (the caller's own) or
    `uploads/<owner>/<name>` (the caller's own; any key's, for an admin). Nothing else
    in the store (models, the registry, results) is ever a job's input."""
    parts = input_object.split("/")
    if len(parts) == 1:
        owner, name = tenant.owner, parts[0]
    elif len(parts) == 3 and parts[0] == UPLOADS_PREFIX:
        owner, name = parts[1], parts[2]
    else:
        return None
    valid = _NAME.fullmatch(name) and ".." not in name and _media_type_of_name(name)
    if not valid or not _OWNER.fullmatch(owner) or not tenant.sees(owner):
        return None
    return upload_key(owner, name)


class UploadService:
    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.store = store

    async def put(
        self,
        tenant: Tenant,
        name: str,
        content_type: str,
        body: AsyncIterable[bytes],
        declared_bytes: int | None = None,
        limit: int | None = None,
    ) -> Stored:
        """Store the body as the caller's upload `name`, replacing any of that name."""
        media_type = media_type_of(content_type)
        check_upload_name(name, media_type)
        limit = min(limit or self.settings.upload_max_bytes, self.settings.upload_max_bytes)
        if declared_bytes is not None and declared_bytes > limit:
            raise _too_large(limit, declared_bytes)
        key = upload_key(tenant.owner, name)
        with tempfile.TemporaryFile() as spool:
            size, digest = await _spool(body, spool, limit)
            if size == 0:
                raise MalformedBody("the body is empty; send the file's bytes")
            spool.seek(0)
            await self._call(self.store.put_file, key, spool)
        info = UploadInfo(
            input_object=key, name=name, owner=tenant.owner, bytes=size, content_type=media_type
        )
        return Stored(info, digest)

    async def list(self, tenant: Tenant) -> UploadList:
        """The caller's uploads; every key's, for an admin."""
        prefix = UPLOADS_PREFIX if tenant.admin else f"{UPLOADS_PREFIX}/{tenant.owner}"
        sizes = await self._call(self.store.sizes, prefix)
        found = (_listed(key, size) for key, size in sizes.items())
        return UploadList(uploads=[info for info in found if info is not None])

    async def delete(self, tenant: Tenant, name: str) -> UploadInfo:
        """Delete one of the caller's own uploads, by its name (an admin's: its own too)."""
        key = named_key(tenant, name) if "/" not in name else None
        try:
            info = _listed(key, await self._call(self.store.size, key)) if key else None
        except ObjectMissing:
            info = None
        if key is None or info is None:
            raise _not_found(name)
        await self._call(self.store.delete, key)
        return info

    async def resolve(self, tenant: Tenant, input_object: str) -> str:
        """The store key of the upload a job names, if it is one the caller may read and
        it exists (UploadNotFound otherwise)."""
        key = named_key(tenant, input_object)
        if key is None or not await self._call(self.store.exists, key):
            raise _not_found(input_object)
        return key

    async def discard(self, key: str) -> None:
        """Delete an upload this process stored for a job that was not made."""
        await self._call(self.store.delete, key)

    def presign(self, key: str) -> str:
        """Where the owner of an object fetches it: a presigned URL (S3, valid for
        `presign_seconds`) or a file URI (a local store)."""
        return self.store.location(key, self.settings.presign_seconds)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(function, *args)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"the store failed ({type(exc).__name__})") from exc


async def _spool(body: AsyncIterable[bytes], spool: IO[bytes], limit: int) -> tuple[int, str]:
    """Copy the body to the spool file; its size and sha256 (BodyTooLarge past `limit`)."""
    digest = hashlib.sha256()
    size = 0
    pending = bytearray()
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        pending += chunk
        if len(pending) >= SPOOL_WRITE_BYTES:
            await asyncio.to_thread(_write, spool, digest, pending)
            pending.clear()
    if pending:
        await asyncio.to_thread(_write, spool, digest, pending)
    return size, digest.hexdigest()


def _write(spool: IO[bytes], digest: Any, data: bytearray) -> None:
    digest.update(data)
    spool.write(data)


def _too_large(limit: int, size: int | None = None) -> BodyTooLarge:
    said = f"the body has {size} bytes" if size is not None else "the body exceeds the limit"
    return BodyTooLarge(f"{said}; an upload may have at most {limit} bytes", {"max_bytes": limit})


def _not_found(named: str) -> UploadNotFound:
    return UploadNotFound(
        f"no upload {named[:200]!r} of this key: name one of GET /uploads, as its name or "
        "as uploads/<owner>/<name>"
    )
