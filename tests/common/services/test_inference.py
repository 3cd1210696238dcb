"""BatchInference.predict's order: the answer goes out first, then every request's log
row; a failed model call answers nothing and logs every request as failed."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import PredictionFailed
from common.services.inference import BatchInference
from queueing.messages import Artifact, Segment
from tests.common.services.fakes import Model, Models

ARTIFACT = Artifact("xgboost", "1", "a" * 64)
SEGMENTS = [Segment("r1", 1, 0.0, "o"), Segment("r2", 2, 0.0, "o")]


class Events:
    """The log sink and the answer, writing down what happened in which order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.seen.append(("log", [(e["request_id"], e["status"]) for e in entries]))

    def answer(self, result: dict[str, Any]) -> None:
        self.seen.append(("answer", result["labels"]))


def test_the_answer_goes_out_before_the_rows_are_logged() -> None:
    events = Events()
    inference = BatchInference(Models(Model()), events)

    result = inference.predict(ARTIFACT, [[1.0]] * 3, SEGMENTS, events.answer)

    assert result["labels"] == ["a", "a", "a"]
    assert events.seen == [("answer", ["a", "a", "a"]), ("log", [("r1", "ok"), ("r2", "ok")])]


def test_a_failed_model_answers_nothing_and_logs_each_request_as_failed() -> None:
    events = Events()
    inference = BatchInference(Models(Model(error=RuntimeError("the model broke"))), events)

    with pytest.raises(PredictionFailed):
        inference.predict(ARTIFACT, [[1.0]] * 3, SEGMENTS, events.answer)

    assert events.seen == [("log", [("r1", "error"), ("r2", "error")])]
