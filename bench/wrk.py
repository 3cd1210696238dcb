"""The same closed-loop load with wrk (https://github.com/wg/wrk), when it is installed.

A generated Lua script builds each request's body from the plan's templates (the same
numbering as bench.loadgen, so "unique" bodies never repeat) and prints one result line.
It keeps no timeline: a plan's `interval` is ignored.
wrk has no warm-up option: a first run of `warmup` seconds precedes the measured run.
wrk counts durations in whole seconds and reports no per-request latencies, only its
histogram's percentiles; "errors" are its socket errors plus answers with status >= 400.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.loadgen import STEP, BodyTemplate, LoadPlan, LoadResult
from bench.procs import ProcessGroup
from dev.services import ManagedProcess

MARKER = "BENCH_RESULT"
ERROR_KINDS = ("connect", "read", "write", "timeout", "status")

LUA = """
local templates = {
%(templates)s
}
local bodies = "%(bodies)s"
local first_id = %(first_id)d
local nthreads = %(threads)d
local step = %(step)r
local fixed = %(fixed)s
local created = 0

function setup(thread)
  thread:set("tid", created)
  created = created + 1
end

local sent = 0
local unique_sent = 0
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
%(headers)s
end

function request()
  sent = sent + 1
  if bodies == "repeated" or (bodies == "alternating" and sent %% 2 == 0) then
    return wrk.format(nil, nil, nil, fixed)
  end
  local n = first_id + tid + unique_sent * nthreads
  unique_sent = unique_sent + 1
  local t = templates[(n %% #templates) + 1]
  local parts, bases = t[1], t[2]
  local k = #bases
  local pieces = {parts[1]}
  for i = 1, k do
    pieces[2 * i] = string.format("%%.17g", bases[i] + (n * k + i - 1) * step)
    pieces[2 * i + 1] = parts[i + 1]
  end
  return wrk.format(nil, nil, nil, table.concat(pieces))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("%(marker)s %%d %%d %%d %%d %%d %%d %%d %%f %%f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def _lua_template(template: BodyTemplate) -> str:
    """{{part, ...}, {base, ...}}: the same numbering as BodyTemplate.render."""
    parts = ", ".join(map(_lua_string, template.parts))
    bases = ", ".join(map(repr, template.bases))
    return f"  {{{{{parts}}}, {{{bases}}}}},"


def lua_script(plan: LoadPlan, threads: int) -> str:
    headers = "\n".join(
        f"  wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}"
        for name, value in plan.target.headers.items()
    )
    return LUA % {
        "templates": "\n".join(map(_lua_template, plan.templates)),
        "bodies": plan.bodies,
        "first_id": plan.first_id,
        "threads": threads,
        "step": STEP,
        "fixed": _lua_string(plan.templates[0].render().decode()),
        "headers": headers,
        "marker": MARKER,
    }


@dataclass
class WrkRun:
    window: tuple[float, float]
    proc: ManagedProcess
    plan: LoadPlan
    threads: int
    pids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.pids = [self.proc.pid]

    def wait(self) -> LoadResult:
        assert self.proc.popen is not None
        self.proc.popen.wait(max(0.0, self.window[1] - time.time()) + 90)
        return parse_result(result_line(self.proc), self.plan, self.threads)


def result_line(proc: ManagedProcess) -> str:
    """The line the script's done() printed; an error with wrk's output if there is none."""
    lines = proc.log_tail(100_000).splitlines()
    line = next((line for line in lines if line.startswith(MARKER)), None)
    if proc.popen is None or proc.popen.returncode != 0 or line is None:
        raise RuntimeError(f"{proc.name} failed:\n{proc.log_tail()}")
    return line


def parse_result(line: str, plan: LoadPlan, threads: int) -> LoadResult:
    fields = line.split()[1:]
    requests, duration_us = int(fields[0]), int(fields[1])
    errors = dict(zip(ERROR_KINDS, map(int, fields[2:7]), strict=True))
    p50_us, p99_us = float(fields[7]), float(fields[8])
    return LoadResult(
        ok=requests - errors["status"],
        window=duration_us / 1e6,
        p50_ms=p50_us / 1000,
        p99_ms=p99_us / 1000,
        errors={kind: count for kind, count in errors.items() if count},
        # Each thread numbers its own requests: leave room for every thread's last one.
        next_id=plan.first_id + threads * (requests + plan.connections + 1),
    )


def _start(
    plan: LoadPlan, seconds: int, threads: int, script: Path, group: ProcessGroup, name: str
) -> ManagedProcess:
    target = plan.target
    args = [
        str(wrk_path()),
        "--threads", str(threads),
        "--connections", str(plan.connections),
        "--duration", f"{seconds}s",
        "--timeout", "60s",
        "--script", str(script),
        f"http://{target.host}:{target.port}{target.path}",
    ]  # fmt: skip
    return group.start(ManagedProcess(name, args, script.with_name(f"{name}.log")))


def start_wrk_load(plan: LoadPlan, threads: int, group: ProcessGroup, work_dir: Path) -> WrkRun:
    """Run the warm-up to its end, then start the measured run and return at once."""
    threads = max(1, min(threads, plan.connections))
    script = work_dir / "bench.lua"
    script.write_text(lua_script(plan, threads))
    warmup = _start(plan, max(1, math.ceil(plan.warmup)), threads, script, group, "wrk-warmup")
    assert warmup.popen is not None
    warmup.popen.wait()
    # The warm-up used ids from first_id on: move the measured run past them.
    warmup_result = parse_result(result_line(warmup), plan, threads)
    measured_plan = replace(plan, first_id=warmup_result.next_id)
    script.write_text(lua_script(measured_plan, threads))
    seconds = max(1, math.ceil(plan.duration))
    started = time.time()
    proc = _start(measured_plan, seconds, threads, script, group, "wrk")
    return WrkRun((started, started + seconds), proc, measured_plan, threads)
