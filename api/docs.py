"""/docs (Swagger UI) and /redoc (ReDoc) from files in api/static, not from a CDN.

FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc's from Google
Fonts), so on a machine without internet they are blank. api/static/SOURCES.md says
which npm packages the files come from; `make docs-assets` fetches them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
SWAGGER_JS = f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC_URL}/swagger-ui/swagger-ui.css"
REDOC_JS = f"{STATIC_URL}/redoc/redoc.standalone.js"
FAVICON = f"{STATIC_URL}/swagger-ui/favicon-32x32.png"

# Swagger UI's default validatorUrl sends the spec's address to an online validator
# (an <img> of its badge); offline it is a failed request, online a leak.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}
# HTML pages, not API operations: nothing for the OpenAPI document.
PAGE: dict[str, Any] = {
    "include_in_schema": False,
    "status_code": 200,
    "response_model": None,
    "response_class": HTMLResponse,
}


def install_docs(app: FastAPI) -> None:
    """Mounts the assets and adds the pages; create the app with docs_url=None and
    redoc_url=None. The pages stay public, like the OpenAPI document they render."""
    # A Mount is never in the OpenAPI document; check_dir fails at start-up, not per page.
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR, check_dir=True), name="static")
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", **PAGE)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return swagger_ui_page(request.scope.get("root_path", ""), openapi_url, title, redirect_url)

    # Kept as FastAPI serves it (an inline script), though keys go in X-API-Key, not OAuth2.
    @app.get(redirect_url, **PAGE)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", **PAGE)
    async def redoc(request: Request) -> HTMLResponse:
        return redoc_page(request.scope.get("root_path", ""), openapi_url, title)


def swagger_ui_page(root: str, openapi_url: str, title: str, redirect_url: str) -> HTMLResponse:
    """`root` is the ASGI root_path, for an API served under a path prefix."""
    return get_swagger_ui_html(
        openapi_url=root + openapi_url,
        title=f"{title} - Swagger UI",
        swagger_js_url=root + SWAGGER_JS,
        swagger_css_url=root + SWAGGER_CSS,
        swagger_favicon_url=root + FAVICON,
        oauth2_redirect_url=root + redirect_url,
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )


def redoc_page(root: str, openapi_url: str, title: str) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=root + openapi_url,
        title=f"{title} - ReDoc",
        redoc_js_url=root + REDOC_JS,
        redoc_favicon_url=root + FAVICON,
        with_google_fonts=False,
    )
