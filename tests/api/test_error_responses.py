"""The API's error handler: a domain error becomes its status, JSON body and headers."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from api.main import install_error_handlers
from common.errors import InvalidInput, TooManyRequests


def app() -> FastAPI:
    application = FastAPI()
    install_error_handlers(application)

    @application.get("/busy")
    async def busy() -> None:
        raise TooManyRequests.at_limit(150, 2)

    @application.get("/invalid")
    async def invalid() -> None:
        raise InvalidInput("mean radius: must be a number")

    return application


def get(path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app())
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path)

    return asyncio.run(call())


def test_too_many_requests_answers_429_with_retry_after() -> None:
    response = get("/busy")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    error = response.json()["error"]
    assert error["type"] == "overloaded"
    assert error["details"] == {"max_in_flight_predictions": 150, "retry_after_seconds": 2}


def test_other_errors_carry_no_retry_after() -> None:
    response = get("/invalid")
    assert response.status_code == 422
    assert "retry-after" not in response.headers
    assert response.json()["error"]["type"] == "invalid_input"
