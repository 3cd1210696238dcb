"""PUT /uploads/{name}, GET /uploads, DELETE /uploads/{name}: each key's own input
objects for jobs (`input_object`), streamed into the store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from api.deps import ReaderDep, ServicesDep
from api.file_bodies import body_of, declared_length
from api.responses import errors
from common.schemas import ErrorResponse
from common.services.uploads import MEDIA_TYPES, NAME_PATTERN, UploadInfo, UploadList

router = APIRouter(tags=["uploads"])
UploadName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        examples=["batch-1.csv"],
        description="ends in .csv (text/csv) or .parquet (application/vnd.apache.parquet)",
    ),
]
# The accepted bodies, for the OpenAPI page: raw file bytes, never JSON. The CSV schema
# is left open: any bytes are a text/csv body (its rows are checked when a job reads it).
FILE_CONTENT: dict[str, Any] = {
    "text/csv": {"schema": {}, "example": "mean radius,mean texture\n14.1,19.3\n"},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": FILE_CONTENT}}


def file_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """errors(...), with the 404 and 415 of files."""
    documented = errors(*codes)
    described = {
        404: "No upload of that name under this key",
        415: f"The Content-Type is none of {', '.join(MEDIA_TYPES)}",
    }
    for code, description in described.items():
        if code in documented:
            documented[code] = {"model": ErrorResponse, "description": description}
    return documented


@router.put(
    "/uploads/{name}",
    status_code=201,
    response_model=UploadInfo,
    openapi_extra=UPLOAD_BODY,
    responses=file_errors(400, 401, 413, 415, 422, 503),
    summary="Upload a CSV or Parquet file for jobs (replaces one of the same name)",
    description=(
        "Streamed into the store as `uploads/<owner>/<name>`, up to "
        "SERVING_UPLOAD_MAX_BYTES. A job names it as `input_object` (`<name>` or the "
        "full `input_object` this answers)."
    ),
)
async def put_upload(
    name: UploadName, request: Request, services: ServicesDep, caller: ReaderDep
) -> UploadInfo:
    stored = await services.uploads.put(
        caller.tenant,
        name,
        request.headers.get("content-type", ""),
        body_of(request),
        declared_length(request),
    )
    return stored.info


@router.get(
    "/uploads",
    status_code=200,
    response_model=UploadList,
    responses=errors(401, 503),
    summary="The caller's uploads (an admin key: every key's)",
)
async def list_uploads(services: ServicesDep, caller: ReaderDep) -> UploadList:
    return await services.uploads.list(caller.tenant)


@router.delete(
    "/uploads/{name}",
    status_code=200,
    response_model=UploadInfo,
    responses=file_errors(401, 404, 422, 503),
    summary="Delete one of the caller's uploads; answers what it was",
)
async def delete_upload(name: UploadName, services: ServicesDep, caller: ReaderDep) -> UploadInfo:
    return await services.uploads.delete(caller.tenant, name)
