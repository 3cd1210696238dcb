"""Issue 15's targets judged on a run's points: the figure, and met or not, or not
measured when the run lacked a scenario."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from bench.sync_options import (
    BARE,
    BARE_BIG,
    HIT,
    MISS,
    MLSERVER,
    NAIVE,
    STACK_BIG,
    scenario_list,
)
from bench.sync_pairs import COMPARISONS, Comparison, Pair, wanted
from bench.sync_points import Point
from bench.sync_results import write_results
from bench.sync_targets import judge, targets_table

C1, C64 = COMPARISONS


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


def c1(round_: int, first: str, miss: float, naive: float, errors: int = 0) -> Pair:
    return Pair(C1, round_, first, miss, naive, errors)


def test_back_to_back_pairs_judge_the_c1_target_by_their_median() -> None:
    points = run(1500.0, 5.1, 30.0)  # single windows: 5.1 vs 6.0 ms, 0.85x, not met
    pairs = [c1(1, MISS, 7.0, 10.0), c1(2, NAIVE, 9.0, 10.0), c1(3, MISS, 7.5, 10.0)]

    verdict = next(v for v in judge(points, pairs) if "c=1: p50" in v.target)

    assert verdict.met is True  # median 0.75x
    assert verdict.figure == (
        "0.75x, median of 3 back-to-back pairs (0.70, 0.90, 0.75); "
        "single windows 0.85x (5.10 ms vs 6.00 ms)"
    )
    slower = [c1(1, MISS, 8.5, 10.0), c1(2, NAIVE, 7.0, 10.0), c1(3, MISS, 8.2, 10.0)]
    assert next(v for v in judge(run(1500.0, 4.5, 30.0), slower) if "c=1" in v.target).met is False


def test_back_to_back_pairs_judge_misses_at_c64_against_bare_and_nothing_else() -> None:
    points = run(1300.0, 4.5, 30.0)  # single windows: 1,300 vs 1,600 req/s, 0.81x
    pairs = [Pair(C64, 1, MISS, 950.0, 1000.0), Pair(C64, 2, BARE, 880.0, 1000.0),
             Pair(C64, 3, MISS, 920.0, 1000.0)]  # fmt: skip

    verdicts = {v.target: v for v in judge(points, pairs)}

    c64 = verdicts["misses, c=64: >= 0.9x bare"]
    assert c64.met is True  # median 0.92x
    assert c64.figure.startswith("0.92x, median of 3 back-to-back pairs (0.95, 0.88, 0.92)")
    assert c64.figure.endswith("single windows 0.81x (1,300 vs 1,600 req/s)")
    # Pairs of one comparison never judge another: c=1 keeps its single windows.
    assert verdicts["misses, c=1: p50 <= 0.8x naive Celery's"].figure == (
        "0.75x (4.50 ms vs 6.00 ms)"
    )
    assert verdicts["misses, c=64: >= MLServer-batching's req/s"].met is False  # 0.93x


def test_the_results_file_keeps_each_pair_and_its_ratio(tmp_path: Path) -> None:
    path = tmp_path / "sync_predict.json"
    pairs = [c1(1, MISS, 7.0, 10.0), c1(2, NAIVE, 9.0, 10.0, errors=2)]

    write_results({}, run(1500.0, 4.5, 30.0), path, pairs=pairs)

    document = json.loads(path.read_text())
    comparison = {"subject": MISS, "reference": NAIVE, "concurrency": 1, "metric": "p50_ms"}
    assert document["pairs"] == [
        {"comparison": comparison, "round": 1, "first": MISS, "subject_value": 7.0,
         "reference_value": 10.0, "errors": 0, "ratio": 0.7},
        {"comparison": comparison, "round": 2, "first": NAIVE, "subject_value": 9.0,
         "reference_value": 10.0, "errors": 2, "ratio": 0.9},
    ]  # fmt: skip
    target = next(t for t in document["targets"] if "c=1" in t["target"])
    assert target["figure"].startswith("0.80x, median of 2 back-to-back pairs")
    assert target["met"] is True


def test_pairs_run_only_for_comparisons_the_run_measures() -> None:
    def wanted_for(
        keys: str, concurrency: list[int], rounds: int = 5, profile: str | None = None
    ) -> list[Comparison]:
        options = SimpleNamespace(
            pairs=rounds, scenarios=scenario_list(keys), concurrency=concurrency, profile=profile
        )
        return wanted(SimpleNamespace(options=options))  # type: ignore[arg-type]

    assert wanted_for("bare,miss,naive", [1, 16, 64]) == [C1, C64]
    assert wanted_for("bare,miss,naive", [1, 16]) == [C1]
    assert wanted_for("bare,miss", [1, 64]) == [C64]
    assert wanted_for("bare,miss,naive", [1, 64], rounds=0) == []
    assert wanted_for("bare,miss,naive", [1, 64], profile="/tmp/profiles") == []
