"""Fixtures of the deploy tests: fresh copies of the Kubernetes renders, free to mutate."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.kubernetes import OVERLAYS, Doc, render


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return copy.deepcopy(list(render(request.param)))


@pytest.fixture
def production() -> list[Doc]:
    return copy.deepcopy(list(render("production")))
