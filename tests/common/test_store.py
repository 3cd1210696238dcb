"""LocalStore: round trips, atomic writes, and keys that must never leave the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.errors import InvalidModelName
from common.store import LocalStore, ObjectMissing, check_key


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
    "key", ["registry.json", "xgboost/1/model.ubj", "logistic_regression/12/model.skops",
            "A-b_c.d/v1.0/x"]
)
def test_check_key_accepts_ordinary_keys(key: str) -> None:
    assert check_key(key) == key
