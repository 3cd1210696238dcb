"""The in-flight limit of synchronous predictions: slots, refusal at the limit, release."""

from __future__ import annotations

import asyncio

import pytest

from common.admission import InFlightLimit
from common.errors import InvalidInput, TooManyRequests


def test_slots_up_to_the_limit_then_a_clear_refusal() -> None:
    limit = InFlightLimit(2, retry_after_seconds=3)
    with limit.slot(), limit.slot():
        assert limit.in_flight == 2
        with pytest.raises(TooManyRequests) as refused, limit.slot():
            pass
        assert limit.in_flight == 2  # a refusal takes no slot
    assert limit.in_flight == 0
    error = refused.value
    assert error.status == 429 and error.type == "overloaded"
    assert "already has 2 predictions waiting" in error.message
    assert error.details == {"max_in_flight_predictions": 2, "retry_after_seconds": 3}
    assert error.headers() == {"Retry-After": "3"}


def test_a_slot_is_given_back_when_the_prediction_fails() -> None:
    limit = InFlightLimit(1)
    with pytest.raises(RuntimeError), limit.slot():
        raise RuntimeError("the worker failed")
    assert limit.in_flight == 0
    with limit.slot():
        assert limit.in_flight == 1


def test_concurrent_waits_hold_their_slots_until_they_end() -> None:
    async def scenario() -> tuple[list[str], int]:
        limit = InFlightLimit(3)
        release = asyncio.Event()

        async def predict() -> str:
            try:
                with limit.slot():
                    await release.wait()
                    return "ok"
            except TooManyRequests:
                return "refused"

        tasks = [asyncio.create_task(predict()) for _ in range(5)]
        await asyncio.sleep(0)
        held = limit.in_flight
        release.set()
        return list(await asyncio.gather(*tasks)), held

    outcomes, held = asyncio.run(scenario())
    assert held == 3
    assert outcomes == ["ok", "ok", "ok", "refused", "refused"]


def test_other_errors_add_no_headers() -> None:
    assert TooManyRequests("busy").headers() == {"Retry-After": "1"}
    assert TooManyRequests("busy", {"retry_after_seconds": "soon"}).headers() == {
        "Retry-After": "1"
    }
    assert InvalidInput("bad row").headers() == {}
