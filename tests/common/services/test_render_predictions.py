"""render_predictions: one entry per row, classes in metadata order, mismatches refused."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from common.registry import ModelMetadata
from common.services.predictions import render_predictions
from tests.common.metadata import make_metadata


def _meta(classes: list[Any]) -> ModelMetadata:
    return make_metadata([("x", "float")], classes)


def _reference(meta: ModelMetadata, result: dict[str, Any]) -> list[dict[str, Any]]:
    classes = [str(c) for c in meta.classes]
    return [
        {"label": label, "probabilities": dict(zip(classes, probs, strict=True))}
        for label, probs in zip(result["labels"], result["probabilities"], strict=True)
    ]


@pytest.mark.parametrize(
    ("classes", "result"),
    [
        ([0, 1], {"labels": [1, 0], "probabilities": [[0.25, 0.75], [0.9, 0.1]]}),
        (["b", "a"], {"labels": ["a"], "probabilities": [[0.4, 0.6]]}),
        (["x", 2, "z"], {"labels": ["z", 2], "probabilities": [[0.1, 0.2, 0.7], [0, 1, 0]]}),
        ([1, "1"], {"labels": ["1"], "probabilities": [[0.3, 0.7]]}),  # same key twice
        ([0, 1], {"labels": [], "probabilities": []}),
    ],
)
def test_renders_like_the_zip_of_classes_and_probabilities(
    classes: list[Any], result: dict[str, Any]
) -> None:
    meta = _meta(classes)
    rendered = render_predictions(meta, result)

    assert rendered == _reference(meta, result)
    assert orjson.dumps(rendered) == orjson.dumps(_reference(meta, result))  # and key order


def test_two_classes_in_metadata_order() -> None:
    rendered = render_predictions(_meta([1, 0]), {"labels": [0], "probabilities": [[0.2, 0.8]]})

    assert rendered == [{"label": 0, "probabilities": {"1": 0.2, "0": 0.8}}]
    assert list(rendered[0]) == ["label", "probabilities"]
    assert list(rendered[0]["probabilities"]) == ["1", "0"]


@pytest.mark.parametrize(
    ("classes", "result"),
    [
        ([0, 1], {"labels": [1, 0], "probabilities": [[0.25, 0.75]]}),
        ([0, 1], {"labels": [1], "probabilities": [[0.25, 0.75], [0.5, 0.5]]}),
        ([0, 1], {"labels": [1, 0], "probabilities": [[0.25, 0.75], [1.0]]}),
        ([0, 1], {"labels": [1], "probabilities": [[0.2, 0.3, 0.5]]}),
        (["x", "y", "z"], {"labels": ["x"], "probabilities": [[0.5, 0.5]]}),
        (["x", "y", "z"], {"labels": ["x", "y"], "probabilities": [[0.2, 0.3, 0.5], [1, 0, 0, 0]]}),
    ],
)
def test_a_length_mismatch_is_a_value_error(classes: list[Any], result: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _reference(_meta(classes), result)
    with pytest.raises(ValueError):
        render_predictions(_meta(classes), result)
