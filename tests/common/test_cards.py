"""Model cards: the evaluation against scikit-learn's own figures on the same rows, the
PNGs, the files beside the artifact, and the HTML page (escaping, metrics, example)."""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import struct
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn import metrics as skm
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from common.cards.evaluate import evaluate
from common.cards.page import CardView, card_html, compare_html, example_row, figure
from common.cards.plots import DPI, SIZE_INCHES, render_plots
from common.cards.publish import publish_card
from common.cards.store import PNG_MAGIC, evaluation_key, plot_key, read_card, write_card
from common.cards.summary import PLOTS
from common.errors import InvalidInput, InvalidModelName
from common.registry import ModelMetadata, Registry
from common.schemas import InputValidator
from common.services.cards import parse_versions
from common.store import ObjectStore
from common.training import DEMO_TYPES, TrainedModel, train_demo

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<script>alert('card')</script> & \"quotes\""


@pytest.fixture(scope="module")
def demo() -> dict[str, TrainedModel]:
    return {model_type: train_demo(model_type) for model_type in DEMO_TYPES}


@pytest.fixture
def published(registry: Registry, demo: dict[str, TrainedModel]) -> dict[str, ModelMetadata]:
    return {t: registry.publish(m.metadata, m.artifact) for t, m in demo.items()}


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG holds first after its magic."""
    assert png[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


class Tables(HTMLParser):
    """Every table's rows as lists of cell texts, by the table's class; and each
    `data-metric` row's `data-value`."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.values: dict[str, dict[str, str]] = {}
        self._table = self._metric = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
            self._metric = a.get("data-metric") or ""
        elif tag in ("td", "th") and self._table:
            self._cell = []
            if a.get("data-value") is not None:
                self.values.setdefault(self._table, {})[self._metric] = a["data-value"] or ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = ""


