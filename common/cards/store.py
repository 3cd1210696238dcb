"""The card's files in the model store, beside the artifact:
`<type>/<version>/card/<plot>.png` and `<type>/<version>/card/evaluation.json`.

evaluation.json is written last and read first: like metadata.json for a version, it is
what makes a card visible, so a reader never meets half a card."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.cards.summary import PLOTS, EvaluationSummary
from common.registry import ModelMetadata
from common.store import ObjectMissing, ObjectStore

CARD_DIR = "card"
EVALUATION_FILE = "evaluation.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def card_prefix(meta: ModelMetadata) -> str:
    return f"{meta.model_type}/{meta.version}/{CARD_DIR}/"


def evaluation_key(meta: ModelMetadata) -> str:
    return card_prefix(meta) + EVALUATION_FILE


def plot_key(meta: ModelMetadata, name: str) -> str:
    if name not in PLOTS:
        raise ValueError(f"unknown plot {name!r}; plots are {list(PLOTS)}")
    return f"{card_prefix(meta)}{name}.png"


@dataclass(frozen=True)
class CardFiles:
    """A version's card as stored: no summary when none was published."""

    summary: EvaluationSummary | None
    plots: dict[str, bytes] = field(default_factory=dict)  # name -> PNG, in PLOTS order
    missing: list[str] = field(default_factory=list)  # listed in the summary, not usable
    problem: str | None = None  # why a stored evaluation.json could not be read


def write_card(
    store: ObjectStore, meta: ModelMetadata, summary: EvaluationSummary, pngs: dict[str, bytes]
) -> list[str]:
    """Every plot, then evaluation.json; the keys written, in that order."""
    if summary.artifact_sha256 != meta.sha256:
        raise ValueError(
            f"the evaluation is of artifact {summary.artifact_sha256[:12]}..., "
            f"not of {meta.model_type} v{meta.version} ({meta.sha256[:12]}...)"
        )
    if set(summary.plots) != set(pngs):
        raise ValueError(f"the summary lists {summary.plots}, the PNGs are {sorted(pngs)}")
    keys = []
    for name in summary.plots:
        if not pngs[name].startswith(PNG_MAGIC):
            raise ValueError(f"the {name} plot is not a PNG")
        store.put(plot_key(meta, name), pngs[name])
        keys.append(plot_key(meta, name))
    store.put(evaluation_key(meta), summary.model_dump_json(indent=2).encode())
    return [*keys, evaluation_key(meta)]


def read_card(store: ObjectStore, meta: ModelMetadata) -> CardFiles:
    """The card of a version (blocking: call it on a thread from async code)."""
    try:
        summary = EvaluationSummary.model_validate_json(store.get(evaluation_key(meta)))
    except ObjectMissing:
        return CardFiles(None)
    except ValueError as exc:  # pydantic's ValidationError, JSON or not
        return CardFiles(None, problem=f"{EVALUATION_FILE} is unreadable ({type(exc).__name__})")
    plots: dict[str, bytes] = {}
    missing: list[str] = []
    for name in summary.plots:
        try:
            data = store.get(plot_key(meta, name))
        except (ObjectMissing, ValueError):
            data = b""
        if data.startswith(PNG_MAGIC):
            plots[name] = data
        else:
            missing.append(name)  # shown as a line on the page, never a broken <img>
    return CardFiles(summary, plots, missing)
