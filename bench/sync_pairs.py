"""`make bench`'s back-to-back pairs for the targets this machine's drift decides: two
scenarios a target compares, measured one right after the other, a few rounds, in
alternating order.

The main sequence measures them minutes apart (every concurrency of one scenario comes
before the next scenario), and this shared machine drifts by more than the targets'
margins in that time: naive Celery's own c=1 p50 ranged from 10.95 to 14.62 ms across
one session's runs, and the bare endpoint's c=64 req/s from 798 to 1,315. A pair's two
windows are seconds apart and the order alternates, so a drift during the pairs weighs on
both sides alike. Such a target's figure is the median of the rounds' ratios; the single
windows of the main sequence are shown beside it.

Many short rounds rather than a few long ones (15 of 2 s each by default, after 0.5 s of
load to settle): the machine's speed changes within seconds. In one run five rounds of
5 s at c=64 ranged from 0.61x to 1.21x; thirty paired rounds of 1.5 s, with a change
switched on and off between windows, told its effect within a few percent.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.loadgen import LoadPlan
from bench.sync_options import BARE, MISS, NAIVE, SCENARIOS, Scenario

if TYPE_CHECKING:
    from bench.stack import RunContext
    from bench.sync_points import Point, Profiled, Templates

PAIR_WARMUP_S = 0.5


@dataclass(frozen=True)
class Comparison:
    """A target's ratio: `subject`'s `metric` over `reference`'s, at `concurrency`."""

    subject: str
    reference: str
    concurrency: int
    metric: str  # a Point's field: "p50_ms" or "rps"


# Cache misses against naive Celery's p50 at c=1, and against the bare endpoint's req/s at
# c=64: the two targets whose margin is inside the machine's drift.
COMPARISONS = (Comparison(MISS, NAIVE, 1, "p50_ms"), Comparison(MISS, BARE, 64, "rps"))


@dataclass(frozen=True)
class Pair:
    """One round of a comparison: a window of each scenario, `first` measured first."""

    comparison: Comparison
    round: int
    first: str
    subject_value: float
    reference_value: float
    errors: int = 0

    @property
    def ratio(self) -> float:
        return self.subject_value / self.reference_value if self.reference_value else 0.0


def median_ratio(pairs: Sequence[Pair], comparison: Comparison) -> float | None:
    ratios = [p.ratio for p in pairs if p.comparison == comparison and p.reference_value]
    return statistics.median(ratios) if ratios else None


def _scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def wanted(context: RunContext) -> list[Comparison]:
    """The comparisons whose two scenarios, at their concurrency, the run measures; none
    in a profiled run (py-spy slows what it samples, and a pair's recordings would replace
    the main points' files)."""
    options = context.options
    if options.pairs <= 0 or options.profile is not None:
        return []
    names = {s.name for s in options.scenarios}
    return [
        c
        for c in COMPARISONS
        if {c.subject, c.reference} <= names and c.concurrency in options.concurrency
    ]


def run_pairs(
    context: RunContext, templates: Templates, next_id: int, profiles: list[Profiled]
) -> list[Pair]:
    """Every wanted comparison's rounds, their bodies numbered from `next_id` on (every
    body of the run stays unique)."""
    comparisons = wanted(context)
    options = context.options
    if comparisons:
        print(f"  {options.pairs} back-to-back pairs, {options.pair_duration:g} s a window:")
    pairs: list[Pair] = []
    for comparison in comparisons:
        for index in range(options.pairs):
            pair, next_id = _round(comparison, index, context, templates, next_id, profiles)
            pairs.append(pair)
    return pairs


def _round(
    comparison: Comparison,
    index: int,
    context: RunContext,
    templates: Templates,
    next_id: int,
    profiles: list[Profiled],
) -> tuple[Pair, int]:
    from bench.sync_points import run_point

    order = [comparison.subject, comparison.reference]
    if index % 2:
        order.reverse()
    measured: dict[str, Point] = {}
    for name in order:
        scenario = _scenario(name)
        plan = LoadPlan(
            target=context.servers.targets[scenario.target],
            templates=templates[scenario.body, scenario.rows],
            bodies=scenario.bodies,
            first_id=next_id,
            connections=comparison.concurrency,
            warmup=PAIR_WARMUP_S,
            duration=context.options.pair_duration,
        )
        measured[name], result = run_point(
            scenario, comparison.concurrency, plan, context, profiles
        )
        next_id = max(next_id, result.next_id)
    subject, reference = measured[comparison.subject], measured[comparison.reference]
    pair = Pair(
        comparison,
        index + 1,
        order[0],
        getattr(subject, comparison.metric),
        getattr(reference, comparison.metric),
        subject.errors + reference.errors,
    )
    return pair, next_id
