"""LocalStore: round trips, atomic writes, and keys that must never leave the root; the
streaming reads (size, open, read_range) of LocalStore and of S3Store on moto's server."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from common.errors import InvalidModelName
from common.s3_store import S3Store
from common.store import MAX_KEY_BYTES, LocalStore, ObjectMissing, check_key


def files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir()}


def test_put_then_get_returns_the_same_bytes(store: LocalStore) -> None:
    payload = bytes(range(256)) * 3

    store.put("xgboost/1/model.ubj", payload)

    assert store.get("xgboost/1/model.ubj") == payload


def test_put_writes_the_file_at_the_key_path(store: LocalStore, store_root: Path) -> None:
    store.put("xgboost/1/metadata.json", b"{}")

    assert (store_root / "xgboost" / "1" / "metadata.json").read_bytes() == b"{}"


def test_put_overwrites_an_existing_key(store: LocalStore) -> None:
    store.put("registry.json", b"old")
    store.put("registry.json", b"new")

    assert store.get("registry.json") == b"new"


def test_list_returns_sorted_keys_and_filters_by_prefix(store: LocalStore) -> None:
    for key in ["b/2/x", "a/1/y", "a/1/x", "registry.json", "ab/1/z"]:
        store.put(key, key.encode())

    assert store.list() == ["a/1/x", "a/1/y", "ab/1/z", "b/2/x", "registry.json"]
    assert store.list("a") == ["a/1/x", "a/1/y"]
    assert store.list("a/") == ["a/1/x", "a/1/y"]
    assert store.list("a/1") == ["a/1/x", "a/1/y"]
    assert store.list("missing") == []


def test_exists_and_delete(store: LocalStore, store_root: Path) -> None:
    store.put("t/1/model.ubj", b"x")
    assert store.exists("t/1/model.ubj") is True

    store.delete("t/1/model.ubj")

    assert store.exists("t/1/model.ubj") is False
    assert not (store_root / "t" / "1" / "model.ubj").exists()
    assert store.list() == []


def test_exists_is_false_for_a_folder(store: LocalStore) -> None:
    store.put("t/1/model.ubj", b"x")

    assert store.exists("t/1") is False


def test_delete_of_a_missing_key_is_a_no_op(store: LocalStore) -> None:
    store.delete("never/1/written")

    assert store.list() == []


def test_get_of_a_missing_key_raises_object_missing(store: LocalStore) -> None:
    with pytest.raises(ObjectMissing) as info:
        store.get("nothing/1/here")

    assert info.value.args == ("nothing/1/here",)
    assert isinstance(info.value, KeyError)


def test_get_of_a_folder_raises_object_missing(store: LocalStore) -> None:
    store.put("t/1/model.ubj", b"x")

    with pytest.raises(ObjectMissing):
        store.get("t/1")


def test_put_leaves_no_temporary_files(store: LocalStore, store_root: Path) -> None:
    for i in range(20):
        store.put("t/1/model.ubj", str(i).encode())
    store.put("registry.json", b"{}")

    assert files_under(store_root) == {"t/1/model.ubj", "registry.json"}
    assert not [p for p in store_root.rglob(".tmp-*")]
    assert store.get("t/1/model.ubj") == b"19"


def test_list_hides_a_leftover_temporary_file(store: LocalStore, store_root: Path) -> None:
    store.put("t/1/model.ubj", b"x")
    (store_root / "t" / "1" / ".tmp-abandoned").write_bytes(b"half")

    assert store.list() == ["t/1/model.ubj"]


def test_a_failed_put_leaves_no_temporary_file(store: LocalStore, store_root: Path) -> None:
    with pytest.raises(TypeError):
        store.put("t/1/model.ubj", "not bytes")  # type: ignore[arg-type]

    assert files_under(store_root) == set()


BAD_KEYS = [
    "..",
    "../outside",
    "../../outside",
    "t/../../outside",
    "t/1/../../../outside",
    "./outside",
    "t/./x",
    "a..b/x",
    "/etc/passwd",
    "/tmp/outside",
    "",
    "/",
    "t//x",
    "t/1/",
    "t\\..\\..\\outside",
    "..\\outside",
    "%2e%2e/outside",
    "t/%2e%2e/%2e%2e/outside",
    "%2E%2E%2Foutside",
    ".hidden",
    "t/-dash-first",
    "t/1/model ubj",
    "t/\x00/x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(InvalidModelName):
        check_key(key)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_put_with_an_unsafe_key_is_refused_and_writes_nothing(
    key: str, tmp_path: Path, store: LocalStore
) -> None:
    before = files_under(tmp_path)

    with pytest.raises(InvalidModelName):
        store.put(key, b"payload")

    assert files_under(tmp_path) == before


def test_an_absolute_key_pointing_into_a_writable_folder_is_refused(
    tmp_path: Path, store: LocalStore
) -> None:
    target = tmp_path / "outside.bin"

    with pytest.raises(InvalidModelName):
        store.put(str(target), b"payload")

    assert not target.exists()


@pytest.mark.parametrize("key", ["../victim", "t/../../victim", "/" + "victim"])
def test_get_exists_delete_list_with_unsafe_keys_are_refused(
    key: str, tmp_path: Path, store: LocalStore
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")

    for call in (store.get, store.exists, store.delete, store.list):
        with pytest.raises(InvalidModelName):
            call(key)

    assert victim.read_bytes() == b"keep me"


def test_a_symlink_inside_the_store_cannot_lead_outside(
    tmp_path: Path, store_root: Path, store: LocalStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, store_root / "link")

    with pytest.raises(InvalidModelName, match="leaves the store"):
        store.put("link/model.ubj", b"payload")
    with pytest.raises(InvalidModelName, match="leaves the store"):
        store.get("link/model.ubj")

    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("key", ["model\n", "t/1\n/model.ubj", "t/1/model.ubj\n"])
def test_check_key_refuses_a_segment_ending_in_newline(key: str) -> None:
    with pytest.raises(InvalidModelName):
        check_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "registry.json",
        "xgboost/1/model.ubj",
        "logistic_regression/12/model.skops",
        "A-b_c.d/v1.0/x",
    ],
)
def test_check_key_accepts_ordinary_keys(key: str) -> None:
    assert check_key(key) == key


def key_of_bytes(length: int) -> str:
    """A valid key of exactly `length` bytes: 100-character segments and a shorter last."""
    parts, left = [], length
    while left > 101:
        parts.append("k" * 100)
        left -= 101
    return "/".join([*parts, "k" * left])


def test_check_key_refuses_a_key_over_s3s_limit_naming_the_limit() -> None:
    key = key_of_bytes(MAX_KEY_BYTES + 1)

    with pytest.raises(InvalidModelName, match=f"longer than the limit of {MAX_KEY_BYTES} bytes"):
        check_key(key)

    assert check_key(key_of_bytes(MAX_KEY_BYTES)) == key_of_bytes(MAX_KEY_BYTES)
    assert len(key_of_bytes(MAX_KEY_BYTES).encode()) == 1024


def test_a_key_over_the_limit_is_refused_by_every_method(store: LocalStore) -> None:
    key = key_of_bytes(2000)

    calls = [store.get, store.size, store.open, store.exists, store.delete]
    for call in calls:
        with pytest.raises(InvalidModelName, match="1024"):
            call(key)
    with pytest.raises(InvalidModelName):
        store.read_range(key, 0, 1)
    with pytest.raises(InvalidModelName):
        store.put(key, b"x")


PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes, every offset's byte known


def test_local_size_open_and_read_range(store: LocalStore) -> None:
    store.put("in/data.bin", PAYLOAD)

    assert store.size("in/data.bin") == len(PAYLOAD)
    with store.open("in/data.bin") as handle:
        assert handle.read(3) == PAYLOAD[:3]
        handle.seek(-5, io.SEEK_END)
        assert handle.read() == PAYLOAD[-5:]
    assert store.read_range("in/data.bin", 300, 310) == PAYLOAD[300:310]
    assert store.read_range("in/data.bin", 10_000, 20_000) == PAYLOAD[10_000:]
    assert store.read_range("in/data.bin", 20_000, 20_001) == b""
    assert store.read_range("in/data.bin", 7, 7) == b""


def test_local_reads_of_a_missing_key_or_a_folder_raise_object_missing(store: LocalStore) -> None:
    store.put("in/data.bin", b"x")

    for key in ["in/none.bin", "in"]:
        with pytest.raises(ObjectMissing):
            store.size(key)
        with pytest.raises(ObjectMissing):
            store.open(key)
        with pytest.raises(ObjectMissing):
            store.read_range(key, 0, 1)


def test_read_range_refuses_a_backwards_range(store: LocalStore) -> None:
    store.put("in/data.bin", b"abc")

    with pytest.raises(ValueError, match="invalid byte range"):
        store.read_range("in/data.bin", 2, 1)


def make_s3_store(endpoint: str, prefix: str = "pre/fix") -> S3Store:
    """A fresh bucket on the test S3 server (moto, over HTTP)."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, prefix)


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3Store:
    return make_s3_store(s3_endpoint)


