"""The naive-Celery baseline's API: the design many tutorials show.

`python -m bench.naive_app --port P` answers `POST /predict` (the real API's body format)
by sending a task to bench/naive_worker.py over SERVING_REDIS_URL and blocking on
`AsyncResult.get()` inside a plain `def` endpoint, so each waiting request holds one of
FastAPI's threadpool threads. Pydantic validates the body; no auth, cache or log.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from bench.naive_worker import PREDICT_TASK, create_naive_celery
from common.settings import Settings, get_settings

RESULT_TIMEOUT_SECONDS = 30.0


class PredictRequest(BaseModel):
    input_data: dict[str, float] | list[dict[str, float]]


def create_app(settings: Settings) -> FastAPI:
    celery = create_naive_celery(settings)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        data = request.input_data
        rows = data if isinstance(data, list) else [data]
        result: dict[str, Any] = celery.send_task(PREDICT_TASK, args=[rows]).get(
            timeout=RESULT_TIMEOUT_SECONDS
        )
        return result

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
