"""Object stores: an S3-compatible bucket (boto3) and a local folder with the same layout.

Keys are '/'-separated relative paths such as 'xgboost/3/metadata.json'. Every key is
checked before use, so a crafted model type or version can never reach outside the store.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from common.errors import InvalidModelName

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from common.settings import Settings

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_KEY_BYTES = 1024  # S3's own limit: refused here, not by S3 outside the handled path
# An S3 reader fetches this much per ranged GET when read sequentially: few enough
# requests for a large CSV, little enough waste when Parquet seeks between column chunks.
S3_READ_BUFFER_BYTES = 1024 * 1024
_MAX_GET_BYTES = 8 * 1024 * 1024
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class ObjectMissing(KeyError):
    """The key does not exist in the store."""


def check_key(key: str) -> str:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidModelName(
            f"store key of {len(key.encode())} bytes is longer than the limit of "
            f"{MAX_KEY_BYTES} bytes"
        )
    parts = key.split("/")
    for part in parts:
        if not _SEGMENT.fullmatch(part) or ".." in part:
            raise InvalidModelName(f"invalid store key segment {part!r}")
    return key


class ObjectStore(Protocol):
    def get(self, key: str) -> bytes: ...
    def size(self, key: str) -> int: ...
    def open(self, key: str) -> BinaryIO:
        """A read-only, seekable binary file streaming the object (ObjectMissing if absent)."""
        ...

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the object, fewer if it ends sooner."""
        ...

    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def describe(self) -> str: ...
    def location(self, key: str, seconds: int) -> str:
        """Where a reader finds the object: a presigned URL, or a local path."""
        ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidModelName(f"store key {key!r} leaves the store")
        return path

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissing(key)
        return path.stat().st_size

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        _check_range(start, stop)
        with self.open(key) as handle:
            handle.seek(start)
            return handle.read(stop - start)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half an artifact or registry.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def describe(self) -> str:
        return f"local folder {self.root}"

    def location(self, key: str, seconds: int) -> str:
        return self._path(key).as_uri()


class S3Store:
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _key(self, key: str) -> str:
        full = self.prefix + check_key(key)
        if len(full.encode()) > MAX_KEY_BYTES:
            raise InvalidModelName(
                f"store key with its prefix is longer than {MAX_KEY_BYTES} bytes"
            )
        return full

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise ObjectMissing(key) from None
        return bytes(response["Body"].read())

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise ObjectMissing(key) from None
            raise
        return int(head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        # Seekable (Parquet reads its footer first), and each read a ranged GET, so
        # no more than a buffer of the object is ever held.
        raw = _S3RangeReader(self, key, self.size(key))
        return io.BufferedReader(raw, buffer_size=S3_READ_BUFFER_BYTES)

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        from botocore.exceptions import ClientError

        _check_range(start, stop)
        if stop == start:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{stop - 1}"
            )
        except self.client.exceptions.NoSuchKey:
            raise ObjectMissing(key) from None
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":  # start is at or past the end
                return b""
            raise
        if response["ResponseMetadata"]["HTTPStatusCode"] != 206:
            # A server that ignores Range sends the whole object: never read it.
            response["Body"].close()
            raise OSError(f"the store ignored the byte range asked for {key!r}")
        return bytes(response["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + (check_key(prefix.rstrip("/")) + "/" if prefix else "")
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(keys)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def location(self, key: str, seconds: int) -> str:
        # S3 caps presigned URLs at seven days.
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=min(seconds, 7 * 24 * 3600),
            )
        )


class _S3RangeReader(io.RawIOBase):
    """A read-only, seekable view of one S3 object whose every read is a ranged GET."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        super().__init__()
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._size - self._pos, _MAX_GET_BYTES)
        if count <= 0:
            return 0
        data = self._store.read_range(self._key, self._pos, self._pos + count)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _check_range(start: int, stop: int) -> None:
    if not 0 <= start <= stop:
        raise ValueError(f"invalid byte range [{start}, {stop})")


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    credentials: dict[str, str] = {}
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        }
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
        **credentials,
    )


def create_store(settings: Settings) -> ObjectStore:
    if settings.store_backend == "s3":
        return S3Store(s3_client(settings), settings.s3_bucket, settings.s3_prefix)
    return LocalStore(settings.local_store_path)
