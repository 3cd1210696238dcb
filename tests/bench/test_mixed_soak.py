"""bench.mixed_soak's verdict: what makes `make soak` fail, and what does not."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import httpx
import pytest

from bench.loadgen import BodyTemplate
from bench.mixed_soak import Load, Sample, bad_requests, verdict

ROW = {"mean radius": 17.99, "mean area": 1001.0}


def samples(api: list[float], worker: list[float]) -> list[Sample]:
    return [
        Sample(t * 10.0, {"api": a, "worker": w, "redis": 10.0 + t}, 0)
        for t, (a, w) in enumerate(zip(api, worker, strict=True))
    ]


@pytest.fixture
def load() -> Iterator[Load]:
    template = BodyTemplate.from_row(ROW, "mean radius")
    client = httpx.AsyncClient()
    yield Load(client, client, template, template, bad_requests(ROW), 0.0, itertools.count())
    asyncio.run(client.aclose())


def test_a_clean_run_passes(load: Load) -> None:
    load.jobs["a"] = 20
    load.ended["succeeded"] += 1
    # the warm-up (the first 20% of 50 s) may grow; Redis may grow at any time
    assert verdict(load, samples([50, 90, 91, 92, 93, 95], [400] * 6), 50, []) == []


@pytest.mark.parametrize(
    ("api", "worker", "needle"),
    [
        ([90, 90, 90, 90, 99.5], [400] * 5, "api memory rose 10.6%"),
        ([90] * 5, [400, 400, 445, 400, 400], "worker memory rose 11.2%"),
    ],
)
def test_memory_growth_past_ten_percent_fails(
    load: Load, api: list[float], worker: list[float], needle: str
) -> None:
    load.jobs["a"] = 20
    problems = verdict(load, samples(api, worker), 40, [])
    assert len(problems) == 1 and needle in problems[0], problems


def test_failures_lost_jobs_and_dead_services_fail(load: Load) -> None:
    load.failures["miss: 500 internal error"] += 2
    load.failures["bad (NaN): 422 instead of 400"] += 1
    load.jobs["a"] = 20
    load.ended["still running after the drain"] += 1
    problems = verdict(load, samples([90] * 4, [400] * 4), 30, ["worker"])
    assert problems == [
        "1 x bad (NaN): 422 instead of 400",
        "2 x miss: 500 internal error",
        "1 jobs never ended",
        "worker died during the run",
    ]


def test_a_run_without_jobs_fails(load: Load) -> None:
    assert verdict(load, samples([90] * 4, [400] * 4), 30, []) == ["no job was accepted"]


def test_every_bad_request_expects_a_4xx() -> None:
    cases = bad_requests(ROW)
    assert len({case.name for case in cases}) == len(cases)
    assert all(400 <= case.status < 500 for case in cases)
    assert b"NaN" in next(case.body for case in cases if case.name == "NaN")  # type: ignore[operator]
