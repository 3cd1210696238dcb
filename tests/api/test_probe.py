"""GET /'s check runs at most once a second however often it is called."""

from __future__ import annotations

import asyncio

import pytest

from api.probe import HealthProbe


def test_concurrent_and_repeated_calls_share_one_check_a_second() -> None:
    calls: list[int] = []

    async def check() -> tuple[bool, bool]:
        calls.append(1)
        await asyncio.sleep(0.05)  # a control ping takes a while
        return True, len(calls) == 1

    async def scenario() -> list[tuple[bool, bool]]:
        probe = HealthProbe(max_age=0.3)
        together = await asyncio.gather(*(probe.status(check) for _ in range(100)))
        again = [await probe.status(check) for _ in range(50)]  # within max_age
        await asyncio.sleep(0.35)
        return [*together, *again, await probe.status(check)]

    results = asyncio.run(scenario())

    assert len(calls) == 2
    assert results[:150] == [(True, True)] * 150
    assert results[-1] == (True, False)  # the second check's answer


def test_a_failed_check_is_not_kept() -> None:
    outcomes = iter([RuntimeError("broker gone"), (True, True)])

    async def check() -> tuple[bool, bool]:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def scenario() -> tuple[bool, bool]:
        probe = HealthProbe()
        with pytest.raises(RuntimeError, match="broker gone"):
            await probe.status(check)
        return await probe.status(check)

    assert asyncio.run(scenario()) == (True, True)
