"""The S3-compatible store (boto3): any S3 server, with ranged, seekable reads."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, BinaryIO

from common.errors import InvalidModelName
from common.store import MAX_KEY_BYTES, ObjectMissing, check_key, check_range

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from common.settings import Settings

# An S3 reader fetches this much per ranged GET when read sequentially: few enough
# requests for a large CSV, little enough waste when Parquet seeks between column chunks.
S3_READ_BUFFER_BYTES = 1024 * 1024
_MAX_GET_BYTES = 8 * 1024 * 1024
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


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

        check_range(start, stop)
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

    def put_file(self, key: str, stream: BinaryIO) -> None:
        from boto3.s3.transfer import TransferConfig

        # boto3's managed upload, multipart past 8 MiB; without threads, one part in
        # memory at a time (its default, 10 threads, holds up to ten).
        config = TransferConfig(use_threads=False)
        self.client.upload_fileobj(stream, self.bucket, self._key(key), Config=config)

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
        return sorted(self._listing(prefix))

    def sizes(self, prefix: str) -> dict[str, int]:
        return dict(sorted(self._listing(prefix).items()))

    def _listing(self, prefix: str) -> dict[str, int]:
        full = self.prefix + (check_key(prefix.rstrip("/")) + "/" if prefix else "")
        found: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                found[item["Key"][len(self.prefix) :]] = int(item["Size"])
        return found

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
