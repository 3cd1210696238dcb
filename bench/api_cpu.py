"""`python -m bench.api_cpu` (`make api-cpu`): the API's own CPU per one-row cache miss,
measured in one process.

Under `make bench` every server shares one core, and a sampling profiler charges a
sample to whatever frame was running when the process lost the core: after a socket
write to Redis that is the write, whatever the CPU went to. This measures the API alone.
It starts a private Redis and the demo models in a local store, then sends the bench's
unique one-row bodies (bench/loadgen.py's template) straight into the API's ASGI app
from `--concurrency` callers, through its middleware, validation, cache and log. In
place of the workers, the micro-batcher's dispatch answers each batch after
`--worker-ms`. It prints the CPU per request, from `time.process_time()` over the
measured requests, and, with `--bare`, the same for bench/bare_app.py driven the same
way. prometheus-client runs in its single-process mode here (bench.stack has imported
it before any metrics directory could be set); the served API writes its metrics to
files, which costs a little more per metric. Under py-spy it shows where the API's CPU
goes, free of the other processes:
`py-spy record -f raw -o api.txt -- .venv/bin/python -m bench.api_cpu`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.loadgen import BodyTemplate
from bench.stack import API_KEY, PERTURBED_FEATURE, child_env, demo_rows, publish_demo_models
from dev.services import start_redis

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def scope_of(body: bytes) -> dict[str, Any]:
    """An HTTP/1.1 `POST /predict` as uvicorn hands it to the app."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-api-key", API_KEY.encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: App, body: bytes) -> int:
    """One request through the app; its status."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # nothing more: the connection stays open until the answer
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_of(body), receive, send)
    return status


def caller(app: App, bodies: list[bytes], statuses: list[int]) -> Coroutine[Any, Any, None]:
    async def run() -> None:
        for body in bodies:
            statuses.append(await call(app, body))

    return run()


async def measure(app: App, template: BodyTemplate, requests: int, concurrency: int) -> float:
    """CPU seconds per request over `requests`, after a warm-up; every answer a 200."""
    statuses: list[int] = []
    per_caller = max(1, requests // concurrency)
    numbers = itertools.count()  # every body unique: each request a cache miss
    for n in (max(1, per_caller // 10), per_caller):  # the warm-up, then the measure
        callers = [
            caller(app, [template.render(next(numbers)) for _ in range(n)], statuses)
            for _ in range(concurrency)
        ]
        started = time.process_time()
        await asyncio.gather(*callers)
        spent = time.process_time() - started
    failed = [status for status in statuses if status != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(statuses)} answers were not 200: {failed[:5]}")
    return spent / (per_caller * concurrency)


def stand_in_worker(app: Any, seconds: float) -> None:
    """The micro-batcher's dispatch answers each batch itself, after `seconds`."""
    batcher = app.state.services.predictions.batcher

    async def dispatch(meta: Any, batch: list[Any]) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        n_rows = sum(len(request.rows) for request in batch)
        classes = [str(c) for c in meta.classes]
        even = [1 / len(classes)] * len(classes)  # one probability per class, any model
        return {"labels": [classes[0]] * n_rows, "probabilities": [even] * n_rows}

    batcher.dispatch = dispatch


async def run_app(name: str, options: argparse.Namespace) -> float:
    from common.settings import Settings

    settings = Settings()
    if name == "api":
        from api.main import create_app

        app: Any = create_app(settings)
    else:
        from bench.bare_app import create_app as create_bare

        app = create_bare(settings)
    async with app.router.lifespan_context(app):
        if name == "api":
            stand_in_worker(app, options.worker_ms / 1000)
        template = BodyTemplate.from_row(demo_rows()[0], PERTURBED_FEATURE)
        return await measure(app, template, options.requests, options.concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_cpu", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--worker-ms", type=float, default=2.0)
    parser.add_argument("--bare", action="store_true", help="measure bench/bare_app.py too")
    options = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-cpu-"))
    redis_proc, redis_url = start_redis(tmp / "redis")
    try:
        env = child_env(redis_url, tmp)
        publish_demo_models(env)
        os.environ.update(env)
        for name in ["api", "bare"] if options.bare else ["api"]:
            seconds = asyncio.run(run_app(name, options))
            print(
                f"api_cpu: {name}: {seconds * 1e6:.0f} us of CPU per one-row request "
                f"({options.requests:,} requests from {options.concurrency} callers)"
            )
    finally:
        redis_proc.stop()


if __name__ == "__main__":
    main()
