"""Models for the fault tests, published as pickle artifacts. Unpickling one imports this
module in the worker (whose PYTHONPATH is the repository root)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class SlowModel:
    """Notes each call's process id in `marker`, then sleeps `seconds`; with `seconds`
    None it never returns: it swallows every exception Celery raises into it (the soft
    time limit, SIGTERM's SystemExit), as native code that never checks for them."""

    def __init__(self, marker: Path, seconds: float | None) -> None:
        self.marker = str(marker)
        self.seconds = seconds

    def predict_proba(self, matrix: Any) -> Any:
        import numpy as np

        with open(self.marker, "a") as out:
            out.write(f"{os.getpid()}\n")
        if self.seconds is not None:
            time.sleep(self.seconds)
            return np.tile([0.25, 0.75], (len(matrix), 1))
        while True:
            try:
                time.sleep(60)
            except BaseException:  # the point of this model
                continue


def calls(marker: Path) -> list[int]:
    """The process id of each call so far."""
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


class GatedModel:
    """Holds every call until the file `gate` exists (at most `max_seconds`), so a test
    decides when the requests it has stuck on the workers may finish."""

    def __init__(self, gate: Path, max_seconds: float) -> None:
        self.gate = str(gate)
        self.max_seconds = max_seconds

    def predict_proba(self, matrix: Any) -> Any:
        import numpy as np

        deadline = time.monotonic() + self.max_seconds
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return np.tile([0.25, 0.75], (len(matrix), 1))


class RaisingModel:
    """Fails every call with an error of the model library's own, whose text must never
    reach a client (it could hold input values or paths)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def predict_proba(self, matrix: Any) -> Any:
        raise ValueError(f"internal detail {self.secret}")
