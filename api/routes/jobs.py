"""POST /jobs, GET /jobs/{id}, DELETE /jobs/{id}, GET /jobs/{id}/results[.csv]."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import Caller, ReaderDep, Services, ServicesDep
from api.examples import EXAMPLE_ROW
from api.responses import errors, read_json
from common.dataplane import render_predictions
from common.errors import InvalidInput, JobConflict
from common.schemas import Prediction, PredictResponse

router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{16,64}$")]
CSV_PAGE_ROWS = 5000


class Progress(BaseModel):
    rows_done: int
    rows_total: int


class JobStatus(BaseModel):
    job_id: str
    status: str
    model_type: str
    version: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    status_url: str
    results_url: str
    result: PredictResponse | None = None
    error: dict[str, Any] | None = None
    input_object: str | None = None
    output_object: str | None = None
    output_location: str | None = None  # a presigned URL (S3) or a file URI


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
                            "description": "instead of input_data: a CSV object's key in the store",
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
            }
        },
    }
}


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


async def render(services: Services, info: dict[str, str]) -> JobStatus:
    job_id = info["job_id"]
    status = JobStatus(
        job_id=job_id,
        status=info["status"],
        model_type=info["model_type"],
        version=info["version"],
        created_at=_time(info["created_at"]),
        started_at=_time(info.get("started_at")),
        finished_at=_time(info.get("finished_at")),
        progress=Progress(rows_done=int(info["rows_done"]), rows_total=int(info["n_rows"])),
        status_url=f"/jobs/{job_id}",
        results_url=f"/jobs/{job_id}/results",
    )
    if "input_object" in info:
        status.input_object = info["input_object"]
    if "output_object" in info:
        status.output_object = info["output_object"]
        status.output_location = services.plane.registry.store.location(
            info["output_object"], services.settings.job_ttl_seconds
        )
    if "error" in info:
        status.error = orjson.loads(info["error"])
    n_rows = int(info["n_rows"])
    if info["status"] == "succeeded" and n_rows <= services.settings.job_inline_result_rows:
        meta = await services.plane.job_meta(info)
        result = await services.plane.jobs.results(info, job_id, 0, n_rows)
        status.result = PredictResponse(
            model_type=meta.model_type,
            version=meta.version,
            cached=False,
            request_id=job_id,
            predictions=render_predictions(meta, result),
        )
    return status


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
    raw_limit = services.settings.job_max_body_bytes
    payload = await read_json(request, raw_limit)
    idempotency = None
    if idempotency_key:
        try:
            canonical = orjson.dumps([model_type, version, payload], option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # orjson writes 254 levels and reads 1,024
            raise InvalidInput("the body nests too deeply: rows are flat objects") from None
        idempotency = (idempotency_key, hashlib.sha256(canonical).hexdigest())
    info = await services.plane.submit_job(caller.owner, model_type, version, payload, idempotency)
    return accepted(await render(services, info))


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobStatus,
    openapi_extra=JOB_BODY,
    responses=errors(400, 401, 404, 409, 413, 415, 422, 503),
    summary="Submit a prediction job; poll its status URL",
)
async def submit_job(
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    return await submit(request, services, caller, None, None, idempotency_key)


@router.get(
    "/jobs/{job_id}",
    status_code=200,
    response_model=JobStatus,
    responses=errors(401, 404, 422),
    summary="A job's status, progress and result",
)
async def job_status(job_id: JobId, services: ServicesDep, caller: ReaderDep) -> JobStatus:
    return await render(services, await services.plane.jobs.get(caller.owner, job_id))


@router.delete(
    "/jobs/{job_id}",
    status_code=200,
    response_model=JobStatus,
    responses=errors(401, 404, 409, 422),
    summary="Cancel a queued or running job",
)
async def cancel_job(job_id: JobId, services: ServicesDep, caller: ReaderDep) -> JobStatus:
    info = await services.plane.cancel_job(caller.owner, job_id)
    return await render(services, info)


async def _finished(services: Services, caller: Caller, job_id: str) -> dict[str, str]:
    info = await services.plane.jobs.get(caller.owner, job_id)
    if info["status"] != "succeeded":
        raise JobConflict(f"job {job_id} is {info['status']}; results exist once it succeeded")
    return info


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
    info = await _finished(services, caller, job_id)
    meta = await services.plane.job_meta(info)
    result = await services.plane.jobs.results(info, job_id, offset, limit)
    return ResultsPage(
        job_id=job_id,
        offset=offset,
        limit=limit,
        total=int(info["n_rows"]),
        predictions=render_predictions(meta, result),
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
    info = await _finished(services, caller, job_id)
    meta = await services.plane.job_meta(info)
    classes = [str(c) for c in meta.classes]

    async def lines() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["row", "label", *(f"p_{c}" for c in classes)])
        for offset in range(0, int(info["n_rows"]), CSV_PAGE_ROWS):
            page = await services.plane.jobs.results(info, job_id, offset, CSV_PAGE_ROWS)
            for i, (label, probs) in enumerate(
                zip(page["labels"], page["probabilities"], strict=True)
            ):
                writer.writerow([offset + i, label, *probs])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    return StreamingResponse(
        lines(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}.csv"'},
    )
