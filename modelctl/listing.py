"""Tables: every version with its marks and rollout (`list`), one type's rollout
(`alias`, `traffic`, `shadow`), and the shadow report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from common.registry import Catalog, ModelMetadata
from common.rollout import CHAMPION, Rollout
from modelctl.output import table

LISTED_METRICS = 4  # the rest in `show` or `list --json`: a row stays on one line


def catalog_rows(catalog: Catalog) -> list[dict[str, Any]]:
    """One dict per version, oldest first within each type: the table's rows, and
    `list --json`'s."""
    rows = []
    for model_type, metas in sorted(catalog.models.items()):
        rollout = catalog.state.rollout(model_type)
        for meta in metas:
            rows.append(
                {
                    "model_type": model_type,
                    "version": meta.version,
                    "created_at": meta.created_at.isoformat(),
                    "marks": marks(catalog, meta),
                    "aliases": sorted(a for a, v in rollout.aliases.items() if v == meta.version),
                    "traffic": rollout.traffic.get(meta.version),
                    "shadow": shadow_of(rollout, meta.version),
                    "metrics": meta.metrics,
                }
            )
    return rows


def marks(catalog: Catalog, meta: ModelMetadata) -> list[str]:
    found = []
    if catalog.state.active_by_type.get(meta.model_type) == meta.version:
        found.append("active")
    active = catalog.state.active
    if active and (active.model_type, active.version) == (meta.model_type, meta.version):
        found.append("default")
    if meta.artifact_deleted_at:
        found.append("deleted")
    return found


def shadow_of(rollout: Rollout, version: str) -> float | None:
    return rollout.shadow.fraction if rollout.shadow and rollout.shadow.version == version else None


def listing_table(rows: list[dict[str, Any]], store: str) -> Table:
    shares: dict[str, int] = {}
    for row in rows:
        shares[row["model_type"]] = shares.get(row["model_type"], 0) + (row["traffic"] or 0)
    cells = [
        [
            row["model_type"],
            row["version"],
            row["created_at"][:16].replace("T", " "),
            ", ".join(row["marks"]),
            ", ".join(row["aliases"]),
            weight(row["traffic"], shares[row["model_type"]]),
            percent(row["shadow"]),
            figures(dict(list(row["metrics"].items())[:LISTED_METRICS]))
            + (", ..." if len(row["metrics"]) > LISTED_METRICS else ""),
        ]
        for row in rows
    ]
    columns = ["type", "version", "created", "marks", "aliases", "traffic", "shadow", "metrics"]
    return table(f"Models in {store}", columns, cells)


def rollout_table(state: dict[str, Any]) -> Table:
    """RolloutService's description of a type: a row per version that serves, and per
    version a rule still names although its artifact was deleted."""
    aliases: dict[str, str] = state["aliases"]
    traffic: dict[str, int] = state["traffic"] or {}
    shadow = state["shadow"]
    named = [*aliases.values(), *traffic, *([shadow["version"]] if shadow else [])]
    versions = [*state["versions"], *sorted({v for v in named if v} - set(state["versions"]))]
    total = sum(traffic.values())
    rows = [
        [
            version if version in state["versions"] else f"{version} (deleted)",
            ", ".join(a for a, v in aliases.items() if v == version),
            weight(traffic.get(version), total),
            percent(shadow["fraction"] if shadow and shadow["version"] == version else None),
        ]
        for version in versions
    ]
    notes = [
        "" if traffic else f"no traffic split: requests go to the {CHAMPION}",
        "" if shadow else "no shadow",
    ]
    caption = "; ".join(note for note in notes if note)
    columns = ["version", "aliases", "traffic", "shadow"]
    return table(f"Rollout of {state['model_type']}", columns, rows, caption)


def report_table(report: dict[str, Any], limit: int) -> Table:
    agreement = report["label_agreement"]
    difference = report["mean_abs_probability_difference"]
    rows = [
        ["shadow requests compared", str(report["requests"])],
        ["rows compared", str(report["rows"])],
        ["shadow rows without their primary's (yet)", str(report["unmatched"])],
        ["label agreement", "-" if agreement is None else f"{agreement:.2%}"],
        [
            "mean absolute probability difference",
            "-" if difference is None else f"{difference:.4g}",
        ],
        ["shadow versions", ", ".join(report["shadow_versions"]) or "-"],
        ["primary versions", ", ".join(report["primary_versions"]) or "-"],
    ]
    title = f"Shadow report of {report['model_type']} (the last {limit} shadow rows at most)"
    return table(title, ["", "value"], rows)


def figures(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())


def weight(value: int | None, total: int) -> str:
    if value is None:
        return ""
    return f"{value} ({value / total:.0%})" if total else str(value)


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:.4g}%"
