"""`sizes(prefix)`, what GET /uploads lists: every object under a folder-like prefix with
its size, the same from LocalStore and from S3Store (moto's server, over HTTP, with a
bucket prefix and more than one page of listing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.s3_store import S3Store
from common.store import LocalStore, ObjectStore
from tests.common.test_store import make_s3_store

OBJECTS = {
    "uploads/aa/one.csv": b"a,b\n1,2\n",
    "uploads/aa/two.parquet": b"PAR1" * 10,
    "uploads/ab/three.csv": b"x",  # shares the text "uploads/a" with aa, not the folder
    "uploads-not/aa/four.csv": b"yy",
    "registry.json": b"{}",
}


@pytest.fixture(params=["local", "s3"])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    store: ObjectStore
    if request.param == "local":
        store = LocalStore(tmp_path / "store")
    else:
        store = make_s3_store(request.getfixturevalue("s3_endpoint"))
    for key, data in OBJECTS.items():
        store.put(key, data)
    return store


def test_sizes_lists_a_folder_with_each_objects_size(filled: ObjectStore) -> None:
    assert filled.sizes("uploads/aa") == {"uploads/aa/one.csv": 8, "uploads/aa/two.parquet": 40}
    assert filled.sizes("uploads") == {
        "uploads/aa/one.csv": 8,
        "uploads/aa/two.parquet": 40,
        "uploads/ab/three.csv": 1,
    }
    assert filled.sizes("uploads/none") == {}


def test_s3_sizes_reads_every_page(s3_endpoint: str) -> None:
    store: S3Store = make_s3_store(s3_endpoint)
    paged = store.client = PagedClient(store.client)
    for i in range(5):
        store.put(f"uploads/aa/{i}.csv", b"z" * i)

    assert store.sizes("uploads/aa") == {f"uploads/aa/{i}.csv": i for i in range(5)}
    assert paged.pages == 3


class PagedClient:
    """The boto3 client, listing two keys a page (S3 pages at 1,000)."""

    def __init__(self, client: object) -> None:
        self._client = client
        self.pages = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def get_paginator(self, name: str) -> object:
        paginator = self._client.get_paginator(name)  # type: ignore[attr-defined]
        outer = self

        class Paged:
            def paginate(self, **kwargs: object) -> Iterator[object]:
                for page in paginator.paginate(**kwargs, PaginationConfig={"PageSize": 2}):
                    outer.pages += 1
                    yield page

        return Paged()