def tables(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def view(store: ObjectStore, meta: ModelMetadata) -> CardView:
    schema = InputValidator(meta, 10).json_schema()
    return CardView(meta, read_card(store, meta), schema, "http://127.0.0.1:8000")


# --- evaluation ----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", DEMO_TYPES)
def test_the_evaluation_matches_scikit_learn_on_the_held_out_rows(
    demo: dict[str, TrainedModel], model_type: str
) -> None:
    trained = demo[model_type]
    evaluation = evaluate(trained.estimator, trained.x_test, trained.y_test, trained.metadata)
    published = trained.metadata["metrics"]
    assert evaluation.roc is not None and evaluation.pr is not None
    # The area under the ROC points, by the trapezoid rule here, is the published AUC.
    area = float(np.trapezoid(evaluation.roc.y, evaluation.roc.x))
    assert area == pytest.approx(published["roc_auc"], abs=1e-9)
    assert evaluation.metrics["roc_auc"] == pytest.approx(published["roc_auc"], abs=1e-9)
    assert evaluation.metrics["accuracy"] == pytest.approx(published["accuracy"], abs=1e-12)
    assert evaluation.n_test == published["n_test"] == len(trained.y_test)
    proba = trained.estimator.predict_proba(trained.x_test)
    expected_ap = skm.average_precision_score(trained.y_test, proba[:, 1])
    assert evaluation.metrics["average_precision"] == pytest.approx(expected_ap, abs=1e-12)
    confusion = skm.confusion_matrix(trained.y_test, trained.estimator.predict(trained.x_test))
    assert evaluation.confusion == confusion.tolist()
    assert sum(map(sum, evaluation.confusion)) == len(trained.y_test)
    # Precision-recall: the last point is (recall 0, precision 1), the first recall is 1.
    assert (evaluation.pr.x[0], evaluation.pr.x[-1], evaluation.pr.y[-1]) == (1.0, 0.0, 1.0)
    assert evaluation.calibration is not None
    assert all(0 <= v <= 1 for v in evaluation.calibration.x + evaluation.calibration.y)


def test_importance_is_the_model_s_own_or_its_coefficients(
    demo: dict[str, TrainedModel],
) -> None:
    names = [f["name"] for f in demo["xgboost"].metadata["features"]]
    for model_type, expected in [
        ("xgboost", demo["xgboost"].estimator.feature_importances_),
        ("logistic_regression", np.abs(demo["logistic_regression"].estimator[-1].coef_[0])),
    ]:
        trained = demo[model_type]
        evaluation = evaluate(trained.estimator, trained.x_test, trained.y_test, trained.metadata)
        got = {fw.feature: fw.importance for fw in evaluation.importance}
        assert got == pytest.approx(dict(zip(names, map(float, expected), strict=True)))
        weights = [fw.importance for fw in evaluation.importance]
        assert weights == sorted(weights, reverse=True)
    assert (
        "feature_importances_"
        in evaluate(
            demo["xgboost"].estimator,
            demo["xgboost"].x_test,
            demo["xgboost"].y_test,
            demo["xgboost"].metadata,
        ).importance_method
    )


def test_a_model_without_importances_gets_permutation_importance(
    demo: dict[str, TrainedModel],
) -> None:
    trained = demo["xgboost"]
    x_train = trained.x_test[:60]  # any rows: the point is the method, not the fit
    knn = KNeighborsClassifier(3).fit(x_train, trained.y_test[:60])
    evaluation = evaluate(knn, trained.x_test[60:], trained.y_test[60:], trained.metadata)
    assert evaluation.importance_method.startswith("permutation importance")
    assert len(evaluation.importance) == 30
    assert any(fw.importance != 0 for fw in evaluation.importance)


def iris_meta(registry: Registry) -> tuple[Any, Any, Any, ModelMetadata]:
    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    fields = {
        "model_type": "iris",
        "framework": "sklearn",
        "artifact_format": "skops",
        "features": [{"name": n} for n in data.feature_names],
        "classes": list(data.target_names),
    }
    return model, data.data, data.target, registry.publish(fields, b"iris artifact")


def test_more_than_two_classes_keep_the_confusion_matrix_and_importance(
    registry: Registry,
) -> None:
    model, x, y, meta = iris_meta(registry)
    evaluation = evaluate(model, x, y, meta)
    assert evaluation.roc is evaluation.pr is evaluation.calibration is None
    assert len(evaluation.confusion) == 3 and all(len(row) == 3 for row in evaluation.confusion)
    assert "need two classes; this model has 3" in evaluation.notes[0]
    assert "averaged over classes" in evaluation.importance_method
    assert list(render_plots(evaluation)) == ["confusion", "importance"]
    keys = publish_card(registry.store, meta, model, x, y)
    html = card_html(view(registry.store, meta))
    assert keys == [plot_key(meta, "confusion"), plot_key(meta, "importance"), evaluation_key(meta)]
    assert html.count("<img") == 2
    assert "need two classes; this model has 3" in html
    assert tables(html).tables["confusion"][1][1:] == [str(n) for n in evaluation.confusion[0]]


@pytest.mark.parametrize(
    ("x_shape", "labels", "problem"),
    [
        ((10, 29), [0] * 10, "x_test has shape (10, 29); expected (rows, 30 features)"),
        ((10, 30), [0] * 9, "y_test has shape (9,); expected (10,)"),
        ((10, 30), [0, 1, 2, 0, 1, 0, 1, 0, 1, 0], "class indices 0..1 (the metadata's "),
        ((10, 30), [0, 1, 2, 0, 1, 0, 1, 0, 1, 0], "got values from 0 to 2"),
        ((10, 30), ["benign"] * 10, "got values of type <U6"),
    ],
)
def test_rows_or_labels_that_do_not_fit_are_named(
    demo: dict[str, TrainedModel], x_shape: tuple[int, int], labels: list[Any], problem: str
) -> None:
    trained = demo["xgboost"]
    with pytest.raises(ValueError, match=re.escape(problem)):
        evaluate(trained.estimator, np.zeros(x_shape), np.array(labels), trained.metadata)


# --- plots and the store -------------------------------------------------------------------


def test_publish_card_writes_valid_pngs_and_the_evaluation_beside_the_artifact(
    registry: Registry, published: dict[str, ModelMetadata], demo: dict[str, TrainedModel]
) -> None:
    meta, trained = published["xgboost"], demo["xgboost"]
    keys = publish_card(registry.store, meta, trained.estimator, trained.x_test, trained.y_test)
    prefix = "xgboost/1/card/"
    assert keys == [f"{prefix}{name}.png" for name in PLOTS] + [f"{prefix}evaluation.json"]
    assert set(registry.store.list("xgboost/1")) == {
        "xgboost/1/metadata.json",
        "xgboost/1/model.ubj",
        *keys,
    }
    width, height = (int(SIZE_INCHES[0] * DPI), int(SIZE_INCHES[1] * DPI))
    for name in PLOTS:
        png = registry.store.get(plot_key(meta, name))
        expected = (width, int(height * 1.25)) if name == "importance" else (width, height)
        assert png_size(png) == expected
        pixels = imread(io.BytesIO(png))  # decodes the whole image, not just its header
        assert pixels.shape[:2] == expected[::-1]
        assert pixels.std() > 0  # something is drawn
    stored = json.loads(registry.store.get(evaluation_key(meta)))
    assert stored["artifact_sha256"] == meta.sha256
    assert stored["plots"] == list(PLOTS)
    assert stored["n_test"] == 143 and stored["positive_class"] == "benign"
    assert stored["metrics"]["roc_auc"] == pytest.approx(meta.metrics["roc_auc"], abs=1e-9)
    assert registry.catalog().available() == {"logistic_regression": ["1"], "xgboost": ["1"]}


def test_the_same_evaluation_gives_the_same_pngs(demo: dict[str, TrainedModel]) -> None:
    trained = demo["logistic_regression"]
    evaluation = evaluate(trained.estimator, trained.x_test, trained.y_test, trained.metadata)
    assert render_plots(evaluation) == render_plots(evaluation)


def test_a_card_of_another_artifact_is_refused(
    registry: Registry, published: dict[str, ModelMetadata], demo: dict[str, TrainedModel]
) -> None:
    trained = demo["xgboost"]
    evaluation = evaluate(trained.estimator, trained.x_test, trained.y_test, trained.metadata)
    pngs = render_plots(evaluation)
    other = published["logistic_regression"]
    with pytest.raises(ValueError, match="not of logistic_regression v1"):
        write_card(
            registry.store, other, evaluation.summary(published["xgboost"].sha256, list(pngs)), pngs
        )
    assert registry.store.list("logistic_regression/1/card") == []


# --- the page ------------------------------------------------------------------------------


@pytest.fixture
def carded(
    registry: Registry, published: dict[str, ModelMetadata], demo: dict[str, TrainedModel]
) -> ModelMetadata:
    trained = demo["xgboost"]
    fields = {**trained.metadata, "description": HOSTILE}
    meta = registry.publish(fields, trained.artifact)
    publish_card(registry.store, meta, trained.estimator, trained.x_test, trained.y_test)
    return meta


def test_the_page_escapes_a_hostile_description(registry: Registry, carded: ModelMetadata) -> None:
    html = card_html(view(registry.store, carded))
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;card&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    assert not re.search(r"""(src|href)=["'](?!data:image/png;base64,)""", html)  # no outside asset


def test_the_page_shows_every_metric_the_plots_and_the_metadata(
    registry: Registry, carded: ModelMetadata
) -> None:
    files = read_card(registry.store, carded)
    html = card_html(view(registry.store, carded))
    parsed = tables(html)
    shown = {row[0]: row[1] for row in parsed.tables["metrics"]}
    assert shown == {name: figure(value) for name, value in carded.metrics.items()}
    assert shown["accuracy"] == "0.958" and shown["n_train"] == "426"
    exact = parsed.values["metrics"]
    assert {name: float(v) for name, v in exact.items()} == carded.metrics
    assert files.summary is not None
    evaluated = {row[0]: row[1] for row in parsed.tables["evaluation-metrics"]}
    assert evaluated == {n: figure(v) for n, v in files.summary.metrics.items()}
    metadata = {row[0]: row[1] for row in parsed.tables["metadata"]}
    assert metadata["sha256"] == carded.sha256 and metadata["version"] == "2"
    assert metadata["library versions"].startswith("numpy ")
    images = re.findall(r'data-plot="(\w+)" alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert [name for name, _ in images] == list(PLOTS)
    for name, encoded in images:
        assert base64.b64decode(encoded) == files.plots[name]
    assert len(parsed.tables["features"]) == 31  # a header and 30 features


def test_the_example_request_is_one_valid_row_in_shell_quotes(registry: Registry) -> None:
    fields = {
        "model_type": "quoted",
        "framework": "sklearn",
        "artifact_format": "skops",
        "features": [
            {"name": "it's <b>", "type": "float", "min": 1.0, "max": 4.0},
            {"name": "count", "type": "int", "min": 1, "max": 4},
            {"name": "flag", "type": "bool"},
            {"name": "open", "type": "float"},
        ],
        "classes": [0, 1],
    }
    meta = registry.publish(fields, b"artifact")
    html = card_html(view(registry.store, meta))
    command = unescape(re.search(r'<pre class="example">(.*?)</pre>', html, re.S).group(1))  # type: ignore[union-attr]
    words = shlex.split(command)
    assert words[:4] == ["curl", "-X", "POST", "http://127.0.0.1:8000/predict/quoted/1"]
    body = json.loads(words[words.index("-d") + 1])
    assert body == {"input_data": {"it's <b>": 2.5, "count": 2, "flag": False, "open": 0.0}}
    assert InputValidator(meta, 1).validate(body["input_data"]) == [[2.5, 2, False, 0.0]]
    assert example_row(meta.features) == body["input_data"]


def test_a_version_without_a_card_still_has_a_page(
    registry: Registry, published: dict[str, ModelMetadata]
) -> None:
    meta = published["logistic_regression"]
    html = card_html(view(registry.store, meta))
    assert "No evaluation was published for this version." in html
    assert "<img" not in html
    assert {row[0] for row in tables(html).tables["metrics"]} == set(meta.metrics)
    assert '<pre class="example">curl' in html


def test_a_damaged_card_says_so_and_shows_no_broken_image(
    registry: Registry, carded: ModelMetadata
) -> None:
    registry.store.put(plot_key(carded, "roc"), b"not a png")
    registry.store.delete(plot_key(carded, "pr"))
    html = card_html(view(registry.store, carded))
    assert html.count("<img") == 3
    assert "Missing from the store: ROC curve, Precision-recall curve." in html
    registry.store.put(evaluation_key(carded), b"{not json")
    html = card_html(view(registry.store, carded))
    assert "No evaluation was published for this version (evaluation.json is unreadable" in html
    assert "<img" not in html


def test_the_compare_page_has_both_cards_and_their_differences(
    registry: Registry, published: dict[str, ModelMetadata], carded: ModelMetadata
) -> None:
    first = published["xgboost"]
    html = compare_html(view(registry.store, first), view(registry.store, carded))
    assert re.findall(r'<article class="card" data-version="(\w+)"', html) == ["1", "2"]
    assert "demo xgboost on the breast-cancer data set" in html
    assert "&lt;script&gt;" in html and "<script" not in html
    diff = tables(html).tables["metric-diff"]
    assert diff[0] == ["metric", "v1", "v2", "difference"]
    # The same artifact: every published figure equal, every difference zero.
    assert {row[0]: row[1:] for row in diff[1:]} == {
        name: [figure(v), figure(v), "0"] for name, v in first.metrics.items()
    }
    assert html.count("<img") == 5  # v1 has no card, v2 its five plots
    assert "No evaluation was published for this version." in html


def test_versions_to_compare_are_exactly_two_valid_names() -> None:
    assert parse_versions("1,2") == ("1", "2")
    assert parse_versions(" 1 , 1.2 ") == ("1", "1.2")
    for bad in ["1", "1,2,3", "1,", ",2", ""]:
        with pytest.raises(InvalidInput, match="exactly two versions"):
            parse_versions(bad)
    with pytest.raises(InvalidModelName, match=re.escape("invalid version '..'")):
        parse_versions("1,..")


def test_reading_and_rendering_cards_needs_no_ml_library() -> None:
    """The API image has no NumPy, scikit-learn or matplotlib: the card's reading side
    imports none of them."""
    code = (
        "import sys, common.cards, common.cards.page, common.cards.store, "
        "common.cards.publish, common.services.cards, api.routes.cards; "
        "print(sorted({m.partition('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert "common" in loaded
    assert loaded & {"numpy", "sklearn", "matplotlib", "scipy", "xgboost", "PIL"} == set()
