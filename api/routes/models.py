"""GET /models, GET /models/{model_type}/{version}, DELETE /delete-models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import AdminDep, ModelTypePath, ReaderDep, ServicesDep, VersionPath
from api.responses import errors
from common.registry import ModelMetadata, ModelRef

router = APIRouter(tags=["models"])


class VersionSummary(BaseModel):
    version: str
    created_at: datetime
    framework: str
    metrics: dict[str, float]
    active: bool
    artifact_deleted: bool


class ModelSummary(BaseModel):
    model_type: str
    active_version: str | None
    versions: list[VersionSummary]


class ModelList(BaseModel):
    default: ModelRef | None
    models: list[ModelSummary]


class ModelDetail(BaseModel):
    metadata: ModelMetadata
    active: bool
    default: bool
    input_schema: dict[str, Any]


class DeleteReport(BaseModel):
    deleted: list[ModelRef]
    purged_cache_entries: int


@router.get(
    "/models",
    status_code=200,
    response_model=ModelList,
    responses=errors(401),
    summary="Models, versions and which are active",
)
async def list_models(services: ServicesDep, _: ReaderDep) -> ModelList:
    catalog = await services.models.catalog()
    summaries = []
    for model_type, metas in sorted(catalog.models.items()):
        active = catalog.state.active_by_type.get(model_type)
        summaries.append(
            ModelSummary(
                model_type=model_type,
                active_version=active,
                versions=[
                    VersionSummary(
                        version=m.version,
                        created_at=m.created_at,
                        framework=m.framework,
                        metrics=m.metrics,
                        active=m.version == active,
                        artifact_deleted=m.artifact_deleted_at is not None,
                    )
                    for m in metas
                ],
            )
        )
    return ModelList(default=catalog.state.active, models=summaries)


@router.get(
    "/models/{model_type}/{version}",
    status_code=200,
    response_model=ModelDetail,
    responses=errors(401, 404, 422),
    summary="A version's metadata and input schema",
)
async def model_detail(
    model_type: ModelTypePath,
    version: VersionPath,
    services: ServicesDep,
    _: ReaderDep,
) -> ModelDetail:
    catalog = await services.models.catalog()
    meta = catalog.resolve(model_type, version)
    default = catalog.state.active
    return ModelDetail(
        metadata=meta,
        active=catalog.state.active_by_type.get(model_type) == version,
        default=default is not None
        and (default.model_type, default.version) == (model_type, version),
        input_schema=services.models.validator(meta).json_schema(),
    )


@router.delete(
    "/delete-models",
    status_code=200,
    response_model=DeleteReport,
    responses=errors(401, 403, 503),
    summary="Delete every model artifact (admin); metadata is kept",
)
async def delete_models(services: ServicesDep, _: AdminDep) -> DeleteReport:
    return DeleteReport.model_validate(await services.models.delete_models())
