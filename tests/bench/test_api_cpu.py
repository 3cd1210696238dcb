"""bench/api_cpu.py: the API's CPU per one-row miss, measured in one process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from typing import Any

import pytest

from bench.api_cpu import measure
from bench.loadgen import BodyTemplate
from bench.stack import ROOT


def test_a_run_reports_both_apps_cpu_per_request() -> None:
    """A real run, small: a private Redis, the demo models, every answer a 200."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.api_cpu",
            "--bare",
            "--requests",
            "160",
            "--concurrency",
            "8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = dict(re.findall(r"api_cpu: (\w+): (\d+) us of CPU", done.stdout))
    assert set(figures) == {"api", "bare"}, done.stdout
    assert all(int(us) > 0 for us in figures.values())


def test_an_answer_other_than_200_fails_the_measure() -> None:
    calls = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await receive()
        status = 500 if calls == 7 else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    template = BodyTemplate.from_row({"a": 1.0, "b": 2.0}, "a")
    with pytest.raises(RuntimeError, match="1 of 22 answers were not 200"):
        asyncio.run(measure(app, template, requests=20, concurrency=2))
