"""Registry and Catalog: versions, immutability, activation rules, resolution, integrity."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.errors import (
    ArtifactRejected,
    InvalidModelName,
    ModelNotFound,
    ModelUnavailable,
    PublishError,
)
from common.registry import REGISTRY_KEY, ModelMetadata, ModelRef, Registry, check_name

ARTIFACT_1 = b"fake xgboost artifact one"
ARTIFACT_2 = b"fake xgboost artifact two"


def read_json(path: Path) -> dict:
    return json.loads(path.read_bytes())


# --- publish -----------------------------------------------------------------------------


def test_publish_assigns_versions_1_2_3_per_type(registry: Registry, meta_fields) -> None:
    versions = [registry.publish(meta_fields(), ARTIFACT_1).version for _ in range(3)]
    other = registry.publish(meta_fields("logistic_regression"), ARTIFACT_2).version

    assert versions == ["1", "2", "3"]
    assert other == "1"


def test_next_version_follows_the_highest_numeric_version(registry: Registry,
                                                           meta_fields) -> None:
    registry.publish(meta_fields(version="7"), ARTIFACT_1)
    registry.publish(meta_fields(version="v-named"), ARTIFACT_1)

    assert registry.publish(meta_fields(), ARTIFACT_2).version == "8"


def test_publish_writes_artifact_and_metadata_with_its_sha256(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    meta = registry.publish(meta_fields(), ARTIFACT_1)

    expected = hashlib.sha256(ARTIFACT_1).hexdigest()
    assert meta.sha256 == expected
    assert (store_root / "xgboost" / "1" / "model.ubj").read_bytes() == ARTIFACT_1
    on_disk = read_json(store_root / "xgboost" / "1" / "metadata.json")
    assert on_disk["sha256"] == expected
    assert on_disk["version"] == "1"
    assert on_disk["model_type"] == "xgboost"
    assert on_disk["artifact_deleted_at"] is None
    assert [f["name"] for f in on_disk["features"]] == ["alpha", "beta"]
    assert on_disk["classes"] == ["a", "b"]


def test_publish_ignores_a_caller_supplied_sha256(registry: Registry, meta_fields) -> None:
    meta = registry.publish(meta_fields(sha256="0" * 64), ARTIFACT_1)

    assert meta.sha256 == hashlib.sha256(ARTIFACT_1).hexdigest()


def test_publishing_an_existing_version_raises_and_keeps_the_original(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    before = (store_root / "xgboost" / "1" / "metadata.json").read_bytes()

    with pytest.raises(PublishError, match="immutable"):
        registry.publish(meta_fields(version="1"), ARTIFACT_2)

    assert (store_root / "xgboost" / "1" / "model.ubj").read_bytes() == ARTIFACT_1
    assert (store_root / "xgboost" / "1" / "metadata.json").read_bytes() == before
    assert registry.metadata("xgboost", "1").sha256 == hashlib.sha256(ARTIFACT_1).hexdigest()


def test_publish_with_invalid_metadata_raises_and_writes_nothing(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    with pytest.raises(PublishError, match="invalid metadata"):
        registry.publish(meta_fields(classes=["only-one"]), ARTIFACT_1)

    assert list(store_root.rglob("*")) == []


@pytest.mark.parametrize("bad", ["../evil", "a/b", "..", "", "x" * 65, "-lead", "a..b"])
def test_publish_with_an_unsafe_model_type_is_refused(
    registry: Registry, tmp_path: Path, meta_fields, bad: str
) -> None:
    with pytest.raises(InvalidModelName):
        registry.publish(meta_fields(bad), ARTIFACT_1)

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("bad", ["../1", "1/2", ".."])
def test_publish_with_an_unsafe_version_is_refused(
    registry: Registry, tmp_path: Path, meta_fields, bad: str
) -> None:
    with pytest.raises(InvalidModelName):
        registry.publish(meta_fields(version=bad), ARTIFACT_1)

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_check_name_refuses_a_trailing_newline() -> None:
    with pytest.raises(InvalidModelName):
        check_name("xgboost\n", "model type")


def test_publish_without_activate_leaves_no_active_model(registry: Registry,
                                                          meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)

    state = registry.state()
    assert state.active is None
    assert state.active_by_type == {}


# --- activate ----------------------------------------------------------------------------


def test_first_activation_becomes_the_default(registry: Registry, meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)

    state = registry.activate("xgboost", "1")

    assert state.active == ModelRef(model_type="xgboost", version="1")
    assert state.active_by_type == {"xgboost": "1"}
    assert registry.state() == state


def test_activate_persists_registry_json(registry: Registry, store_root: Path,
                                         meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    registry.activate("xgboost", "1")

    on_disk = read_json(store_root / REGISTRY_KEY)
    assert on_disk == {"active": {"model_type": "xgboost", "version": "1"},
                       "active_by_type": {"xgboost": "1"}}


def test_activating_another_type_keeps_the_default(registry: Registry, meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2)

    state = registry.activate("logistic_regression", "1")

    assert state.active == ModelRef(model_type="xgboost", version="1")
    assert state.active_by_type == {"xgboost": "1", "logistic_regression": "1"}


def test_activating_another_version_of_the_default_type_moves_the_default(
    registry: Registry, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2, activate=True)
    registry.publish(meta_fields(), ARTIFACT_2)

    state = registry.activate("xgboost", "2")

    assert state.active == ModelRef(model_type="xgboost", version="2")
    assert state.active_by_type == {"xgboost": "2", "logistic_regression": "1"}


def test_make_default_moves_the_default_to_another_type(registry: Registry,
                                                        meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2)

    state = registry.activate("logistic_regression", "1", make_default=True)

    assert state.active == ModelRef(model_type="logistic_regression", version="1")
    assert state.active_by_type == {"xgboost": "1", "logistic_regression": "1"}


def test_publish_with_make_default_activates_and_moves_the_default(
    registry: Registry, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2, make_default=True)

    state = registry.state()
    assert state.active == ModelRef(model_type="logistic_regression", version="1")
    assert state.active_by_type["logistic_regression"] == "1"


def test_activating_an_unknown_version_raises_model_not_found(registry: Registry,
                                                              meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)

    with pytest.raises(ModelNotFound, match="'xgboost' version '9'"):
        registry.activate("xgboost", "9")

    assert registry.state().active is None


# --- catalog and resolve -----------------------------------------------------------------


def test_catalog_lists_versions_oldest_first(registry: Registry, meta_fields) -> None:
    for _ in range(3):
        registry.publish(meta_fields(), ARTIFACT_1)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2)

    assert registry.catalog().available() == {
        "logistic_regression": ["1"],
        "xgboost": ["1", "2", "3"],
    }


def test_a_callers_upload_named_metadata_json_is_no_model(registry: Registry, meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    # uploads/<owner>/<name> has the shape of <type>/<version>/metadata.json
    registry.store.put("uploads/0123abcd/metadata.json", b"not metadata at all")
    registry.store.put("results/0123abcd/metadata.json", b"{}")
    assert registry.catalog().available() == {"xgboost": ["1"]}


def test_resolve_without_arguments_gives_the_default_model(registry: Registry,
                                                           meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2, make_default=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_1)  # newer, not active

    meta = registry.catalog().resolve()

    assert (meta.model_type, meta.version) == ("logistic_regression", "1")


def test_resolve_a_type_gives_its_active_version_not_the_newest(
    registry: Registry, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    registry.publish(meta_fields(), ARTIFACT_2)
    registry.publish(meta_fields(), ARTIFACT_2)
    registry.activate("xgboost", "2")

    assert registry.catalog().resolve("xgboost").version == "2"


def test_resolve_a_type_without_active_version_gives_the_newest(
    registry: Registry, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_1)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2)

    assert registry.catalog().resolve("logistic_regression").version == "2"


def test_resolve_an_explicit_version(registry: Registry, meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields(), ARTIFACT_2)

    meta = registry.catalog().resolve("xgboost", "1")

    assert meta.version == "1"
    assert meta.sha256 == hashlib.sha256(ARTIFACT_1).hexdigest()


def test_newest_is_by_creation_time(registry: Registry, meta_fields) -> None:
    registry.publish(meta_fields(version="10", created_at=datetime(2024, 1, 1, tzinfo=UTC)),
                     ARTIFACT_1)
    registry.publish(meta_fields(version="2", created_at=datetime(2025, 1, 1, tzinfo=UTC)),
                     ARTIFACT_2)

    catalog = registry.catalog()
    assert catalog.available() == {"xgboost": ["10", "2"]}
    assert catalog.resolve("xgboost").version == "2"


def test_resolve_with_no_default_raises_model_not_found_listing_models(
    registry: Registry, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)

    with pytest.raises(ModelNotFound, match="no active model") as info:
        registry.catalog().resolve()

    assert info.value.details == {"available": {"xgboost": ["1"]}}


def test_resolve_an_unknown_type_lists_the_known_types(registry: Registry,
                                                       meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_1)

    with pytest.raises(ModelNotFound) as info:
        registry.catalog().resolve("random_forest")

    assert info.value.message == (
        "unknown model type 'random_forest'; available: ['logistic_regression', 'xgboost']"
    )
    assert info.value.details == {
        "available": {"logistic_regression": ["1"], "xgboost": ["1"]}
    }


def test_resolve_in_an_empty_registry_says_none_available(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="available: none"):
        registry.catalog().resolve("xgboost")


def test_resolve_an_unknown_version_lists_the_known_versions(registry: Registry,
                                                             meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    registry.publish(meta_fields(), ARTIFACT_2)

    with pytest.raises(ModelNotFound) as info:
        registry.catalog().resolve("xgboost", "5")

    assert info.value.message == (
        "unknown version or alias '5' of 'xgboost'; versions: ['1', '2'], aliases: ['champion']"
    )


def test_metadata_of_an_unknown_model_raises_model_not_found(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="unknown model 'xgboost' version '1'"):
        registry.metadata("xgboost", "1")


# --- artifacts: integrity and deletion ---------------------------------------------------


def test_read_artifact_returns_the_published_bytes(registry: Registry, meta_fields) -> None:
    meta = registry.publish(meta_fields(), ARTIFACT_1)

    assert registry.read_artifact(meta) == ARTIFACT_1


def test_read_artifact_refuses_an_artifact_with_one_byte_changed(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    meta = registry.publish(meta_fields(), ARTIFACT_1)
    path = store_root / "xgboost" / "1" / "model.ubj"
    tampered = bytearray(path.read_bytes())
    tampered[5] ^= 0x01
    path.write_bytes(bytes(tampered))

    with pytest.raises(ArtifactRejected, match="fails its checksum"):
        registry.read_artifact(meta)
    with pytest.raises(ArtifactRejected):
        registry.read_artifact(registry.catalog().resolve("xgboost", "1"))


def test_read_artifact_refuses_an_artifact_with_a_byte_appended(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    meta = registry.publish(meta_fields(), ARTIFACT_1)
    (store_root / "xgboost" / "1" / "model.ubj").write_bytes(ARTIFACT_1 + b"\x00")

    with pytest.raises(ArtifactRejected):
        registry.read_artifact(meta)


def test_read_artifact_of_a_vanished_file_raises_model_unavailable(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    meta = registry.publish(meta_fields(), ARTIFACT_1)
    (store_root / "xgboost" / "1" / "model.ubj").unlink()

    with pytest.raises(ModelUnavailable):
        registry.read_artifact(meta)


def test_delete_artifacts_removes_artifacts_and_marks_metadata(
    registry: Registry, store_root: Path, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields(), ARTIFACT_2)
    registry.publish(meta_fields("logistic_regression"), ARTIFACT_2)

    deleted = registry.delete_artifacts()

    assert sorted((m.model_type, m.version) for m in deleted) == [
        ("logistic_regression", "1"), ("xgboost", "1"), ("xgboost", "2"),
    ]
    assert all(m.artifact_deleted_at is not None for m in deleted)
    remaining = sorted(p.relative_to(store_root).as_posix()
                       for p in store_root.rglob("*") if p.is_file())
    assert remaining == [
        "logistic_regression/1/metadata.json",
        "registry.json",
        "xgboost/1/metadata.json",
        "xgboost/2/metadata.json",
    ]
    for key in remaining[:1] + remaining[2:]:
        assert read_json(store_root / key)["artifact_deleted_at"] is not None
    catalog = registry.catalog()
    assert catalog.available() == {"logistic_regression": ["1"], "xgboost": ["1", "2"]}
    assert catalog.resolve("xgboost", "1").artifact_deleted_at is not None


def test_read_artifact_after_deletion_raises_model_unavailable(
    registry: Registry, meta_fields
) -> None:
    stale = registry.publish(meta_fields(), ARTIFACT_1, activate=True)

    registry.delete_artifacts()

    with pytest.raises(ModelUnavailable, match="was deleted") as info:
        registry.read_artifact(registry.catalog().resolve("xgboost", "1"))
    assert info.value.details == {"model_type": "xgboost", "version": "1"}
    with pytest.raises(ModelUnavailable):  # metadata captured before the deletion
        registry.read_artifact(stale)


def test_activate_after_deletion_raises_model_unavailable(registry: Registry,
                                                          meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.publish(meta_fields(), ARTIFACT_2)
    state_before = registry.state()

    registry.delete_artifacts()

    with pytest.raises(ModelUnavailable):
        registry.activate("xgboost", "2")
    assert registry.state() == state_before


def test_delete_artifacts_twice_keeps_the_first_deletion_time(registry: Registry,
                                                              meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1)
    first = registry.delete_artifacts()[0].artifact_deleted_at

    second = registry.delete_artifacts()[0].artifact_deleted_at

    assert first is not None
    assert second == first


def test_publish_after_deletion_serves_again(registry: Registry, meta_fields) -> None:
    registry.publish(meta_fields(), ARTIFACT_1, activate=True)
    registry.delete_artifacts()

    meta = registry.publish(meta_fields(), ARTIFACT_2, activate=True)

    assert meta.version == "2"
    assert registry.read_artifact(registry.catalog().resolve()) == ARTIFACT_2


def test_metadata_round_trips_through_json(registry: Registry, meta_fields) -> None:
    meta = registry.publish(meta_fields(description="demo", metrics={"auc": 0.5}), ARTIFACT_1)

    again = ModelMetadata.model_validate_json(meta.model_dump_json())

    assert again == meta
    assert again.artifact_key == "xgboost/1/model.ubj"
    assert again.feature_names == ["alpha", "beta"]


def test_a_model_type_named_like_the_registry_file_is_refused(
    registry: Registry, meta_fields
) -> None:
    with pytest.raises((InvalidModelName, PublishError)):
        registry.publish(meta_fields(REGISTRY_KEY), ARTIFACT_1)

    registry.publish(meta_fields(), ARTIFACT_2, activate=True)
    assert registry.state().active == ModelRef(model_type="xgboost", version="1")
