"""UploadService on a real local store (files under tmp_path): what a job's input_object
may name, the name and media-type rules, streaming in under the limit, and each key
seeing only its own uploads; and the model types the shared bucket reserves."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from common.errors import (
    BodyTooLarge,
    InvalidInput,
    InvalidModelName,
    MalformedBody,
    UnsupportedMediaType,
    UploadNotFound,
)
from common.registry import Registry
from common.services.uploads import (
    UploadService,
    check_upload_name,
    media_type_of,
    named_key,
)
from common.settings import Settings
from common.store import LocalStore
from common.tenancy import Tenant, owner_of
from tests.common.conftest import MetaFactory

A, B = Tenant(owner_of("key-a-for-the-tests")), Tenant(owner_of("key-b-for-the-tests"))
ADMIN = Tenant(owner_of("admin-key-for-tests"), admin=True)


def service(root: Path, limit: int = 1000) -> UploadService:
    settings = Settings(local_store_path=root, upload_max_bytes=limit)
    return UploadService(settings, LocalStore(root))


async def chunks(pieces: Iterable[bytes], read: list[int] | None = None) -> AsyncIterator[bytes]:
    for piece in pieces:
        if read is not None:
            read.append(len(piece))
        yield piece


def put(uploads: UploadService, tenant: Tenant, name: str, data: bytes, **options: Any) -> Any:
    ctype = options.pop("content_type", "text/csv")
    body = chunks([data[i : i + 7] for i in range(0, len(data), 7)])
    return asyncio.run(uploads.put(tenant, name, ctype, body, **options))


@pytest.mark.parametrize(
    ("named", "tenant", "expected"),
    [
        ("in.csv", A, f"uploads/{A.owner}/in.csv"),
        ("in.parquet", A, f"uploads/{A.owner}/in.parquet"),
        (f"uploads/{A.owner}/in.csv", A, f"uploads/{A.owner}/in.csv"),
        (f"uploads/{A.owner}/in.csv", B, None),  # another key's
        (f"uploads/{A.owner}/in.csv", ADMIN, f"uploads/{A.owner}/in.csv"),
        ("in.csv", ADMIN, f"uploads/{ADMIN.owner}/in.csv"),  # bare: the caller's own
        ("registry.json", ADMIN, None),
        ("xgboost/1/metadata.json", ADMIN, None),
        ("results/0123456789abcdef.csv", ADMIN, None),
        ("../x.csv", A, None),
        ("a..csv", A, None),
        (f"uploads/{B.owner}/../{A.owner}/in.csv", ADMIN, None),
        (f"uploads/{A.owner}/sub/in.csv", A, None),
        ("uploads/NOT-AN-OWNER/in.csv", ADMIN, None),
        (f"uploads/{A.owner}/in.txt", A, None),
        ("", A, None),
    ],
)
def test_what_a_jobs_input_object_may_name(named: str, tenant: Tenant, expected: str) -> None:
    assert named_key(tenant, named) == expected


def test_media_types_are_csv_and_parquet_and_a_refusal_names_both() -> None:
    assert media_type_of("text/csv; charset=utf-8") == "text/csv"
    assert media_type_of("Application/Vnd.Apache.Parquet") == "application/vnd.apache.parquet"
    for refused in ("", "application/json", "text/plain", "text/csv2"):
        with pytest.raises(UnsupportedMediaType) as info:
            media_type_of(refused)
        assert info.value.details == {"accepted": ["text/csv", "application/vnd.apache.parquet"]}
        assert "text/csv, application/vnd.apache.parquet" in info.value.message


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("in.parquet", "text/csv"),
        ("in.csv", "application/vnd.apache.parquet"),
        ("in", "text/csv"),
        (".in.csv", "text/csv"),
        ("a..csv", "text/csv"),
        ("a/b.csv", "text/csv"),
        ("x" * 125 + ".csv", "text/csv"),  # 129 characters
    ],
)
def test_an_upload_name_is_safe_and_ends_as_its_media_type(name: str, media_type: str) -> None:
    with pytest.raises(InvalidInput):
        check_upload_name(name, media_type)


def test_a_body_is_streamed_into_the_callers_own_prefix(tmp_path: Path) -> None:
    uploads = service(tmp_path)
    data = b"alpha,beta\n" + b"1,2\n" * 50

    stored = put(uploads, A, "in.csv", data)

    assert stored.info.input_object == f"uploads/{A.owner}/in.csv"
    assert (stored.info.bytes, stored.info.owner, stored.info.content_type) == (
        len(data),
        A.owner,
        "text/csv",
    )
    assert (tmp_path / "uploads" / A.owner / "in.csv").read_bytes() == data
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


def test_past_the_limit_nothing_is_stored_and_an_earlier_upload_stays(tmp_path: Path) -> None:
    uploads = service(tmp_path, limit=100)
    put(uploads, A, "in.csv", b"a\n" * 50)  # exactly the limit

    with pytest.raises(BodyTooLarge, match="at most 100 bytes"):
        put(uploads, A, "in.csv", b"b\n" * 51)
    with pytest.raises(BodyTooLarge):
        put(uploads, A, "new.csv", b"b\n" * 51)

    assert LocalStore(tmp_path).list() == [f"uploads/{A.owner}/in.csv"]
    assert (tmp_path / "uploads" / A.owner / "in.csv").read_bytes() == b"a\n" * 50


def test_a_declared_length_past_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    uploads = service(tmp_path, limit=100)
    read: list[int] = []
    body = chunks([b"x" * 10] * 20, read)

    with pytest.raises(BodyTooLarge):
        asyncio.run(uploads.put(A, "in.csv", "text/csv", body, declared_bytes=200))
    assert read == []


def test_an_empty_body_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedBody):
        put(service(tmp_path), A, "in.csv", b"")
    assert LocalStore(tmp_path).list() == []


def test_each_key_lists_and_deletes_its_own_and_an_admin_lists_all(tmp_path: Path) -> None:
    uploads = service(tmp_path)
    put(uploads, A, "a.csv", b"a\n1\n")
    put(uploads, B, "b.parquet", b"PAR1", content_type="application/vnd.apache.parquet")
    LocalStore(tmp_path).put("registry.json", b"{}")  # the models' files are no upload

    def names(tenant: Tenant) -> list[tuple[str, str]]:
        listing = asyncio.run(uploads.list(tenant)).uploads
        return [(u.owner, u.name) for u in listing]

    assert names(A) == [(A.owner, "a.csv")]
    assert names(B) == [(B.owner, "b.parquet")]
    assert sorted(names(ADMIN)) == sorted([(A.owner, "a.csv"), (B.owner, "b.parquet")])
    with pytest.raises(UploadNotFound):
        asyncio.run(uploads.delete(B, "a.csv"))
    assert asyncio.run(uploads.delete(A, "a.csv")).bytes == 4
    with pytest.raises(UploadNotFound):
        asyncio.run(uploads.delete(A, "a.csv"))
    assert names(ADMIN) == [(B.owner, "b.parquet")]


def test_resolve_checks_the_name_the_tenant_and_that_it_exists(tmp_path: Path) -> None:
    uploads = service(tmp_path)
    put(uploads, A, "a.csv", b"a\n1\n")

    assert asyncio.run(uploads.resolve(A, "a.csv")) == f"uploads/{A.owner}/a.csv"
    assert asyncio.run(uploads.resolve(ADMIN, f"uploads/{A.owner}/a.csv")).endswith("/a.csv")
    for tenant, named in [(B, f"uploads/{A.owner}/a.csv"), (B, "a.csv"), (A, "absent.csv")]:
        with pytest.raises(UploadNotFound, match="of this key"):
            asyncio.run(uploads.resolve(tenant, named))


@pytest.mark.parametrize("model_type", ["uploads", "results", "Uploads"])
def test_no_model_type_takes_a_reserved_name(
    registry: Registry, meta_fields: MetaFactory, model_type: str
) -> None:
    with pytest.raises(InvalidModelName, match="reserved"):
        registry.publish(meta_fields(model_type), b"artifact")
    assert registry.store.list() == []
