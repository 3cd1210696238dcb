"""`python -m api [--host H] [--port P] [--workers N]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from common.observability import configure_logging, prepare_metrics_dir
from common.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    settings = get_settings()
    # Before anything imports prometheus_client; uvicorn's worker processes inherit it.
    prepare_metrics_dir(settings.metrics_dir)
    configure_logging("api", settings.log_level, settings.log_format)
    # uvicorn's own access log prints query strings (and so `api_key`): ours does not.
    # log_config=None: each process keeps the logging that app_factory configures.
    uvicorn.run(
        "api.main:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        log_config=None,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
