"""A task that kills its worker process every time is tried a bounded number of times,
then fails with a clear error, while other work keeps flowing."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable

import pytest

from api.examples import EXAMPLE_ROW
from common.cache import notify_registry_changed
from common.training import TrainedModel
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


class KillsItsProcess:
    """Unpickling this ends the process at once, as a crashing native model would."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (os._exit, (13,))


def test_poison_task_fails_after_the_attempt_cap(
    make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]
) -> None:
    stack = make_stack("poison", allow_unsafe_pickle=True, task_max_attempts=2)
    metadata = demo_models["xgboost"].metadata | {
        "model_type": "poison",
        "artifact_format": "pickle",
    }
    stack.registry().publish(metadata, pickle.dumps(KillsItsProcess()))
    notify_registry_changed(stack.settings)
    with stack.client() as client:
        started = time.monotonic()
        poisoned = client.post("/predict/poison/1", json={"input_data": EXAMPLE_ROW})
        took = time.monotonic() - started
        # The worker serves on; its pool processes are new, and on a loaded machine their
        # start can outlast a deadline, which answers 202: ask again.
        deadline = time.monotonic() + 60
        while (
            healthy := client.post("/predict/xgboost/1", json={"input_data": EXAMPLE_ROW})
        ).status_code == 202 and time.monotonic() < deadline:
            pass
        logs = client.get("/logs", params={"n_limit": 10}).json()
    assert poisoned.status_code == 503, poisoned.text
    error = poisoned.json()["error"]
    assert error["type"] == "worker_crashed"
    assert "ended its worker process 2 times" in error["message"]
    assert took < 20  # within the deadline: it did not loop until the timeout
    assert healthy.status_code == 200
    failed = [e for e in logs if e["model_type"] == "poison"]
    assert len(failed) == 1 and failed[0]["status"] == "error"
    assert "worker_crashed" in failed[0]["error"]
