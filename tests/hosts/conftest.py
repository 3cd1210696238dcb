"""The multi-host test bed (dev/hosts): skipped, with the reason, where this machine
cannot make network namespaces or CPU-capped cgroups."""

from __future__ import annotations

import pytest

from dev.hosts.bed import unavailable_reason

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def hosts_or_skip() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no multi-host test bed here: {reason}")
