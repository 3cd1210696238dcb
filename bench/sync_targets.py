"""Issue 15's targets, judged on one run's points: each target's figure beside the target,
and whether it is met (None: the run lacked a scenario it needs). The two targets inside
the machine's drift are judged by the run's back-to-back pairs when it has them
(bench/sync_pairs.py). `make bench` prints them and writes them into
bench/results/sync_predict.json."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.sync_options import BARE, BARE_BIG, HIT, MISS, MLSERVER, NAIVE, STACK_BIG
from bench.sync_pairs import COMPARISONS, Comparison, Pair, median_ratio
from bench.sync_points import Point
from bench.tables import markdown_table

P99_LIMIT_MS = 150.0
C1, C64 = COMPARISONS  # misses vs naive Celery at c=1, misses vs bare at c=64


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    met: bool | None


def _at(points: list[Point], scenario: str, concurrency: int) -> Point | None:
    found = (p for p in points if p.scenario == scenario and p.concurrency == concurrency)
    return next(found, None)


def _ratio(
    name: str,
    point: Point | None,
    base: Point | None,
    goal: float,
    pairs: Sequence[Pair] = (),
    comparison: Comparison | None = None,
) -> Verdict:
    single = None
    if point is not None and base is not None and base.rps:
        value = point.rps / base.rps
        single = (value, f"{value:.2f}x ({point.rps:,.0f} vs {base.rps:,.0f} req/s)")
    return _verdict(name, single, pairs, comparison, lambda ratio: ratio >= goal)


def _verdict(
    name: str,
    single: tuple[float, str] | None,
    pairs: Sequence[Pair],
    comparison: Comparison | None,
    meets: Callable[[float], bool],
) -> Verdict:
    """By the median of `comparison`'s pairs if the run has them, else by the single
    windows' (ratio, figure); not measured without either."""
    if comparison is not None and (median := median_ratio(pairs, comparison)) is not None:
        rounds = [p for p in pairs if p.comparison == comparison]
        each = ", ".join(f"{p.ratio:.2f}" for p in rounds)
        figure = f"{median:.2f}x, median of {len(rounds)} back-to-back pairs ({each})"
        if single is not None:
            figure += f"; single windows {single[1]}"
        return Verdict(name, figure, meets(median))
    if single is None:
        return Verdict(name, "not measured", None)
    return Verdict(name, single[1], meets(single[0]))


def judge(points: list[Point], pairs: Sequence[Pair] = ()) -> list[Verdict]:
    """`pairs`, when the run has them, judge the targets of their comparisons (misses vs
    naive Celery at c=1, misses vs bare at c=64; bench/sync_pairs.py) by their median."""

    def at(scenario: str, concurrency: int) -> Point | None:
        return _at(points, scenario, concurrency)

    return [
        _ratio("misses, c=64: >= 0.9x bare", at(MISS, 64), at(BARE, 64), 0.9, pairs, C64),
        _ratio("misses, c=64: >= MLServer-batching's req/s", at(MISS, 64), at(MLSERVER, 64), 1.0),
        _p50_vs_naive(at(MISS, 1), at(NAIVE, 1), pairs),
        _big_rows(points),
        _ratio("hits, c=1: >= 0.9x bare", at(HIT, 1), at(BARE, 1), 0.9),
        _ratio("hits, c=64: >= 1.1x bare", at(HIT, 64), at(BARE, 64), 1.1),
        _p99(at(MISS, 64)),
    ]


def _p50_vs_naive(miss: Point | None, naive: Point | None, pairs: Sequence[Pair]) -> Verdict:
    name = "misses, c=1: p50 <= 0.8x naive Celery's"
    single = None
    if miss is not None and naive is not None and naive.p50_ms:
        value = miss.p50_ms / naive.p50_ms
        single = (value, f"{value:.2f}x ({miss.p50_ms:.2f} ms vs {naive.p50_ms:.2f} ms)")
    return _verdict(name, single, pairs, C1, lambda ratio: ratio <= 0.8)


def _big_rows(points: list[Point]) -> Verdict:
    """The stack's best 1,000-row point against the bare app's at the same concurrency."""
    pairs = [
        (p, b)
        for p in points
        if p.scenario == STACK_BIG
        and (b := _at(points, BARE_BIG, p.concurrency)) is not None
        and b.rows_per_s
    ]
    name = "1,000-row requests: >= 0.5x bare's rows/s"
    if not pairs:
        return Verdict(name, "not measured", None)
    best, bare = max(pairs, key=lambda pair: pair[0].rows_per_s / pair[1].rows_per_s)
    value = best.rows_per_s / bare.rows_per_s
    figure = (
        f"{value:.2f}x ({best.rows_per_s:,.0f} vs {bare.rows_per_s:,.0f} rows/s "
        f"at c={best.concurrency})"
    )
    return Verdict(name, figure, value >= 0.5)


def _p99(miss: Point | None) -> Verdict:
    name = f"misses, c=64: p99 <= {P99_LIMIT_MS:g} ms"
    if miss is None:
        return Verdict(name, "not measured", None)
    return Verdict(name, f"{miss.p99_ms:.1f} ms", miss.p99_ms <= P99_LIMIT_MS)


def verdict_text(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def targets_table(verdicts: list[Verdict]) -> str:
    rows = [[v.target, v.figure, verdict_text(v.met)] for v in verdicts]
    return markdown_table(["target", "this run", "verdict"], rows)
