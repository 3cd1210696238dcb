"""A model card as one self-contained HTML document: the plots are `data:` URIs, the
style is inline, there is no script, so the page works offline, needs no second
(authenticated) request and can be saved to a file. Every value from the metadata or
the store goes through `html.escape`."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from html import escape
from typing import Any

from common.cards.store import CardFiles
from common.cards.summary import PLOT_TITLES, EvaluationSummary
from common.registry import Feature, ModelMetadata

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:110rem}
h1{margin-bottom:.2rem} h2{margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4rem 0} th,td{border:1px solid #ddd;padding:.2rem .5rem}
th{text-align:left;background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem}
.plots{display:flex;flex-wrap:wrap;gap:1rem} figure{margin:0} img{max-width:100%;height:auto}
.note{color:#8a4b00} .compare{display:grid;grid-template-columns:1fr 1fr;gap:2rem}
"""


@dataclass(frozen=True)
class CardView:
    """What one card shows: the version, its stored card files, the JSON schema of one
    input row, and the API's base URL for the example request."""

    meta: ModelMetadata
    files: CardFiles
    input_schema: dict[str, Any]
    base_url: str


def card_html(view: CardView) -> str:
    title = f"{view.meta.model_type} v{view.meta.version}"
    return _document(f"Model card: {title}", _card_body(view, level=1))


def compare_html(left: CardView, right: CardView) -> str:
    a, b = left.meta, right.meta
    title = f"{a.model_type}: v{a.version} and v{b.version}"
    sections = [f"<h1>Compare {escape(title)}</h1>"]
    sections.append(_diff_table("Published metrics", a.version, b.version, a.metrics, b.metrics))
    if left.files.summary and right.files.summary:
        sections.append(
            _diff_table(
                "Held-out evaluation",
                a.version,
                b.version,
                left.files.summary.metrics,
                right.files.summary.metrics,
            )
        )
    cards = "".join(_card_body(view, level=2) for view in (left, right))
    sections.append(f'<div class="compare">{cards}</div>')
    return _document(f"Compare {title}", "".join(sections))


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _card_body(view: CardView, level: int) -> str:
    meta, h, sub = view.meta, f"h{level}", f"h{level + 1}"
    parts = [
        f'<article class="card" data-version="{escape(meta.version)}">',
        f"<{h}>{escape(meta.model_type)} v{escape(meta.version)}</{h}>",
        f'<p class="description">{escape(meta.description) or "<em>no description</em>"}</p>',
        f"<{sub}>Metadata</{sub}>{_metadata_table(meta)}",
        f"<{sub}>Metrics</{sub}>{_metrics_table(meta.metrics, 'metrics')}",
        f"<{sub}>Held-out evaluation</{sub}>{_evaluation(view.files)}",
        f"<{sub}>Input schema</{sub}>{_features_table(meta.features)}",
        f'<pre class="schema">{escape(json.dumps(view.input_schema, indent=2))}</pre>',
        f"<{sub}>Example request</{sub}>",
        f'<pre class="example">{escape(example_request(meta, view.base_url))}</pre>',
        "</article>",
    ]
    return "".join(parts)


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _metadata_table(meta: ModelMetadata) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.library_versions.items()))
    pairs = [
        ("model type", escape(meta.model_type)),
        ("version", escape(meta.version)),
        ("framework", escape(meta.framework)),
        ("library versions", escape(versions) or "not recorded"),
        ("artifact format", escape(meta.artifact_format)),
        ("sha256", f"<code>{escape(meta.sha256)}</code>"),
        ("created at", escape(meta.created_at.isoformat())),
        ("classes", escape(", ".join(map(str, meta.classes)))),
    ]
    if meta.artifact_deleted_at is not None:
        pairs.append(("artifact deleted at", escape(meta.artifact_deleted_at.isoformat())))
    return f'<table class="metadata">{_rows(pairs)}</table>'


def figure(value: float) -> str:
    """How the page writes a metric: four significant digits."""
    return f"{value:.4g}"


def _metrics_table(metrics: dict[str, float], css: str) -> str:
    if not metrics:
        return f'<p class="{css}">none recorded</p>'
    rows = "".join(
        f'<tr data-metric="{escape(name)}"><th>{escape(name)}</th>'
        f'<td class="num" data-value="{value!r}">{figure(value)}</td></tr>'
        for name, value in metrics.items()
    )
    return f'<table class="{css}">{rows}</table>'


