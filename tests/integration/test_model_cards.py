"""Model cards on a real stack (API, worker, Redis, S3 server): a card opened in headless
Chromium shows all five plots loaded and the metadata's metrics; the PNGs are in the
store beside the artifact; two versions compare side by side; bad requests are 4xx."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.routes.cards import PAGE_HEADERS
from common.cache import notify_registry_changed
from common.cards.page import figure
from common.cards.publish import DrawnCard
from common.cards.summary import PLOTS
from common.training import TrainedModel
from dev.services import wait_until
from tests.browser import Chromium
from tests.integration.stack import READER_KEY, Stack

# The first test that asks for `chromium` may wait for apt-get to install it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SECOND = "second look, <b>bold</b> & the same artifact"
CSP = PAGE_HEADERS["Content-Security-Policy"]
# Run in the page once everything loaded: each image's intrinsic size, into the DOM that
# Chromium dumps. The page's own policy plus a nonce for this script alone.
PROBE = f"""<meta http-equiv="Content-Security-Policy" content="{CSP}; script-src 'nonce-probe'">
<script nonce="probe">
window.addEventListener("load", () => {{
  const images = [...document.images].map(img => ({{
    plot: img.dataset.plot, complete: img.complete,
    width: img.naturalWidth, height: img.naturalHeight,
  }}));
  const pre = document.createElement("pre");
  pre.id = "widths";
  pre.textContent = JSON.stringify(images);
  document.body.appendChild(pre);
}});
</script>"""


@pytest.fixture(scope="module")
def cards(
    make_stack: Callable[..., Stack],
    demo_models: dict[str, TrainedModel],
    demo_cards: dict[str, DrawnCard],
) -> Stack:
    """The demo models with their cards (every stack publishes them so); xgboost v2 (same
    artifact, another description) with its card, the session's drawing of that model;
    logistic_regression v2 without one."""
    stack = make_stack("cards")
    registry = stack.registry()
    xgb, logistic = demo_models["xgboost"], demo_models["logistic_regression"]
    second = registry.publish({**xgb.metadata, "description": SECOND}, xgb.artifact)
    demo_cards["xgboost"].write(registry.store, second)
    registry.publish(logistic.metadata, logistic.artifact)
    notify_registry_changed(stack.settings)
    wait_until(lambda: published(stack) == {"xgboost": 2, "logistic_regression": 2}, 30, "v2s")
    return stack


def published(stack: Stack) -> dict[str, int]:
    with stack.client() as client:
        models = client.get("/models").json()["models"]
    return {m["model_type"]: len(m["versions"]) for m in models}


def get_page(stack: Stack, path: str, **params: str) -> httpx.Response:
    with stack.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return response


def open_in_chromium(
    chromium: Chromium, html: str, folder: Path
) -> tuple[str, list[dict[str, Any]]]:
    """The DOM Chromium built from the page, and what the probe saw of each image."""
    page = folder / "card.html"
    page.write_text(html.replace("</head>", PROBE + "</head>", 1), encoding="utf-8")
    dom = chromium.dump_dom(page.as_uri(), budget_ms=5_000)
    found = re.search(r'<pre id="widths">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run: {dom[-500:]}"
    return dom, json.loads(unescape(found.group(1)))


def metric_cells(dom: str, table: str) -> dict[str, str]:
    """name -> the text shown, for each row of the table of that class."""
    body = re.search(rf'<table class="{table}">(.*?)</table>', dom, re.S)
    assert body, f"no table {table}"
    rows = re.findall(r'<tr data-metric="([^"]+)"><th>[^<]*</th><td[^>]*>([^<]*)</td>', body[1])
    return {unescape(name): text for name, text in rows}


@pytest.mark.parametrize("model_type", ["xgboost", "logistic_regression"])
def test_a_card_in_chromium_shows_every_plot_and_the_metadata_s_metrics(
    cards: Stack, chromium: Chromium, tmp_path: Path, model_type: str
) -> None:
    meta = cards.registry().metadata(model_type, "1")
    response = get_page(cards, f"/models/{model_type}/1/card")
    assert response.headers["content-security-policy"] == CSP
    dom, images = open_in_chromium(chromium, response.text, tmp_path)
    assert [image["plot"] for image in images] == list(PLOTS)
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert metric_cells(dom, "metrics") == {n: figure(v) for n, v in meta.metrics.items()}
    assert metric_cells(dom, "metrics")["accuracy"] == f"{meta.metrics['accuracy']:.4g}"
    # The PNGs are in the store beside the artifact, and they are what the page shows.
    store = cards.registry().store
    prefix = f"{model_type}/1/"
    expected = {f"{prefix}card/{name}.png" for name in PLOTS} | {f"{prefix}card/evaluation.json"}
    assert set(store.list(prefix)) == {prefix + "metadata.json", meta.artifact_key, *expected}
    shown = dict(
        re.findall(
            r'data-plot="(\w+)" alt="[^"]*" src="data:image/png;base64,([^"]+)"', response.text
        )
    )
    for name in PLOTS:
        png = store.get(f"{prefix}card/{name}.png")
        assert base64.b64decode(shown[name]) == png
        assert int.from_bytes(png[16:20], "big") == next(
            i["width"] for i in images if i["plot"] == name
        )
    evaluation = json.loads(store.get(f"{prefix}card/evaluation.json"))
    assert evaluation["artifact_sha256"] == meta.sha256
    assert evaluation["metrics"]["roc_auc"] == pytest.approx(meta.metrics["roc_auc"], abs=1e-9)


def test_the_probe_sees_a_broken_plot(cards: Stack, chromium: Chromium, tmp_path: Path) -> None:
    """The check has teeth: a plot whose bytes are not a PNG has no natural width."""
    html = get_page(cards, "/models/xgboost/1/card").text
    broken = re.sub(
        r'(data-plot="pr" alt="[^"]*" src="data:image/png;base64,)[^"]+', r"\1AAAA", html
    )
    _, images = open_in_chromium(chromium, broken, tmp_path)
    widths = {image["plot"]: image["width"] for image in images}
    assert widths["pr"] == 0
    assert all(width > 0 for plot, width in widths.items() if plot != "pr")


def test_the_api_key_query_parameter_opens_a_card_in_a_browser(
    cards: Stack, chromium: Chromium
) -> None:
    dom = chromium.dump_dom(f"{cards.url}/models/xgboost/1/card?api_key={READER_KEY}", 5_000)
    assert "<h1>xgboost v1</h1>" in dom
    assert dom.count('class="plot"') == len(PLOTS)


def test_the_card_s_example_request_predicts(cards: Stack) -> None:
    """The page's curl command, run as written, with the key in $API_KEY."""
    html = get_page(cards, "/models/xgboost/2/card").text
    command = unescape(re.search(r'<pre class="example">(.*?)</pre>', html, re.S)[1])  # type: ignore[index]
    assert shlex.split(command)[3] == f"{cards.url}/predict/xgboost/2"
    done = subprocess.run(
        ["bash", "-c", command.replace("curl ", "curl -sS --fail-with-body ", 1)],
        env={**os.environ, "API_KEY": READER_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert (body["model_type"], body["version"]) == ("xgboost", "2")
    assert body["predictions"][0]["label"] in {"malignant", "benign"}


def test_compare_shows_two_versions_side_by_side(cards: Stack) -> None:
    html = get_page(cards, "/models/xgboost/compare", versions="1,2").text
    assert re.findall(r'<article class="card" data-version="(\w+)"', html) == ["1", "2"]
    assert "demo xgboost on the breast-cancer data set" in html
    assert "second look, &lt;b&gt;bold&lt;/b&gt; &amp; the same artifact" in html
    assert "<b>bold" not in html
    assert html.count('class="plot"') == 2 * len(PLOTS)
    meta = cards.registry().metadata("xgboost", "1")
    diff = metric_cells(html, "metric-diff")
    assert diff == {name: figure(value) for name, value in meta.metrics.items()}
    # A version without a card beside one with it.
    mixed = get_page(cards, "/models/logistic_regression/compare", versions="1,2").text
    assert mixed.count('class="plot"') == len(PLOTS)
    assert "No evaluation was published for this version." in mixed


def test_compare_is_not_taken_for_a_version(cards: Stack) -> None:
    """/models/{type}/{version} is a route too: `compare` must reach the cards."""
    html = get_page(cards, "/models/xgboost/compare", versions="1,1").text
    assert re.findall(r'data-version="(\w+)"', html) == ["1", "1"]


def test_a_version_without_a_card_has_a_page_without_plots(cards: Stack) -> None:
    html = get_page(cards, "/models/logistic_regression/2/card").text
    assert "No evaluation was published for this version." in html
    assert "<img" not in html
    assert '<table class="metrics">' in html and '<pre class="example">curl' in html


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "query.versions: Field required"),
        ({"versions": "1"}, "exactly two versions"),
        ({"versions": "1,2,3"}, "exactly two versions"),
        ({"versions": "1,"}, "exactly two versions"),
        ({"versions": "1,.."}, "invalid version '..'"),
        ({"versions": "1," + "9" * 300}, "query.versions: String should have at most 200"),
    ],
)
def test_bad_versions_are_422_naming_the_problem(
    cards: Stack, params: dict[str, str], problem: str
) -> None:
    with cards.client() as client:
        response = client.get("/models/xgboost/compare", params=params)
    assert response.status_code == 422, response.text
    assert problem in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "params", "problem"),
    [
        ("/models/xgboost/9/card", {}, r"unknown version.* '9' of 'xgboost'"),
        ("/models/nothing/1/card", {}, "unknown model type 'nothing'"),
        ("/models/xgboost/compare", {"versions": "1,9"}, r"unknown version.* '9' of 'xgboost'"),
        ("/models/nothing/compare", {"versions": "1,2"}, "unknown model type 'nothing'"),
    ],
)
def test_unknown_models_are_404(
    cards: Stack, path: str, params: dict[str, str], problem: str
) -> None:
    with cards.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 404, response.text
    assert re.search(problem, response.json()["error"]["message"])


@pytest.mark.parametrize(
    ("path", "params"),
    [("/models/xgboost/1/card", {}), ("/models/xgboost/compare", {"versions": "1,2"})],
)
def test_cards_need_a_key(cards: Stack, path: str, params: dict[str, str]) -> None:
    with cards.client(None) as client:
        assert client.get(path, params=params).status_code == 401
        wrong = client.get(path, params={**params, "api_key": "wrong"})
        assert wrong.status_code == 401
        assert client.get(path, params={**params, "api_key": READER_KEY}).status_code == 200
