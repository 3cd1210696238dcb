"""worker.tasks.cache_writes: the prediction cache's entries a batch's result makes, each
request's own result under the key its API gave, as the API would have written it."""

from __future__ import annotations

import orjson

from queueing.messages import Segment
from worker.tasks import cache_writes


def test_each_request_asking_gets_its_own_rows_result_under_its_key() -> None:
    segments = [
        Segment("r1", 2, 0.0, "o", "pred:one", 300),
        Segment("r2", 1, 0.0, "o"),  # not asked: an API whose cache is elsewhere
        Segment("r3", 1, 0.0, "o", "pred:three", 60),
    ]
    result = {
        "labels": ["a", "b", "c", "d"],
        "probabilities": [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]],
    }

    writes = cache_writes(segments, result)

    assert writes == [
        (
            "pred:one",
            300,
            orjson.dumps({"labels": ["a", "b"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]}),
        ),
        ("pred:three", 60, orjson.dumps({"labels": ["d"], "probabilities": [[0.3, 0.7]]})),
    ]


def test_no_request_asking_makes_no_write() -> None:
    result = {"labels": ["a"], "probabilities": [[1.0, 0.0]]}
    assert cache_writes([Segment("r1", 1, 0.0, "o")], result) == []
