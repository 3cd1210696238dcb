"""The HTTP front end's body shapes, parsed into the services' typed requests."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from api.responses import parse_json
from common.callbacks import check_callback_url
from common.errors import InvalidInput
from common.services.requests import Idempotency, JobRequest, PredictRequest, RawBody
from common.settings import Settings
from common.tenancy import Tenant

JOB_FIELDS = frozenset({"input_data", "input_object", "model_type", "version", "callback_url"})


def predict_request(
    body: bytes, owner: str, model_type: str | None, version: str | None
) -> PredictRequest:
    """A predict body as the service decodes it once it knows the version (RawBody)."""
    return PredictRequest(owner, model_type, version, RawBody(body, predict_input), len(body))


def predict_input(body: bytes) -> Any:
    """The input_data of a predict body, or the error naming what is wrong with it."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or "input_data" not in payload:
        raise InvalidInput('the body must be a JSON object with an "input_data" field')
    if extra := sorted(set(payload) - {"input_data"}):
        raise InvalidInput(f"unknown fields in the body: {extra}")
    return payload["input_data"]


async def job_request(
    payload: Any,
    tenant: Tenant,
    model_type: str | None,
    version: str | None,
    settings: Settings,
    idempotency_key: str | None = None,
) -> JobRequest:
    """A job from `POST /jobs` (model in the body) or `Prefer: respond-async` (in the path)."""
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object")
    if unknown := sorted(set(payload) - JOB_FIELDS):
        raise InvalidInput(f"unknown fields in the body: {unknown}")
    if ("input_data" in payload) == ("input_object" in payload):
        raise InvalidInput(
            'send either "input_data" (rows) or "input_object" (the key of a CSV '
            "object in the model store)"
        )
    for field in ("model_type", "version"):
        if not isinstance(payload.get(field, ""), str):
            raise InvalidInput(f"{field} must be a string")
    input_object = payload.get("input_object")
    if input_object is not None and not isinstance(input_object, str):
        raise InvalidInput("input_object must be the key of a CSV object in the store")
    return JobRequest(
        tenant=tenant,
        model_type=model_type or payload.get("model_type"),
        version=version or payload.get("version"),
        input_data=payload.get("input_data"),
        input_object=input_object,
        callback_url=await _callback_url(payload, settings),
        idempotency=_idempotency(idempotency_key, [model_type, version, payload]),
    )


async def _callback_url(payload: dict[str, Any], settings: Settings) -> str | None:
    if "callback_url" not in payload:
        return None
    return await callback_target(payload["callback_url"], settings)


async def callback_target(url: Any, settings: Settings) -> str:
    """A job's callback_url, if this server signs callbacks and the URL may be called."""
    if settings.callback_secret is None:
        raise InvalidInput(
            "this server signs no callbacks (SERVING_CALLBACK_SECRET is not set); "
            "poll the job instead"
        )
    # Resolves the host on the event loop's resolver: the loop never waits on DNS.
    return await check_callback_url(url, settings.callback_allowed_networks)


def _idempotency(key: str | None, body: list[Any]) -> Idempotency | None:
    if not key:
        return None
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # orjson writes 254 levels and reads 1,024
        raise InvalidInput("the body nests too deeply: rows are flat objects") from None
    return Idempotency(key, hashlib.sha256(canonical).hexdigest())
