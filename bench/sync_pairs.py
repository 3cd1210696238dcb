"""`make bench`'s back-to-back pairs for the c=1 target: cache misses and naive Celery
measured one right after the other, a few times, in alternating order.

The main sequence measures the two minutes apart (every concurrency of the stack comes
first), and this shared machine drifts by more than the target's margin in that time:
naive Celery's own c=1 p50 ranged from 10.95 to 14.62 ms across runs of one afternoon.
A pair's two windows are seconds apart, and the order alternates (miss first, then naive
first), so a drift during the pairs weighs on both sides alike. The target's figure is the
median of the pairs' p50 ratios; the single windows of the main sequence are shown beside it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.loadgen import LoadPlan
from bench.sync_options import MISS, NAIVE, SCENARIOS, Scenario

if TYPE_CHECKING:
    from bench.stack import RunContext
    from bench.sync_points import Profiled, Templates

PAIR_WARMUP_S = 1.0


@dataclass(frozen=True)
class Pair:
    """One round: a window of each design at c=1, `first` measured first."""

    round: int
    first: str
    miss_p50_ms: float
    naive_p50_ms: float
    errors: int = 0

    @property
    def ratio(self) -> float:
        return self.miss_p50_ms / self.naive_p50_ms


def median_ratio(pairs: list[Pair]) -> float | None:
    ratios = [p.ratio for p in pairs if p.naive_p50_ms > 0]
    return statistics.median(ratios) if ratios else None


def _scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def wanted(context: RunContext) -> bool:
    """Pairs run when asked for and both designs ran at c=1 in the main sequence."""
    options = context.options
    names = {s.name for s in options.scenarios}
    return options.pairs > 0 and {MISS, NAIVE} <= names and 1 in options.concurrency


def run_pairs(
    context: RunContext, templates: Templates, next_id: int, profiles: list[Profiled]
) -> tuple[list[Pair], int]:
    """The rounds, and the next unused body id (every body stays unique)."""
    from bench.sync_points import run_point

    if not wanted(context):
        return [], next_id
    options = context.options
    print(f"  {options.pairs} back-to-back pairs at c=1, {options.pair_duration:g} s a window:")
    pairs = []
    for index in range(options.pairs):
        order = [MISS, NAIVE] if index % 2 == 0 else [NAIVE, MISS]
        p50: dict[str, float] = {}
        errors = 0
        for name in order:
            scenario = _scenario(name)
            plan = LoadPlan(
                target=context.servers.targets[scenario.target],
                templates=templates[scenario.body, scenario.rows],
                bodies=scenario.bodies,
                first_id=next_id,
                connections=1,
                warmup=PAIR_WARMUP_S,
                duration=options.pair_duration,
            )
            point, result = run_point(scenario, 1, plan, context, profiles)
            p50[name], errors = point.p50_ms, errors + point.errors
            next_id = max(next_id, result.next_id)
        pairs.append(Pair(index + 1, order[0], p50[MISS], p50[NAIVE], errors))
    return pairs, next_id
