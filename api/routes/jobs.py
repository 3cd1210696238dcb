"""POST /jobs, GET /jobs/{id}, DELETE /jobs/{id}, GET /jobs/{id}/results[.csv]."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.bodies import job_request
from api.deps import Caller, ReaderDep, Services, ServicesDep
from api.examples import EXAMPLE_ROW
from api.file_bodies import body_media_type, body_of, declared_length, file_job_request
from api.responses import errors, read_json_body
from api.routes.uploads import FILE_CONTENT, file_errors
from common.jobs import JobStatus
from common.registry import MODEL_TYPE_PATTERN, VERSION_PATTERN
from common.schemas import Prediction
from common.services.file_jobs import submit_file
from common.services.job_limits import IDEMPOTENCY_KEY_MAX_CHARS

router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{16,64}$")]


class ResultsPage(BaseModel):
    job_id: str
    offset: int
    limit: int
    total: int
    predictions: list[Prediction]


JOB_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    # exactly one of the two inputs: rows, or a CSV object in the store
                    "oneOf": [{"required": ["input_data"]}, {"required": ["input_object"]}],
                    "properties": {
                        "input_object": {
                            "type": "string",
                            "description": "instead of input_data: one of the caller's "
                            "uploads (GET /uploads), as `<name>` or `uploads/<owner>/<name>`",
                        },
                        "callback_url": {
                            "type": "string",
                            "description": "receives the final status, HMAC-signed",
                        },
                        "input_data": {
                            "anyOf": [
                                {"type": "object"},
                                {"type": "array", "items": {"type": "object"}, "minItems": 1},
                            ]
                        },
                        "model_type": {
                            "type": "string",
                            "description": "default: the active model",
                        },
                        "version": {"type": "string", "description": "default: the type's active"},
                    },
                },
                "examples": {
                    "two rows": {
                        "value": {"input_data": [EXAMPLE_ROW, EXAMPLE_ROW], "model_type": "xgboost"}
                    }
                },
            },
            # Or the input itself, a file: the model and callback_url are query parameters.
            **FILE_CONTENT,
        },
    }
}
FileQuery = "with a CSV or Parquet body only (a JSON body names it in its fields)"


def accepted(status: JobStatus) -> Response:
    return Response(
        status.model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": status.status_url},
    )


async def submit(
    request: Request,
    services: Services,
    caller: Caller,
    model_type: str | None,
    version: str | None,
    idempotency_key: str | None,
) -> Response:
    # A slot of this process's job submissions, held from before the body is read.
    with services.jobs.submission_slot():
        body = await read_json_body(request, services.settings.job_max_body_bytes)
        parsed = await job_request(
            body.payload, caller.tenant, model_type, version, services.settings, idempotency_key
        )
        return accepted(await services.jobs.submit(replace(parsed, body_bytes=body.size)))


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobStatus,
    openapi_extra=JOB_BODY,
    responses=file_errors(400, 401, 404, 409, 413, 415, 422, 429, 503),
    summary="Submit a prediction job; poll its status URL",
    description=(
        "The body is JSON (`input_data` rows, or `input_object`: one of the caller's "
        "uploads), or the input itself as a CSV or Parquet file, stored as an upload "
        "of the caller's, `job-<id>.csv`, deleted with the job."
    ),
)
async def submit_job(
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX_CHARS)] = None,
    model_type: Annotated[
        str | None, Query(pattern=MODEL_TYPE_PATTERN, description=FileQuery)
    ] = None,
    version: Annotated[str | None, Query(pattern=VERSION_PATTERN, description=FileQuery)] = None,
    callback_url: Annotated[str | None, Query(max_length=2048, description=FileQuery)] = None,
) -> Response:
    params = (model_type, version, callback_url)
    content_type = request.headers.get("content-type", "")
    media_type = body_media_type(content_type, params)
    if not media_type:
        return await submit(request, services, caller, None, None, idempotency_key)
    with services.jobs.submission_slot():
        parsed = await file_job_request(
            caller.tenant, params, media_type, services.settings, idempotency_key
        )
        status = await submit_file(
            services.jobs, parsed, content_type, body_of(request), declared_length(request)
        )
    return accepted(status)


@router.get(
    "/jobs/{job_id}",
    status_code=200,
    response_model=JobStatus,
    responses=errors(401, 404, 422),
    summary="A job's status, progress and result",
)
async def job_status(job_id: JobId, services: ServicesDep, caller: ReaderDep) -> JobStatus:
    return await services.jobs.status(caller.tenant, job_id)


@router.delete(
    "/jobs/{job_id}",
    status_code=200,
    response_model=JobStatus,
    responses=errors(401, 404, 409, 422),
    summary="Cancel a queued or running job",
)
async def cancel_job(job_id: JobId, services: ServicesDep, caller: ReaderDep) -> JobStatus:
    return await services.jobs.cancel(caller.tenant, job_id)


@router.get(
    "/jobs/{job_id}/results",
    status_code=200,
    response_model=ResultsPage,
    responses=errors(401, 404, 409, 422),
    summary="A page of a job's results",
)
async def job_results(
    job_id: JobId,
    services: ServicesDep,
    caller: ReaderDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> ResultsPage:
    job, predictions = await services.jobs.results_page(caller.tenant, job_id, offset, limit)
    return ResultsPage(
        job_id=job_id,
        offset=offset,
        limit=limit,
        total=job.n_rows,
        predictions=[Prediction.model_validate(p) for p in predictions],
    )


@router.get(
    "/jobs/{job_id}/results.csv",
    status_code=200,
    response_class=StreamingResponse,
    responses=errors(401, 404, 409, 422),
    summary="All of a job's results as CSV",
)
async def job_results_csv(
    job_id: JobId, services: ServicesDep, caller: ReaderDep
) -> StreamingResponse:
    lines = await services.jobs.results_csv(caller.tenant, job_id)
    return StreamingResponse(
        lines,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}.csv"'},
    )
