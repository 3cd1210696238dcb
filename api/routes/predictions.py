"""POST /predict, /predict/{model_type}, /predict/{model_type}/{version}."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from api.bodies import predict_request
from api.deps import Caller, ModelTypePath, ReaderDep, ServicesDep, VersionPath
from api.examples import EXAMPLE_ROW
from api.fast_route import MODEL_TYPE, VERSION, FastPathRoute, fast_caller, fast_path
from api.responses import errors, read_json_text
from api.routes import jobs
from common.errors import PredictionDeferred
from common.jobs import JobStatus
from common.schemas import PredictResponse
from common.services.job_limits import IDEMPOTENCY_KEY_MAX_CHARS

router = APIRouter(tags=["predictions"], route_class=FastPathRoute)
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=IDEMPOTENCY_KEY_MAX_CHARS,
        description="with `Prefer: respond-async`: the same key and body give the same job",
    ),
]

_Value = {"anyOf": [{"type": "number"}, {"type": "integer"}, {"type": "boolean"}]}
_Row = {
    "type": "object",
    "additionalProperties": _Value,
    "description": "feature name to value; GET /models/{type}/{version} has the exact schema",
}
REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["input_data"],
                    "additionalProperties": False,
                    "properties": {
                        "input_data": {
                            "anyOf": [_Row, {"type": "array", "items": _Row, "minItems": 1}]
                        }
                    },
                },
                "examples": {
                    "one row": {"value": {"input_data": EXAMPLE_ROW}},
                    "several rows": {"value": {"input_data": [EXAMPLE_ROW, EXAMPLE_ROW]}},
                },
            }
        },
    }
}
ROUTE: dict[str, Any] = {
    "status_code": 200,
    "response_model": PredictResponse,
    "openapi_extra": REQUEST_BODY,
    "responses": {
        202: {
            "model": JobStatus,
            "description": "with `Prefer: respond-async`, or past the "
            "deadline: the prediction as a job; poll the `Location`",
        },
        **errors(400, 401, 404, 409, 413, 415, 422, 429, 503, 504),
    },
}


async def _predict(
    request: Request,
    services: ServicesDep,
    caller: Caller,
    model_type: str | None,
    version: str | None,
    idempotency_key: str | None,
) -> Response:
    if "respond-async" in request.headers.get("prefer", "").lower():
        # RFC 7240: the same prediction as a job, answered 202 with its status URL.
        response = await jobs.submit(
            request, services, caller, model_type, version, idempotency_key
        )
        response.headers["Preference-Applied"] = "respond-async"
        return response
    body = await read_json_text(request, services.settings.max_body_bytes)
    try:
        outcome = await services.predictions.predict(
            predict_request(body, caller.owner, model_type, version)
        )
    except PredictionDeferred as deferred:
        # Past the deadline: the same prediction, as a job the caller can poll.
        return jobs.accepted(deferred.details)
    return Response(outcome.to_json(), media_type="application/json")


async def _fast(request: Request) -> Response | None:
    """The three routes without FastAPI's per-request solving (api/fast_route.py): a
    valid key, and path parameters and an Idempotency-Key within the declared
    constraints. Anything else goes to FastAPI, which names what is wrong."""
    accepted = fast_caller(request, model_type=MODEL_TYPE, version=VERSION)
    idempotency_key = request.headers.get("idempotency-key")
    if accepted is None or (
        idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_CHARS
    ):
        return None
    services, caller = accepted
    params = request.path_params
    return await _predict(
        request,
        services,
        caller,
        params.get("model_type"),
        params.get("version"),
        idempotency_key,
    )


@router.post("/predict", summary="Predict with the active model", **ROUTE)
@fast_path(_fast)
async def predict_active(
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _predict(request, services, caller, None, None, idempotency_key)


@router.post("/predict/{model_type}", summary="Predict with a type's active version", **ROUTE)
@fast_path(_fast)
async def predict_type(
    model_type: ModelTypePath,
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _predict(request, services, caller, model_type, None, idempotency_key)


@router.post("/predict/{model_type}/{version}", summary="Predict with one version", **ROUTE)
@fast_path(_fast)
async def predict_version(
    model_type: ModelTypePath,
    version: VersionPath,
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await _predict(request, services, caller, model_type, version, idempotency_key)