class CountingClient:
    """The boto3 client, counting its get_object calls (each is one GET)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.ranges: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> Any:
        self.ranges.append(kwargs.get("Range", "all"))
        return self._client.get_object(**kwargs)


def test_s3_size_and_read_range(s3_store: S3Store) -> None:
    s3_store.put("in/data.bin", PAYLOAD)

    assert s3_store.size("in/data.bin") == len(PAYLOAD)
    assert s3_store.read_range("in/data.bin", 0, 1) == PAYLOAD[:1]
    assert s3_store.read_range("in/data.bin", 300, 4_000) == PAYLOAD[300:4_000]
    assert s3_store.read_range("in/data.bin", 10_000, 20_000) == PAYLOAD[10_000:]
    assert s3_store.read_range("in/data.bin", len(PAYLOAD), len(PAYLOAD) + 9) == b""
    assert s3_store.read_range("in/data.bin", 5, 5) == b""


def test_s3_open_is_a_seekable_stream_of_ranged_gets(s3_store: S3Store) -> None:
    s3_store.put("in/data.bin", PAYLOAD)
    counting = CountingClient(s3_store.client)
    s3_store.client = counting

    with s3_store.open("in/data.bin") as handle:
        assert handle.seekable() and handle.readable()
        assert handle.read(10) == PAYLOAD[:10]
        assert handle.seek(-6, io.SEEK_END) == len(PAYLOAD) - 6
        assert handle.read() == PAYLOAD[-6:]
        assert handle.read(5) == b""
        handle.seek(1000)
        assert handle.readline(3) == PAYLOAD[1000:1003]
        assert handle.tell() == 1003

    assert counting.ranges, "no GET was made"
    assert all(r.startswith("bytes=") for r in counting.ranges), counting.ranges
    assert counting.ranges[1] == f"bytes={len(PAYLOAD) - 6}-{len(PAYLOAD) - 1}"


def test_s3_open_reads_a_large_object_in_bounded_gets(s3_store: S3Store) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    s3_store.put("in/big.bin", data)
    counting = CountingClient(s3_store.client)
    s3_store.client = counting

    with s3_store.open("in/big.bin") as handle:
        pieces = iter(lambda: handle.read(100_000), b"")
        assert b"".join(pieces) == data

    assert len(counting.ranges) == 4  # 1 MiB a GET: no GET of the whole object
    assert counting.ranges[0] == f"bytes=0-{1024 * 1024 - 1}"


def test_s3_an_empty_object(s3_store: S3Store) -> None:
    s3_store.put("in/empty.bin", b"")

    assert s3_store.size("in/empty.bin") == 0
    with s3_store.open("in/empty.bin") as handle:
        assert handle.read() == b""
    assert s3_store.read_range("in/empty.bin", 0, 10) == b""


def test_s3_reads_of_a_missing_key_raise_object_missing(s3_store: S3Store) -> None:
    with pytest.raises(ObjectMissing):
        s3_store.size("in/none.bin")
    with pytest.raises(ObjectMissing):
        s3_store.open("in/none.bin")
    with pytest.raises(ObjectMissing):
        s3_store.read_range("in/none.bin", 0, 10)


def test_s3_an_object_deleted_while_open_raises_object_missing(s3_store: S3Store) -> None:
    s3_store.put("in/data.bin", PAYLOAD)
    handle = s3_store.open("in/data.bin")
    s3_store.delete("in/data.bin")

    with pytest.raises(ObjectMissing):
        handle.read(10)


def test_s3_keys_stay_under_the_prefix(s3_store: S3Store) -> None:
    s3_store.put("in/data.bin", b"abc")

    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key="pre/fix/in/data.bin")
    assert head["ContentLength"] == 3


def test_s3_a_key_over_the_limit_with_its_prefix_is_refused(s3_store: S3Store) -> None:
    key = key_of_bytes(MAX_KEY_BYTES - 3)  # valid alone, too long after "pre/fix/"
    assert check_key(key) == key

    with pytest.raises(InvalidModelName, match="1024"):
        s3_store.size(key)
    with pytest.raises(InvalidModelName, match="1024"):
        s3_store.put(key, b"x")
