"""Model metadata, versions and the active model, kept in an object store.

Layout: `<model_type>/<version>/metadata.json` beside the artifact, and `registry.json`
at the top recording the active model overall and the active version of each type.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from common.errors import InvalidModelName, ModelNotFound, ModelUnavailable, PublishError
from common.rollout import CHAMPION, Rollout
from common.store import RESULTS_PREFIX, UPLOADS_PREFIX, ObjectMissing, ObjectStore

REGISTRY_KEY = "registry.json"
METADATA_FILE = "metadata.json"
# Model types have no dots, so none can collide with registry.json; versions may ("1.2").
MODEL_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PATTERNS = {"model type": re.compile(MODEL_TYPE_PATTERN), "version": re.compile(VERSION_PATTERN)}
# The callers' objects share the store's bucket under these names: no model type takes one.
RESERVED_MODEL_TYPES = frozenset({UPLOADS_PREFIX, RESULTS_PREFIX})

ArtifactFormat = Literal["xgboost-ubj", "xgboost-json", "skops", "pickle", "joblib"]
ARTIFACT_FILES: dict[str, str] = {
    "xgboost-ubj": "model.ubj",
    "xgboost-json": "model.json",
    "skops": "model.skops",
    "pickle": "model.pkl",
    "joblib": "model.joblib",
}


class Feature(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    type: Literal["float", "int", "bool"] = "float"
    min: float | None = None
    max: float | None = None


class ModelMetadata(BaseModel):
    model_type: str = Field(pattern=MODEL_TYPE_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    framework: Literal["xgboost", "sklearn"]
    library_versions: dict[str, str] = Field(default_factory=dict)
    artifact_format: ArtifactFormat
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    features: list[Feature] = Field(min_length=1)
    classes: list[str | int] = Field(min_length=2)
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime
    description: str = ""
    artifact_deleted_at: datetime | None = None

    @property
    def artifact_key(self) -> str:
        return f"{self.model_type}/{self.version}/{ARTIFACT_FILES[self.artifact_format]}"

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]


class ModelRef(BaseModel):
    model_type: str
    version: str


class RegistryState(BaseModel):
    active: ModelRef | None = None
    active_by_type: dict[str, str] = Field(default_factory=dict)
    # By type (common.rollout); left out of registry.json while there are none.
    rollouts: dict[str, Rollout] = Field(default_factory=dict, exclude_if=lambda v: not v)

    def rollout(self, model_type: str) -> Rollout:
        return self.rollouts.get(model_type) or Rollout()


def check_name(value: str, what: Literal["model type", "version"]) -> str:
    if not _PATTERNS[what].fullmatch(value) or ".." in value:
        allowed = "'_' or '-'" if what == "model type" else "'.', '_' or '-'"
        raise InvalidModelName(
            f"invalid {what} {value!r}: use letters, digits, {allowed} (at most 64)"
        )
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version_order(meta: ModelMetadata) -> tuple[datetime, int, str]:
    numeric = int(meta.version) if meta.version.isdigit() else -1
    return (meta.created_at, numeric, meta.version)


@dataclass(frozen=True)
class Catalog:
    """An immutable snapshot of the registry: cheap to cache, consistent to resolve."""

    state: RegistryState
    models: dict[str, list[ModelMetadata]] = field(default_factory=dict)  # oldest first

    def find(self, model_type: str, version: str) -> ModelMetadata | None:
        """That exact version's metadata (its artifact may be deleted), or None."""
        return next((m for m in self.models.get(model_type, []) if m.version == version), None)

    def resolve(self, model_type: str | None = None, version: str | None = None) -> ModelMetadata:
        if model_type is None:
            if self.state.active is None:
                raise ModelNotFound(
                    "no active model: activate one (modelctl activate TYPE VERSION)",
                    {"available": self.available()},
                )
            model_type, version = self.state.active.model_type, self.state.active.version
        versions = self.models.get(model_type)
        if not versions:
            raise ModelNotFound(
                f"unknown model type {model_type!r}; available: {sorted(self.models) or 'none'}",
                {"available": self.available()},
            )
        if version is None or (version == CHAMPION and not self.find(model_type, version)):
            version = self.state.active_by_type.get(model_type) or versions[-1].version
        for meta in versions:
            if meta.version == version:
                return meta
        aliased = self.state.rollout(model_type).aliases.get(version)
        if aliased is not None:
            return self.resolve(model_type, aliased)
        aliases = [*sorted(self.state.rollout(model_type).aliases), CHAMPION]
        raise ModelNotFound(
            f"unknown version or alias {version!r} of {model_type!r}; versions: "
            f"{[m.version for m in versions]}, aliases: {aliases}",
            {"available": self.available()},
        )

    def available(self) -> dict[str, list[str]]:
        return {name: [m.version for m in metas] for name, metas in sorted(self.models.items())}


