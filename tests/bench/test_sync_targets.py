"""Issue 15's targets judged on a run's points: the figure, and met or not, or not
measured when the run lacked a scenario."""

from __future__ import annotations

import json
from pathlib import Path

from bench.sync_options import BARE, BARE_BIG, HIT, MISS, MLSERVER, NAIVE, STACK_BIG
from bench.sync_points import Point
from bench.sync_results import write_results
from bench.sync_targets import judge, targets_table


def point(scenario: str, concurrency: int, rps: float, p50: float = 1.0, p99: float = 50.0,
          rows: int = 1) -> Point:  # fmt: skip
    return Point(
        scenario=scenario, concurrency=concurrency, rps=rps, p50_ms=p50, p99_ms=p99, errors=0,
        error_kinds={}, ratio_vs_bare=None, cpu_percent={}, rows_per_request=rows,
        rows_per_s=rps * rows,
    )  # fmt: skip


def run(miss_64: float, miss_p50: float, big_rps: float) -> list[Point]:
    return [
        point(BARE, 1, 1000.0), point(BARE, 64, 1600.0),
        point(MISS, 1, 150.0, p50=miss_p50), point(MISS, 64, miss_64, p99=120.0),
        point(HIT, 1, 950.0), point(HIT, 64, 1700.0),
        point(NAIVE, 1, 100.0, p50=6.0), point(MLSERVER, 64, 1400.0),
        point(BARE_BIG, 4, 80.0, rows=1000), point(STACK_BIG, 4, big_rps, rows=1000),
    ]  # fmt: skip


def test_each_target_gets_its_figure_and_verdict() -> None:
    verdicts = {v.target: (v.figure, v.met) for v in judge(run(1500.0, 4.5, 30.0))}

    assert verdicts == {
        "misses, c=64: >= 0.9x bare": ("0.94x (1,500 vs 1,600 req/s)", True),
        "misses, c=64: >= MLServer-batching's req/s": ("1.07x (1,500 vs 1,400 req/s)", True),
        "misses, c=1: p50 <= 0.8x naive Celery's": ("0.75x (4.50 ms vs 6.00 ms)", True),
        "1,000-row requests: >= 0.5x bare's rows/s": (
            "0.38x (30,000 vs 80,000 rows/s at c=4)",
            False,
        ),
        "hits, c=1: >= 0.9x bare": ("0.95x (950 vs 1,000 req/s)", True),
        "hits, c=64: >= 1.1x bare": ("1.06x (1,700 vs 1,600 req/s)", False),
        "misses, c=64: p99 <= 150 ms": ("120.0 ms", True),
    }


def test_short_of_a_target_is_not_met() -> None:
    verdicts = {v.target: v.met for v in judge(run(1300.0, 5.0, 45.0))}

    assert verdicts["misses, c=64: >= 0.9x bare"] is False
    assert verdicts["misses, c=64: >= MLServer-batching's req/s"] is False
    assert verdicts["misses, c=1: p50 <= 0.8x naive Celery's"] is False
    assert verdicts["1,000-row requests: >= 0.5x bare's rows/s"] is True


def test_a_missing_scenario_is_not_measured_and_the_file_holds_the_verdicts(
    tmp_path: Path,
) -> None:
    points = [p for p in run(1500.0, 4.5, 30.0) if p.scenario != MLSERVER]
    path = tmp_path / "sync_predict.json"

    write_results({}, points, path)

    targets = json.loads(path.read_text())["targets"]
    mlserver = next(t for t in targets if "MLServer" in t["target"])
    assert mlserver == {
        "target": "misses, c=64: >= MLServer-batching's req/s",
        "figure": "not measured",
        "met": None,
    }
    assert len(targets) == 7
    table = targets_table(judge(points))
    assert "| misses, c=64: >= 0.9x bare" in table and "NOT met" in table
