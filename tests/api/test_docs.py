"""api/docs.py and api/static: the docs pages load only files the API serves itself, and
those files are the ones api/static/SOURCES.md and SHA256SUMS describe.

The browser check (the pages render offline) is tests/integration/test_docs_offline.py."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import httpx
import pytest

from api.docs import STATIC_DIR
from api.main import create_app
from common.settings import Settings
from tests.deploy.test_dockerfiles import API_DOCKERFILE, copy_sources, final_stage, ignored

ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = ROOT / "dev" / "fetch_docs_assets.sh"
REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def get_all(*paths: str, root_path: str = "") -> list[httpx.Response]:
    """GETs through the app itself (no lifespan, so no Redis is needed)."""

    async def call() -> list[httpx.Response]:
        app = create_app(Settings(api_keys=[], admin_api_keys=[]))
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(call())


def checksums() -> dict[str, str]:
    lines = (STATIC_DIR / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines)}


def test_every_asset_is_listed_with_its_checksum() -> None:
    listed = checksums()
    on_disk = {
        str(path.relative_to(STATIC_DIR))
        for folder in ("swagger-ui", "redoc")
        for path in (STATIC_DIR / folder).rglob("*")
        if path.is_file()
    }
    assert set(listed) == on_disk
    assert {"swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"} <= on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name


def test_sources_name_the_versions_the_fetch_script_pins() -> None:
    script = FETCH_SCRIPT.read_text()
    swagger = re.search(r"SWAGGER_UI_VERSION=\$\{1:-([\d.]+)\}", script)
    redoc = re.search(r"REDOC_VERSION=\$\{2:-([\d.]+)\}", script)
    assert swagger and redoc
    sources = (STATIC_DIR / "SOURCES.md").read_text()
    assert f"| swagger-ui/ | swagger-ui-dist@{swagger.group(1)} | Apache-2.0" in sources
    assert f"| redoc/ | redoc@{redoc.group(1)} | MIT" in sources
    assert redoc.group(1).startswith("2."), "get_redoc_html loads a classic script: ReDoc 2"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_page_loads_only_what_the_api_serves(page: str) -> None:
    (response,) = get_all(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text
    references = REFERENCE.findall(response.text)
    assert len(references) == (3 if page == "/docs" else 2)  # (css,) favicon, script
    for reference, served in zip(references, get_all(*references), strict=True):
        assert served.status_code == 200, reference
        expected = CONTENT_TYPES[Path(reference).suffix]
        assert served.headers["content-type"].startswith(expected), reference
        assert served.content == (STATIC_DIR / reference.removeprefix("/static/")).read_bytes()


def test_under_a_path_prefix_the_pages_point_below_it() -> None:
    docs, redoc = get_all("/docs", "/redoc", root_path="/serving")
    for response in (docs, redoc):
        references = REFERENCE.findall(response.text)
        assert references and all(ref.startswith("/serving/static/") for ref in references)
    assert "url: '/serving/openapi.json'" in docs.text
    assert 'spec-url="/serving/openapi.json"' in redoc.text


def test_redoc_loads_no_google_fonts_and_swagger_no_online_validator() -> None:
    docs, redoc = get_all("/docs", "/redoc")
    assert "fonts.googleapis" not in redoc.text
    assert '"validatorUrl": null' in docs.text


def test_the_docs_and_the_assets_are_not_operations() -> None:
    # api/docs.py is one folder up from api/static: what a `..` would reach.
    spec, missing, *escapes = get_all(
        "/openapi.json", "/static/nope.js", "/static/%2e%2e/docs.py", "/static/..%2fdocs.py"
    )
    paths = spec.json()["paths"]
    assert "/predict/{model_type}" in paths  # the document is the real one
    assert not [p for p in paths if p.startswith(("/static", "/docs", "/redoc"))]
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "http_error"
    assert [escape.status_code for escape in escapes] == [404, 404]


def test_the_api_image_copies_the_assets() -> None:
    assert "api" in copy_sources(final_stage(API_DOCKERFILE))
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for name in checksums():
        assert not ignored(f"api/static/{name}", rules), f"{name} is left out of the image"