class Registry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def state(self) -> RegistryState:
        try:
            return RegistryState.model_validate_json(self.store.get(REGISTRY_KEY))
        except ObjectMissing:
            return RegistryState()

    def catalog(self) -> Catalog:
        models: dict[str, list[ModelMetadata]] = {}
        for key in self.store.list():
            parts = key.split("/")
            # An upload named metadata.json is a caller's file, never a model's.
            if parts[0] in RESERVED_MODEL_TYPES:
                continue
            if len(parts) == 3 and parts[2] == METADATA_FILE:
                meta = ModelMetadata.model_validate_json(self.store.get(key))
                models.setdefault(meta.model_type, []).append(meta)
        for metas in models.values():
            metas.sort(key=_version_order)
        return Catalog(self.state(), models)

    def metadata(self, model_type: str, version: str) -> ModelMetadata:
        check_name(model_type, "model type")
        check_name(version, "version")
        try:
            raw = self.store.get(f"{model_type}/{version}/{METADATA_FILE}")
        except ObjectMissing:
            raise ModelNotFound(f"unknown model {model_type!r} version {version!r}") from None
        return ModelMetadata.model_validate_json(raw)

    def read_artifact(self, meta: ModelMetadata) -> bytes:
        """The artifact's bytes, only if they match the sha256 recorded at publication."""
        from common.errors import ArtifactRejected

        if meta.artifact_deleted_at is not None:
            raise artifact_deleted_error(meta)
        try:
            data = self.store.get(meta.artifact_key)
        except ObjectMissing:
            raise artifact_deleted_error(meta) from None
        digest = sha256_hex(data)
        if digest != meta.sha256:
            raise ArtifactRejected(
                f"artifact of {meta.model_type} v{meta.version} fails its checksum "
                f"(expected sha256 {meta.sha256[:12]}..., found {digest[:12]}...); "
                "refusing to load it"
            )
        return data

    def next_version(self, model_type: str) -> str:
        numbers = [
            int(key.split("/")[1])
            for key in self.store.list(check_name(model_type, "model type"))
            if key.split("/")[1].isdigit()
        ]
        return str(max(numbers, default=0) + 1)

    def publish(
        self,
        meta_fields: dict[str, Any],
        artifact: bytes,
        *,
        activate: bool = False,
        make_default: bool = False,
    ) -> ModelMetadata:
        model_type = check_name(str(meta_fields.get("model_type", "")), "model type")
        if model_type.lower() in RESERVED_MODEL_TYPES:
            raise InvalidModelName(
                f"the model type {model_type!r} is reserved: the store keeps callers' "
                f"{model_type.lower()} under that name; choose another"
            )
        version = str(meta_fields.get("version") or self.next_version(model_type))
        check_name(version, "version")
        if not artifact:
            raise PublishError("the artifact is empty")
        if self.store.exists(f"{model_type}/{version}/{METADATA_FILE}"):
            raise PublishError(f"{model_type} version {version} exists; versions are immutable")
        fields = {
            **meta_fields,
            "version": version,
            "sha256": sha256_hex(artifact),
            "created_at": meta_fields.get("created_at") or datetime.now(UTC),
            "artifact_deleted_at": None,
        }
        try:
            meta = ModelMetadata.model_validate(fields)
        except ValueError as exc:
            raise PublishError(f"invalid metadata: {exc}") from None
        # Artifact first: metadata is what makes a version visible.
        self.store.put(meta.artifact_key, artifact)
        self.store.put(
            f"{model_type}/{version}/{METADATA_FILE}", meta.model_dump_json(indent=2).encode()
        )
        if activate or make_default:
            self.activate(model_type, version, make_default=make_default)
        return meta

    def activate(
        self, model_type: str, version: str, *, make_default: bool = False
    ) -> RegistryState:
        meta = self.metadata(model_type, version)
        if meta.artifact_deleted_at is not None:
            raise artifact_deleted_error(meta)
        state = self.state()
        state.active_by_type[model_type] = version
        if make_default or state.active is None or state.active.model_type == model_type:
            state.active = ModelRef(model_type=model_type, version=version)
        self.store.put(REGISTRY_KEY, state.model_dump_json(indent=2).encode())
        return state

    def save_rollout(self, model_type: str, rollout: Rollout) -> RegistryState:
        """A type's aliases, traffic split and shadow (checked by the caller)."""
        state = self.state()
        if rollout.is_empty():
            state.rollouts.pop(model_type, None)
        else:
            state.rollouts[model_type] = rollout
        self.store.put(REGISTRY_KEY, state.model_dump_json(indent=2).encode())
        return state

    def delete_artifacts(self) -> list[ModelMetadata]:
        """Delete every artifact, keep (and mark) every metadata document."""
        now = datetime.now(UTC)
        deleted: list[ModelMetadata] = []
        for metas in self.catalog().models.values():
            for meta in metas:
                self.store.delete(meta.artifact_key)
                if meta.artifact_deleted_at is None:
                    meta = meta.model_copy(update={"artifact_deleted_at": now})
                    key = f"{meta.model_type}/{meta.version}/{METADATA_FILE}"
                    self.store.put(key, meta.model_dump_json(indent=2).encode())
                deleted.append(meta)
        return deleted


def artifact_deleted_error(meta: ModelMetadata) -> ModelUnavailable:
    return ModelUnavailable(
        f"the artifact of {meta.model_type} v{meta.version} was deleted; "
        "publish a new version to serve predictions again",
        {"model_type": meta.model_type, "version": meta.version},
    )
