"""The scale bench's report: the `scale:` line in the issue's form, and the verdict."""

from __future__ import annotations

import argparse

from bench.scale_report import HostsRun, Point, report, scale_line


def point(hosts: int, rows: int, rps: float) -> Point:
    cpu = {"api": 40.0, "redis": 3.0, "workers": 20.0 * hosts, "postgres": 2.0, "load": 3.0}
    return Point(hosts, "1 row" if rows == 1 else "1,000 rows", rows, rps, 10.0, 50.0, {}, cpu)


def test_the_scale_line_gives_each_count_and_its_ratio_to_one_host() -> None:
    line = scale_line("", [(1, 300.0), (2, 610.0), (3, 840.0)], "req/s", ",.0f")
    assert line == "scale: 1 host 300 req/s, 2 hosts 610 req/s (2.03x), 3 hosts 840 req/s (2.80x)"


def test_the_report_says_whether_three_hosts_meet_the_target() -> None:
    runs = [
        HostsRun(n, [point(n, 1, rps), point(n, 1000, rps / 20)], job_seconds=10.0 / n)
        for n, rps in [(1, 300.0), (2, 600.0), (3, 700.0)]
    ]
    text = report(runs, argparse.Namespace(job_rows=100_000))
    assert "scale: 1 host 300 req/s, 2 hosts 600 req/s (2.00x), 3 hosts 700 req/s (2.33x)" in text
    assert "target: 3 hosts >= 2.6x one host for 1-row misses: 2.33x, NOT met" in text
    assert "3 hosts 30,000 rows/s (3.00x)" in text  # the job's rows per second
