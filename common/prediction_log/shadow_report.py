"""How often a type's shadow version agrees with the versions that answered: over the
last N shadow rows of the log, each beside its primary's row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from common.tables import PredictionLog


def shadow_report(engine: Engine, model_type: str, limit: int) -> dict[str, Any]:
    table = PredictionLog
    shadows = select(table.primary_request_id, table.version, table.output).where(
        table.model_type == model_type,
        table.shadow.is_(True),
        table.status == "ok",
    )
    with engine.connect() as conn:
        shadow_rows = conn.execute(shadows.order_by(table.id.desc()).limit(limit)).all()
        ids = [row.primary_request_id for row in shadow_rows]
        primaries = conn.execute(
            select(table.request_id, table.version, table.output).where(
                table.request_id.in_(ids), table.status == "ok"
            )
        ).all()
    by_id = {row.request_id: row for row in primaries}
    agreeing, compared, differences = 0, 0, []
    versions: dict[str, set[str]] = {"shadow": set(), "primary": set()}
    pairs = 0
    for shadow in shadow_rows:
        primary = by_id.get(shadow.primary_request_id)
        if primary is None or primary.output is None or shadow.output is None:
            continue
        pairs += 1
        versions["shadow"].add(shadow.version)
        versions["primary"].add(primary.version)
        for ours, theirs, p_ours, p_theirs in zip(
            shadow.output["labels"],
            primary.output["labels"],
            shadow.output["probabilities"],
            primary.output["probabilities"],
            strict=True,
        ):
            compared += 1
            agreeing += ours == theirs
            differences += [abs(a - b) for a, b in zip(p_ours, p_theirs, strict=True)]
    return {
        "model_type": model_type,
        "requests": pairs,
        "rows": compared,
        "unmatched": len(shadow_rows) - pairs,
        "label_agreement": agreeing / compared if compared else None,
        "mean_abs_probability_difference": (
            sum(differences) / len(differences) if differences else None
        ),
        "shadow_versions": sorted(versions["shadow"]),
        "primary_versions": sorted(versions["primary"]),
    }
