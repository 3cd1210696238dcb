"""GET /models/{model_type}/{version}/card, GET /models/{model_type}/compare?versions=A,B.

Included before api/routes/models.py: its `/models/{model_type}/{version}` would
otherwise take `compare` for a version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.deps import ModelTypePath, ReaderDep, ServicesDep, VersionPath
from api.responses import page_errors

router = APIRouter(tags=["models"])

# The page is self-contained: it loads nothing, runs nothing, and a browser that opened
# it with `?api_key=` never sends that URL on as a referrer.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-cache",
}
HTML_PAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The card, one HTML document"}
}
Versions = Annotated[
    str,
    Query(
        max_length=200,
        description="two versions of the type, comma-separated",
        examples=["1,2"],
    ),
]


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get(
    "/models/{model_type}/compare",
    status_code=200,
    response_class=HTMLResponse,
    responses={**HTML_PAGE, **page_errors(401, 404, 422, 503)},
    summary="Two versions' model cards side by side, with their metric differences",
)
async def compare_cards(
    model_type: ModelTypePath,
    versions: Versions,
    request: Request,
    services: ServicesDep,
    _: ReaderDep,
) -> HTMLResponse:
    page = await services.cards.compare(model_type, versions, _base_url(request))
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.get(
    "/models/{model_type}/{version}/card",
    status_code=200,
    response_class=HTMLResponse,
    responses={**HTML_PAGE, **page_errors(401, 404, 422, 503)},
    summary="A version's model card: metadata, metrics, evaluation plots, schema, example",
)
async def model_card(
    model_type: ModelTypePath,
    version: VersionPath,
    request: Request,
    services: ServicesDep,
    _: ReaderDep,
) -> HTMLResponse:
    page = await services.cards.card(model_type, version, _base_url(request))
    return HTMLResponse(page, headers=PAGE_HEADERS)
