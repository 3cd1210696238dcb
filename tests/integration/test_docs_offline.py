"""/docs and /redoc rendered by headless Chromium that can reach no host but 127.0.0.1:
every operation of the OpenAPI document shows, from the assets the API serves itself."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.browser import Chromium
from tests.integration.stack import Stack

# The first test that asks for `chromium` may wait for apt-get to install it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Operations as the two renderers lay them out (Swagger UI 5, ReDoc 2).
SWAGGER_METHOD = re.compile(r'class="opblock-summary-method">(\w+)<')
SWAGGER_PATH = re.compile(r'class="opblock-summary-path" data-path="([^"]+)"')
REDOC_OPERATION = re.compile(r'class="[^"]*http-verb (\w+)">\w+</span><span[^>]*>([^<]+)</span>')
URL = re.compile(r"""(?:src|href)=["']([^"']+)["']|(https?://[^\s"'<>)]+)""")
EXAMPLES = {"POST /predict/{model_type}", "POST /jobs", "GET /logs", "GET /jobs/{job_id}"}


def documented_operations(stack: Stack) -> set[str]:
    spec = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    return {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}


def test_swagger_ui_renders_every_operation_offline(stack: Stack, chromium: Chromium) -> None:
    dom = chromium.dump_dom(f"{stack.url}/docs")
    methods, paths = SWAGGER_METHOD.findall(dom), SWAGGER_PATH.findall(dom)
    assert len(methods) == len(paths), "an operation without its method or path"
    rendered = {f"{method} {path}" for method, path in zip(methods, paths, strict=True)}
    assert rendered >= EXAMPLES
    assert rendered == documented_operations(stack)


def test_redoc_renders_every_operation_offline(stack: Stack, chromium: Chromium) -> None:
    dom = chromium.dump_dom(f"{stack.url}/redoc")
    rendered = {f"{method.upper()} {path}" for method, path in REDOC_OPERATION.findall(dom)}
    assert rendered >= EXAMPLES
    assert rendered == documented_operations(stack)
    assert "Model serving" in dom  # the API's title, from the document


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_reference_nothing_but_the_server(stack: Stack, page: str) -> None:
    with stack.client(None) as client:  # public: no key
        response = client.get(page)
        assert response.status_code == 200
        references = [ref or absolute for ref, absolute in URL.findall(response.text)]
        assert len(references) >= 2  # the script and the favicon at least
        for reference in references:
            assert not re.match(r"(?i)(https?:)?//", reference), f"{page} loads {reference}"
            assert reference.startswith("/static/"), reference
            assert client.get(reference).status_code == 200, reference


def test_the_browser_reaches_no_host_but_127_0_0_1(
    stack: Stack, chromium: Chromium, tmp_path: Path
) -> None:
    """The isolation has teeth: `localhost` is this machine too, and resolves without the
    flags, yet a script from it never loads; the same script from 127.0.0.1 does."""
    script = f"{stack.port}/static/redoc/redoc.standalone.js"
    loaded = {}
    for host in ["127.0.0.1", "localhost"]:
        probe = tmp_path / f"probe-{host}.html"
        probe.write_text(
            f'<html><head><script src="http://{host}:{script}"></script></head><body>'
            "<script>document.body.dataset.redoc = typeof Redoc</script></body></html>"
        )
        match = re.search(r'data-redoc="(\w+)"', chromium.dump_dom(probe.as_uri(), 5_000))
        loaded[host] = match.group(1) if match else None
    assert loaded == {"127.0.0.1": "object", "localhost": "undefined"}
