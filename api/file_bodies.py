"""File bodies (CSV, Parquet) as they arrive: for PUT /uploads/{name}, and POST /jobs
with the input itself as its body, parsed into the services' typed requests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from api.bodies import callback_target
from common.errors import InvalidInput, MalformedBody, UnsupportedMediaType
from common.services.requests import Idempotency, JobRequest
from common.services.uploads import MEDIA_TYPES
from common.settings import Settings
from common.tenancy import Tenant


async def body_of(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives (a client that hangs up mid-body gets a 400)."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise MalformedBody("the body ended before its end (the client disconnected)") from None


def declared_length(request: Request) -> int | None:
    length = request.headers.get("content-length", "")
    return int(length) if length.isdigit() else None


async def file_job_request(
    tenant: Tenant,
    params: tuple[str | None, str | None, str | None],
    media_type: str,
    settings: Settings,
    idempotency_key: str | None,
) -> JobRequest:
    """A job of a file body, its input_object to come (the upload it is stored as)."""
    model_type, version, callback_url = params
    if callback_url is not None:
        callback_url = await callback_target(callback_url, settings)
    idempotency = None
    if idempotency_key:
        canonical = orjson.dumps([model_type, version, callback_url, media_type])
        idempotency = Idempotency(idempotency_key, hashlib.sha256(canonical).hexdigest())
    return JobRequest(
        tenant, model_type, version, callback_url=callback_url, idempotency=idempotency
    )


def body_media_type(content_type: str, params: tuple[str | None, ...]) -> str:
    """The body's media type if it is a file; "" for JSON (415 for anything else)."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type in MEDIA_TYPES:
        return media_type
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            "a job's body must be JSON (application/json) or a file "
            f"({', '.join(MEDIA_TYPES)}); got {content_type[:100]!r}"
        )
    if any(param is not None for param in params):
        raise InvalidInput(
            "the model_type, version and callback_url query parameters go with a CSV or "
            "Parquet body; a JSON body names them in its fields"
        )
    return ""
