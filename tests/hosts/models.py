"""A model for the cross-host tests, published as a pickle artifact (the workers import
this module: their PYTHONPATH is the repository root)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TracedModel:
    """Notes each call as `<pid> <first feature of its first row> <time>` in `marker`,
    then answers after `seconds`: a test sees which process started which request when."""

    def __init__(self, marker: Path, seconds: float) -> None:
        self.marker = str(marker)
        self.seconds = seconds

    def predict_proba(self, matrix: Any) -> Any:
        import numpy as np

        with open(self.marker, "a") as out:
            out.write(f"{os.getpid()} {float(matrix[0][0])!r} {time.time()!r}\n")
        time.sleep(self.seconds)
        return np.tile([0.25, 0.75], (len(matrix), 1))


@dataclass(frozen=True)
class Call:
    pid: int
    value: float
    at: float


def started_calls(marker: Path) -> list[Call]:
    """Every call so far (a line still being written is left for the next look)."""
    if not marker.exists():
        return []
    lines = [line.split() for line in marker.read_text().splitlines()]
    return [Call(int(p), float(v), float(t)) for p, v, t in (f for f in lines if len(f) == 3)]
