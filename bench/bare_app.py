"""The baseline: a minimal FastAPI app predicting in-process with the active model.

`python -m bench.bare_app --port P` loads the default model from the store named by the
settings (SERVING_*) and answers `POST /predict` with the body format of the real API,
`{"input_data": {feature: value}}` or `{"input_data": [{feature: value}, ...]}`. No
auth, no input validation beyond ordering the features, no cache, no queue, no log: what
is left is HTTP, JSON and the model itself.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from common.registry import Registry
from common.runtimes import LoadedModel, load_model
from common.settings import Settings, get_settings
from common.store import LocalStore


def load_active_model(settings: Settings) -> LoadedModel:
    registry = Registry(LocalStore(settings.local_store_path))
    meta = registry.catalog().resolve()
    return load_model(meta, registry.read_artifact(meta), settings)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        # The same thread budget as a worker process gets.
        threadpool_limits(limits=settings.model_threads)
        app.state.model = load_active_model(settings)
        yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        # Predicting on the event loop is the fastest in-process option for a model this
        # small: a thread hop would cost more than the prediction.
        model: LoadedModel = request.app.state.model
        data: Any = orjson.loads(await request.body())["input_data"]
        rows: list[dict[str, Any]] = [data] if isinstance(data, dict) else data
        names = model.meta.feature_names
        result = model.predict([[row[name] for name in names] for row in rows])
        return Response(orjson.dumps(result), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return app


def serve(prog: str, factory: Callable[[Settings], FastAPI]) -> None:
    """Run a baseline app: one uvicorn process, no access log (shared by the baselines)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = get_settings()
    uvicorn.run(
        factory(settings),
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_level=settings.log_level.lower(),
    )


def main() -> None:
    serve("python -m bench.bare_app", create_app)


if __name__ == "__main__":
    main()