def _evaluation(files: CardFiles) -> str:
    summary = files.summary
    if summary is None:
        why = f" ({escape(files.problem)})" if files.problem else ""
        text = f"No evaluation was published for this version{why}."
        return f'<p class="note no-evaluation">{text}</p>'
    positive = summary.positive_class
    parts = [
        f"<p>{summary.n_test} held-out rows, evaluated {escape(summary.evaluated_at.isoformat())}"
        + ("" if positive is None else f"; positive class: {escape(str(positive))}")
        + ".</p>",
        _metrics_table(summary.metrics, "evaluation-metrics"),
        _confusion_table(summary),
        f"<p>Feature importance: {escape(summary.importance_method)}.</p>",
    ]
    parts += [f'<p class="note">{escape(note)}</p>' for note in summary.notes]
    if files.missing:
        names = ", ".join(PLOT_TITLES.get(n, n) for n in files.missing)
        parts.append(f'<p class="note missing-plots">Missing from the store: {escape(names)}.</p>')
    parts.append(f'<div class="plots">{"".join(_plot(n, d) for n, d in files.plots.items())}</div>')
    return "".join(parts)


def _plot(name: str, png: bytes) -> str:
    title = escape(PLOT_TITLES.get(name, name))
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img class="plot" data-plot="{escape(name)}" alt="{title}" src="{uri}">'
        f"<figcaption>{title}</figcaption></figure>"
    )


def _confusion_table(summary: EvaluationSummary) -> str:
    labels = [escape(str(c)) for c in summary.classes]
    head = "".join(f"<th>predicted {label}</th>" for label in labels)
    body = "".join(
        f"<tr><th>true {label}</th>"
        + "".join(f'<td class="num">{count}</td>' for count in row)
        + "</tr>"
        for label, row in zip(labels, summary.confusion, strict=True)
    )
    return f'<table class="confusion"><tr><th></th>{head}</tr>{body}</table>'


def _features_table(features: list[Feature]) -> str:
    def bound(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    rows = "".join(
        f"<tr><td>{escape(f.name)}</td><td>{f.type}</td>"
        f'<td class="num">{bound(f.min)}</td><td class="num">{bound(f.max)}</td></tr>'
        for f in features
    )
    head = "<tr><th>feature</th><th>type</th><th>min seen</th><th>max seen</th></tr>"
    return f'<table class="features">{head}{rows}</table>'


def _diff_table(title: str, va: str, vb: str, a: dict[str, float], b: dict[str, float]) -> str:
    def cell(value: float | None) -> str:
        return "" if value is None else figure(value)

    rows = "".join(
        f'<tr data-metric="{escape(name)}"><th>{escape(name)}</th>'
        f'<td class="num">{cell(a.get(name))}</td><td class="num">{cell(b.get(name))}</td>'
        f'<td class="num">{cell(b[name] - a[name]) if name in a and name in b else ""}</td></tr>'
        for name in sorted(a.keys() | b.keys())
    )
    versions = f"<th>v{escape(va)}</th><th>v{escape(vb)}</th>"
    head = f"<tr><th>metric</th>{versions}<th>difference</th></tr>"
    return f'<h2>{escape(title)}</h2><table class="metric-diff">{head}{rows}</table>'


def example_row(features: list[Feature]) -> dict[str, float | int | bool]:
    """One valid input row: each feature at the middle of the range seen in training."""
    row: dict[str, float | int | bool] = {}
    for feature in features:
        known = [v for v in (feature.min, feature.max) if v is not None]
        middle = sum(known) / len(known) if known else 0.0
        if feature.type == "bool":
            row[feature.name] = False
        elif feature.type == "int":
            row[feature.name] = round(middle)
        else:
            row[feature.name] = float(middle)
    return row


def example_request(meta: ModelMetadata, base_url: str) -> str:
    body = json.dumps({"input_data": example_row(meta.features)})
    url = f"{base_url.rstrip('/')}/predict/{meta.model_type}/{meta.version}"
    return (
        f"curl -X POST {shell_word(url)} \\\n"
        '  -H "X-API-Key: $API_KEY" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shell_word(body)}"
    )


def shell_word(text: str) -> str:
    """One single-quoted shell word, whatever quotes the text holds (feature names)."""
    return "'" + text.replace("'", "'\\''") + "'"
