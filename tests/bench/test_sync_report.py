"""`make bench`'s ratios, tables and results file, with the MLServer peer among the points."""

from __future__ import annotations

import json
from pathlib import Path

from bench.sync_options import BARE, MLSERVER
from bench.sync_points import Point, with_ratios
from bench.sync_report import cpu_table, results_table
from bench.sync_results import write_results


def point(scenario: str, concurrency: int, rps: float, per_task: float | None = None) -> Point:
    cpu = {"bare": 99.0, "loadgen": 5.0, "other": 1.0} if scenario == BARE else {"mlserver": 98.0}
    return Point(
        scenario=scenario,
        concurrency=concurrency,
        rps=rps,
        p50_ms=1.5,
        p99_ms=9.25,
        errors=0,
        error_kinds={},
        ratio_vs_bare=None,
        cpu_percent=cpu,
        rows_per_request=1,
        rows_per_s=rps,
        requests_per_task=per_task,
    )


def points() -> list[Point]:
    return with_ratios(
        [
            point(BARE, 1, 2000.0),
            point(BARE, 64, 2500.0),
            point(MLSERVER, 1, 150.0, 1.0),
            point(MLSERVER, 64, 2000.0, 63.5),
        ]
    )


def test_mlserver_is_compared_with_bare_at_the_same_concurrency() -> None:
    ratios = {(p.scenario, p.concurrency): p.ratio_vs_bare for p in points()}

    assert ratios == {(BARE, 1): 1.0, (BARE, 64): 1.0, (MLSERVER, 1): 0.075, (MLSERVER, 64): 0.8}
    lines = results_table(points()).splitlines()
    assert lines[0].split("|")[1:-1] == [
        " scenario                    ",
        " concurrency ",
        " req/s ",
        " p50 ms ",
        " p99 ms ",
        " errors ",
        " req/s vs bare ",
    ]
    assert [cell.strip() for cell in lines[-1].split("|")[1:-1]] == [
        MLSERVER, "64", "2,000", "1.50", "9.25", "0", "0.80",
    ]  # fmt: skip


def test_the_cpu_table_has_an_mlserver_column_and_its_mean_batch() -> None:
    lines = cpu_table(points()).splitlines()

    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    assert header == [
        "scenario", "concurrency", "api", "worker", "redis", "bare", "naive-api",
        "naive-worker", "mlserver", "loadgen", "other", "requests per task",
    ]  # fmt: skip
    last = [cell.strip() for cell in lines[-1].split("|")[1:-1]]
    assert last[header.index("mlserver")] == "98%"
    assert last[header.index("bare")] == "0%"
    assert last[-1] == "63.5"
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]][-1] == "-"  # bare: no batches


def test_the_results_file_holds_meta_and_every_point(tmp_path: Path) -> None:
    path = tmp_path / "results" / "sync_predict.json"
    write_results({"elapsed_s": 12.5}, points(), path)

    document = json.loads(path.read_text())
    assert document["meta"] == {"elapsed_s": 12.5}
    assert [(p["scenario"], p["concurrency"], p["ratio_vs_bare"]) for p in document["points"]] == [
        (BARE, 1, 1.0), (BARE, 64, 1.0), (MLSERVER, 1, 0.075), (MLSERVER, 64, 0.8),
    ]  # fmt: skip
    assert set(document["points"][0]) == {
        "scenario", "concurrency", "rps", "p50_ms", "p99_ms", "errors", "error_kinds",
        "ratio_vs_bare", "cpu_percent", "rows_per_request", "rows_per_s", "requests_per_task",
    }  # fmt: skip
