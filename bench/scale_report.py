"""What `make scale-bench` measured (bench/scale.py): its points, tables and lines."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.tables import markdown_table


@dataclass
class Point:
    hosts: int
    workload: str  # "1 row" or "1,000 rows"
    rows_per_request: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    cpu: dict[str, float]  # % of one core, per group, inside the window
    redis_commands_per_request: float = 0.0
    log_bytes_per_request: float = 0.0  # the prediction log's growth in PostgreSQL
    redis_bytes_per_request: float = 0.0  # Redis's growth: cache entries, results
    requests_per_task: float = 0.0  # the API's micro-batches

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows_per_request


@dataclass
class HostsRun:
    hosts: int
    points: list[Point] = field(default_factory=list)
    job_seconds: float = 0.0
    job_upload_seconds: float = 0.0  # of which the CSV's upload, until the 202
    throttled_seconds: float = 0.0  # how long the kernel held the worker hosts back


def scale_line(label: str, values: list[tuple[int, float]], unit: str, fmt: str) -> str:
    base = values[0][1]
    parts = []
    for i, (hosts, value) in enumerate(values):
        text = f"{hosts} host{'s' if hosts > 1 else ''} {value:{fmt}} {unit}"
        parts.append(text if i == 0 else f"{text} ({value / base:.2f}x)")
    return f"scale{label}: " + ", ".join(parts)


def report(runs: list[HostsRun], options: argparse.Namespace) -> str:
    points = [p for run in runs for p in run.points]
    header = ["workload", "hosts", "req/s", "rows/s", "p50 ms", "p99 ms", "errors",
              "API CPU %", "Redis CPU %", "workers CPU %", "PG CPU %", "load CPU %",
              "req/task", "Redis cmds/req", "Redis bytes/req", "log bytes/req"]  # fmt: skip
    rows = [
        [p.workload, str(p.hosts), f"{p.rps:,.0f}", f"{p.rows_per_s:,.0f}", f"{p.p50_ms:.1f}",
         f"{p.p99_ms:.1f}", str(sum(p.errors.values())), f"{p.cpu['api']:.0f}",
         f"{p.cpu['redis']:.0f}", f"{p.cpu['workers']:.0f}", f"{p.cpu['postgres']:.0f}",
         f"{p.cpu['load']:.0f}", f"{p.requests_per_task:.1f}",
         f"{p.redis_commands_per_request:.1f}",
         f"{p.redis_bytes_per_request:,.0f}", f"{p.log_bytes_per_request:,.0f}"]
        for p in points
    ]  # fmt: skip
    one = [(p.hosts, p.rps) for p in points if p.rows_per_request == 1]
    big = [(p.hosts, p.rows_per_s) for p in points if p.rows_per_request == 1000]
    jobs = [(run.hosts, options.job_rows / run.job_seconds) for run in runs]
    lines = [
        markdown_table(header, rows),
        "",
        "job: "
        + ", ".join(
            f"{r.hosts} host(s) {r.job_seconds:.1f} s ({r.job_upload_seconds:.1f} s upload)"
            for r in runs
        ),
        scale_line("", one, "req/s", ",.0f"),
        scale_line(" (1,000 rows)", big, "rows/s", ",.0f"),
        scale_line(f" ({options.job_rows:,}-row job)", jobs, "rows/s", ",.0f"),
    ]
    if len(one) == 3:
        ratio = one[2][1] / one[0][1]
        lines.append(f"target: 3 hosts >= 2.6x one host for 1-row misses: {ratio:.2f}x, "
                     f"{'met' if ratio >= 2.6 else 'NOT met'}")  # fmt: skip
    return "\n".join(lines)


def results(runs: list[HostsRun], options: argparse.Namespace, text: str) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": vars(options),
        "runs": [
            asdict(run) | {"points": [asdict(p) | {"rows_per_s": p.rows_per_s} for p in run.points]}
            for run in runs
        ],
        "report": text,
    }
