"""GET /logs: the caller's prediction log rows, newest first, a capped page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response

from api.deps import ReaderDep, ServicesDep
from api.responses import errors
from common.errors import InvalidInput
from common.prediction_log.query import LogQuery, decode_cursor
from common.schemas import LogEntry

router = APIRouter(tags=["logs"])

MAX_LOG_ROWS = 1000
Filter = Annotated[str | None, Query(max_length=64)]
NEXT_CURSOR_HEADER = "X-Next-Cursor"
# RFC 3339, offset required: FastAPI's datetime would also take "0.5" as a Unix time.
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"


def moment(description: str) -> Any:
    return Query(
        pattern=RFC3339, description=description, json_schema_extra={"format": "date-time"}
    )


def parse_moment(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # the pattern passed, the date did not (a 30 February)
        raise InvalidInput(f"{name} is not a valid date and time: {value!r}") from None


@router.get(
    "/logs",
    status_code=200,
    response_model=list[LogEntry],
    responses=errors(401, 403, 422),
    summary="The caller's prediction log rows, newest first",
    description=(
        "A predict key sees its own rows; an admin key sees every key's, and may filter "
        "by `owner` (a key's digest, as rows show it). An answer holds at most `n_limit` "
        "rows and at most SERVING_LOGS_MAX_RESPONSE_BYTES: when more rows match, the "
        f'`{NEXT_CURSOR_HEADER}` header (and a `Link: rel="next"`) gives the next page.'
    ),
)
async def read_logs(
    request: Request,
    services: ServicesDep,
    caller: ReaderDep,
    n_limit: Annotated[int, Query(ge=1, le=MAX_LOG_ROWS, description="how many rows")] = 10,
    request_id: Filter = None,
    job_id: Filter = None,
    model_type: Filter = None,
    version: Filter = None,
    status: Literal["ok", "error"] | None = None,
    shadow: Annotated[bool | None, Query(description="only shadow rows, or none")] = None,
    primary_request_id: Filter = None,
    since: Annotated[str | None, moment("created at or after (RFC 3339)")] = None,
    until: Annotated[str | None, moment("created before (RFC 3339)")] = None,
    owner: Filter = None,
    cursor: Annotated[str | None, Query(max_length=64, description="the next page")] = None,
) -> Response:
    query = LogQuery(
        tenant=caller.tenant,
        limit=n_limit,
        owner=owner,
        request_id=request_id,
        job_id=job_id,
        model_type=model_type,
        version=version,
        status=status,
        shadow=shadow,
        primary_request_id=primary_request_id,
        since=parse_moment("since", since),
        until=parse_moment("until", until),
        before_id=decode_cursor(cursor) if cursor else None,
    )
    page = await services.logs.page(query)
    headers = {}
    if page.next_cursor is not None:
        # Never the key itself, when the caller sent it as a query parameter.
        params = [
            (k, v) for k, v in request.query_params.multi_items() if k not in {"cursor", "api_key"}
        ]
        link = f"{request.url.path}?{urlencode([*params, ('cursor', page.next_cursor)])}"
        headers = {NEXT_CURSOR_HEADER: page.next_cursor, "Link": f'<{link}>; rel="next"'}
    return Response(page.body, media_type="application/json", headers=headers)
