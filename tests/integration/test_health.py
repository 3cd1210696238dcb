"""GET / is public, as the original design has it: `status` for anyone, which part is
down only for a valid key."""

from __future__ import annotations

import pytest

from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_without_a_valid_key_only_the_status(stack: Stack, key: str | None) -> None:
    with stack.client(key) as client:
        response = client.get("/")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("key", [READER_KEY, ADMIN_KEY])
def test_a_valid_key_sees_each_part(stack: Stack, key: str) -> None:
    with stack.client(key) as client:
        header = client.get("/")
    with stack.client(None) as client:
        query = client.get("/", params={"api_key": key})
    assert header.json() == query.json() == {"status": "ok", "redis": True, "worker": True}
