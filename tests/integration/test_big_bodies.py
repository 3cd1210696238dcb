"""The rows of bodies over 1 MiB that need the validator are validated on a thread, so
the event loop keeps answering other requests meanwhile; smaller ones stay on the loop
(no thread hop), and so do exactly right ones, decoded straight into rows."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import Stack, scrape, total

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def off_loop(stack: Stack) -> float:
    return total(scrape(stack.url + "/metrics"), "serving_off_loop_validations_total")


def predict(stack: Stack, body: bytes) -> httpx.Response:
    with stack.client(headers={"Content-Type": "application/json"}) as client:
        return client.post("/predict/xgboost/1", content=body)


def rows_body(n: int, pad_to: int = 0, wrong: bool = False) -> bytes:
    """n rows, exactly right, or with the last one's value a string (which the validator
    names)."""
    rows = [EXAMPLE_ROW | {"mean radius": 10 + i / 1000} for i in range(n)]
    if wrong:
        rows[-1] = rows[-1] | {"mean radius": "ten"}
    body = orjson.dumps({"input_data": rows})
    return body[:-1] + b" " * max(0, pad_to - len(body)) + b"}"


def test_a_prediction_body_over_1_mib_needing_the_validator_goes_off_the_loop(
    stack: Stack,
) -> None:
    small = rows_body(50, wrong=True)
    exact = rows_body(1000, pad_to=MIB + 1000)
    wrong = rows_body(1000, pad_to=MIB + 1000, wrong=True)
    assert len(small) < MIB < len(exact) == len(wrong) < stack.settings.max_body_bytes

    counts, answers = [off_loop(stack)], []
    for body in (small, exact, wrong):
        answers.append(predict(stack, body))
        counts.append(off_loop(stack))

    assert [answer.status_code for answer in answers] == [422, 200, 422]
    assert len(answers[1].json()["predictions"]) == 1000
    assert "row 999: mean radius" in answers[2].json()["error"]["message"]
    # common/exact_body.py decodes an exactly right body on the loop, as orjson parsed
    # every body there: either holds the GIL throughout, a thread would not free the loop
    assert counts[1] == counts[2] == counts[0]
    assert counts[3] == counts[0] + 1


def test_the_loop_keeps_answering_while_a_30_mb_job_body_is_validated(stack: Stack) -> None:
    """40,000 rows whose first feature is an integer go through pydantic (the slow path);
    the last row is wrong, so the job is refused (422) after every row was validated and
    nothing runs on the workers. Meanwhile another client's small requests keep coming."""
    rows = [EXAMPLE_ROW | {"mean radius": 10 + i % 7} for i in range(40_000)]
    rows[-1] = rows[-1] | {"mean radius": "ten"}
    body = orjson.dumps({"input_data": rows, "model_type": "xgboost"})
    outcome: dict[str, object] = {}

    def submit() -> None:
        started = time.perf_counter()
        with stack.client(headers={"Content-Type": "application/json"}) as client:
            outcome["response"] = client.post("/jobs", content=body)
        outcome["seconds"] = time.perf_counter() - started

    before = off_loop(stack)
    latencies: list[float] = []
    with stack.client() as probe:
        probe.get("/jobs/" + "0" * 32)  # its connection open before
        big = threading.Thread(target=submit)
        big.start()
        while big.is_alive():
            started = time.perf_counter()
            assert probe.get("/jobs/" + "0" * 32).status_code == 404
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    seconds = float(outcome["seconds"])  # type: ignore[arg-type]
    print(
        f"\n{len(body) / 1e6:.0f} MB job body answered in {seconds:.2f} s; meanwhile "
        f"{len(latencies)} small requests, the slowest {max(latencies) * 1000:.0f} ms"
    )

    assert response.status_code == 422, response.text
    assert "row 39999: mean radius" in response.json()["error"]["message"]
    assert off_loop(stack) == before + 1
    # On the loop, validating (0.6 s of the answer's ~0.9 s here) would hold every small
    # request behind it. Off it, the loop gets a turn between slices of rows; what still
    # stops it (~0.2 s each, here) is parsing the body (orjson, one C call holding the
    # GIL, ~9 ms a MiB) and freeing the 1.2 million parsed objects.
    assert len(latencies) >= 5
    assert max(latencies) < seconds / 2, [round(x * 1000) for x in latencies]
