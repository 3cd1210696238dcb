"""Object stores: a local folder here, an S3-compatible bucket in `common.s3_store`, with
one layout and one small interface.

Keys are '/'-separated relative paths such as 'xgboost/3/metadata.json'. Every key is
checked before use, so a crafted model type or version can never reach outside the store.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from common.errors import InvalidModelName

if TYPE_CHECKING:
    from common.settings import Settings

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_KEY_BYTES = 1024  # S3's own limit: refused here, not by S3 outside the handled path
# The model store shares its bucket with the callers' objects, under these two names
# (which no model type may take): `uploads/<owner>/<name>`, `results/<job_id>.<ext>`.
UPLOADS_PREFIX = "uploads"
RESULTS_PREFIX = "results"


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
    def put_file(self, key: str, stream: BinaryIO) -> None:
        """Write an object from a file read from its start, never whole in memory."""
        ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under the prefix (a folder: whole segments), with its size in bytes."""
        ...

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
        check_range(start, stop)
        with self.open(key) as handle:
            handle.seek(start)
            return handle.read(stop - start)

    def put(self, key: str, data: bytes) -> None:
        self.put_file(key, io.BytesIO(data))

    def put_file(self, key: str, stream: BinaryIO) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half an artifact or registry.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(stream, handle)
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

    def sizes(self, prefix: str) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for key in self.list(prefix):
            try:
                sizes[key] = (self.root / key).stat().st_size
            except FileNotFoundError:
                continue  # deleted since it was listed
        return sizes

    def describe(self) -> str:
        return f"local folder {self.root}"

    def location(self, key: str, seconds: int) -> str:
        return self._path(key).as_uri()


def check_range(start: int, stop: int) -> None:
    if not 0 <= start <= stop:
        raise ValueError(f"invalid byte range [{start}, {stop})")


def create_store(settings: Settings) -> ObjectStore:
    if settings.store_backend == "s3":
        from common.s3_store import S3Store, s3_client

        return S3Store(s3_client(settings), settings.s3_bucket, settings.s3_prefix)
    return LocalStore(settings.local_store_path)
