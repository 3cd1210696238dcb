"""Error responses for the OpenAPI page, and the JSON body helper for raw routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request

from common.errors import BodyTooLarge, MalformedBody, UnsupportedMediaType
from common.schemas import ErrorResponse


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed body",
        401: "Missing or invalid API key",
        403: "Admin key required",
        404: "Unknown model, version or job",
        409: "Conflicts with the job's state or its Idempotency-Key",
        413: "Body too large",
        415: "The body is not JSON by its Content-Type",
        422: "Invalid input: names the feature or parameter at fault",
        429: "Over a limit (predictions waiting, job submissions being read, the key's "
        "unfinished jobs): retry after `Retry-After` seconds",
        503: "Model or backend unavailable",
        504: "No result before the deadline",
    }
    documented: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes
    }
    if 429 in documented:
        documented[429]["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return documented


def page_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`errors` for a route that answers HTML: its errors are still JSON, which FastAPI
    would otherwise document as the route's own media type."""
    ref = {"$ref": "#/components/schemas/ErrorResponse"}  # registered by the JSON routes
    return {
        code: {"description": spec["description"], "content": {"application/json": {"schema": ref}}}
        for code, spec in errors(*codes).items()
    }


# The limit of a body that carries a few settings (an alias, a split, index options).
SMALL_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class JsonBody:
    payload: Any
    size: int  # bytes read


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; refused before reading if it is over the limit."""
    return (await read_json_body(request, limit)).payload


async def read_json_body(request: Request, limit: int) -> JsonBody:
    """The body parsed as JSON, and its size (the services validate a big one off the
    event loop)."""
    body = await read_json_text(request, limit)
    return JsonBody(parse_json(body), len(body))


async def read_json_text(request: Request, limit: int) -> bytes:
    """The body's JSON text, not parsed yet: not empty, and not of another media type."""
    check_json_type(request.headers.get("content-type", ""))
    body = await read_body(request, limit)
    if not body:
        raise MalformedBody('the body is empty; send JSON like {"input_data": {...}}')
    return body


async def read_body(request: Request, limit: int) -> bytes:
    """The body's bytes; refused before reading if its length is over the limit, and
    as soon as what arrives is."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"the body has {int(length)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        # On the loop even when big: orjson holds the GIL for the whole parse (~9 ms a
        # MiB), so a thread would stop the loop just as long. Validation, which can
        # yield, goes off the loop (ModelService.validate).
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise not_json(exc) from None


def check_json_type(content_type: str) -> None:
    """A body without a Content-Type is read as JSON; one that says otherwise is refused."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            "the body must be JSON, sent with Content-Type: application/json; "
            f"got {content_type[:100]!r}"
        )


def not_json(exc: orjson.JSONDecodeError) -> MalformedBody:
    """Where the text stops being JSON, and what is there."""
    near = exc.doc[exc.pos : exc.pos + 20]
    message = f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if near:
        message += f", near {near!r}"
    if near.startswith(("NaN", "Infinity")):
        message += "; NaN and Infinity are not JSON: send finite numbers"
    return MalformedBody(message)
