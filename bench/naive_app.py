"""The naive-Celery baseline's API: the design many tutorials show.

`python -m bench.naive_app --port P` answers `POST /predict` (the real API's body format)
by sending a task to bench/naive_worker.py over SERVING_REDIS_URL and blocking on
`AsyncResult.get()` inside a plain `def` endpoint, so each waiting request holds one of
FastAPI's threadpool threads. Pydantic validates the body; no auth, cache or log.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from bench.bare_app import serve
from bench.naive_worker import PREDICT_TASK, create_naive_celery
from common.settings import Settings

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
    serve("python -m bench.naive_app", create_app)


if __name__ == "__main__":
    main()
