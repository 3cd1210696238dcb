"""The Open Inference Protocol's REST routes (KServe's "v2", which Triton, MLServer and
KServe speak): health, metadata, the repository index, and inference through the same
validation, cache, micro-batching, queue and log as `/predict` (PredictionService).

Errors here take the protocol's shape, `{"error": "<message>"}` (api/main.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from api.deps import ModelTypePath, ReaderDep, ServicesDep
from api.fast_route import MODEL_TYPE, VERSION, FastPathRoute, fast_caller, fast_path
from api.responses import SMALL_BODY_BYTES, check_json_type, parse_json, read_body
from api.routes.health import backend_status
from common.errors import InvalidInput, MalformedBody, PredictionDeferred, PredictionTimeout
from common.oip import binary
from common.oip.metadata import model_metadata, repository_index, server_metadata
from common.oip.responses import check_outputs, render
from common.oip.rows import rows_from
from common.oip.tensors import parse_request
from common.registry import VERSION_PATTERN
from common.services.models import OFF_LOOP_BYTES
from common.services.requests import PredictRequest

PREFIX = "/v2"
router = APIRouter(prefix=PREFIX, tags=["open inference protocol (v2)"], route_class=FastPathRoute)
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, examples=["1"])]


def speaks_protocol(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_body(message: str) -> dict[str, str]:
    return {"error": message}


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "content": {"application/json": {"schema": _ERROR_SCHEMA, "example": {"error": text}}},
    }
    for code, text in {
        400: "malformed request",
        401: "missing or invalid API key",
        404: "unknown model or version",
        413: "body too large",
        415: "a body without binary data that is not JSON by its Content-Type",
        422: "invalid input: names the tensor or feature at fault",
        429: "over the limit of predictions waiting",
        503: "model or backend unavailable",
        504: "no result before the deadline",
    }.items()
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs: JSON, or JSON then binary data (its length in "
        "`Inference-Header-Content-Length`) when binary outputs were asked for",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **ERRORS,
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.get("/health/live", summary="Liveness (no key needed)", status_code=200)
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Readiness: Redis answers and a worker is alive (no key needed)",
    status_code=200,
    responses={503: {"description": "Redis or every worker is down"}},
)
async def ready(services: ServicesDep) -> Response:
    redis_ok, worker = await backend_status(services)
    return _json({"ready": redis_ok and worker}, 200 if redis_ok and worker else 503)


@router.get("", summary="Server metadata", status_code=200, responses=ERRORS)
async def metadata(_: ReaderDep) -> dict[str, Any]:
    return server_metadata()


async def _model(services: ServicesDep, name: str, version: str | None) -> dict[str, Any]:
    meta = await services.models.resolve(name, version)
    catalog = await services.models.catalog()
    return model_metadata(meta, [m.version for m in catalog.models.get(name, [])])


@router.get("/models/{model_name}", summary="A model type's metadata", responses=ERRORS)
async def model(services: ServicesDep, _: ReaderDep, model_name: ModelTypePath) -> dict[str, Any]:
    return await _model(services, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    summary="A version's metadata",
    responses=ERRORS,
)
async def model_version(
    services: ServicesDep, _: ReaderDep, model_name: ModelTypePath, model_version: VersionPath
) -> dict[str, Any]:
    return await _model(services, model_name, model_version)


def _ready(name: str, version: str) -> dict[str, Any]:
    return {"name": name, "version": version, "ready": True}


@router.get("/models/{model_name}/ready", summary="Whether a type serves", responses=ERRORS)
async def model_ready(
    services: ServicesDep, _: ReaderDep, model_name: ModelTypePath
) -> dict[str, Any]:
    meta = await services.models.resolve(model_name, None)
    return _ready(meta.model_type, meta.version)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    summary="Whether a version serves",
    responses=ERRORS,
)
async def version_ready(
    services: ServicesDep, _: ReaderDep, model_name: ModelTypePath, model_version: VersionPath
) -> dict[str, Any]:
    meta = await services.models.resolve(model_name, model_version)
    return _ready(meta.model_type, meta.version)


@router.post("/repository/index", summary="Every model version and its state", responses=ERRORS)
async def index(services: ServicesDep, _: ReaderDep, request: Request) -> list[dict[str, Any]]:
    body = await read_body(request, SMALL_BODY_BYTES)
    options = parse_json(body) if body.strip() else {}
    if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
        raise InvalidInput('the body is optional: {"ready": true} lists only ready versions')
    return repository_index(await services.models.catalog(), options.get("ready", False))


INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, or JSON then binary tensor data "
        "(the binary tensor data extension, with `Inference-Header-Content-Length`).",
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["inputs"]},
                "example": {
                    "inputs": [
                        {"name": "input-0", "datatype": "FP64", "shape": [1, 30], "data": []}
                    ]
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def _infer(
    request: Request, services: ServicesDep, caller: ReaderDep, name: str, version: str | None
) -> Response:
    body = await read_body(request, services.settings.max_body_bytes)
    header_length = request.headers.get(binary.HEADER_LENGTH)
    if header_length is None:
        check_json_type(request.headers.get("content-type", ""))
        header, data = body, b""
    else:
        header, data = binary.split_body(body, header_length)
    if not header:
        raise MalformedBody('the body is empty; send {"inputs": [...]}')
    inference = parse_request(parse_json(header), data)
    check_outputs(inference)
    meta = await services.models.route(name, version, caller.owner)  # a split picks one
    if len(body) > OFF_LOOP_BYTES:  # as ModelService.validate does with the rows next
        rows = await asyncio.to_thread(rows_from, meta, inference.inputs)
    else:
        rows = rows_from(meta, inference.inputs)
    predict = PredictRequest(caller.owner, meta.model_type, meta.version, rows, len(body))
    try:
        outcome = await services.predictions.predict(predict)
    except PredictionDeferred as deferred:
        # The protocol has no 202: a 504, naming the job the prediction goes on as.
        job = deferred.details
        raise PredictionTimeout(
            f"{deferred.message}; it goes on as job {job.job_id}: GET {job.status_url} "
            "has its result"
        ) from None
    except InvalidInput as exc:
        # The rows' checks name /predict's field; a v2 caller sent tensors.
        message = exc.message.replace("invalid input_data: ", "invalid input: ", 1)
        raise InvalidInput(message, exc.details) from None
    extra = {"request_id": outcome.request_id, "cached": outcome.cached}
    rendered = render(inference, outcome.meta, outcome.result, extra)
    if rendered.header_length is None:
        return Response(rendered.body, media_type="application/json")
    return Response(
        rendered.body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(rendered.header_length)},
    )


async def _fast_infer(request: Request) -> Response | None:
    """Both infer routes without FastAPI's per-request solving (api/fast_route.py)."""
    accepted = fast_caller(request, model_name=MODEL_TYPE, model_version=VERSION)
    if accepted is None:
        return None
    params = request.path_params
    name, version = params["model_name"], params.get("model_version")
    return await _infer(request, *accepted, name, version)


@router.post(
    "/models/{model_name}/infer",
    summary="Infer with a type's active version",
    status_code=200,
    openapi_extra=INFER_BODY,
    responses=INFER_RESPONSES,
)
@fast_path(_fast_infer)
async def infer(
    request: Request, services: ServicesDep, caller: ReaderDep, model_name: ModelTypePath
) -> Response:
    return await _infer(request, services, caller, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    summary="Infer with one version",
    status_code=200,
    openapi_extra=INFER_BODY,
    responses=INFER_RESPONSES,
)
@fast_path(_fast_infer)
async def infer_version(
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    model_name: ModelTypePath,
    model_version: VersionPath,
) -> Response:
    return await _infer(request, services, caller, model_name, model_version)
