"""Typed requests the services take, parsed from each front end's own body shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.tenancy import Tenant


@dataclass(frozen=True)
class PredictRequest:
    owner: str  # a digest of the caller's key, never the key
    model_type: str | None
    version: str | None
    input_data: Any  # one row (an object) or a list of rows; validated by the service
    body_bytes: int = 0  # the body's size: past 1 MiB its rows are validated off the loop


@dataclass(frozen=True)
class Idempotency:
    key: str
    body_digest: str


@dataclass(frozen=True)
class JobRequest:
    tenant: Tenant
    model_type: str | None
    version: str | None
    input_data: Any = None  # rows, as for a prediction ...
    input_object: str | None = None  # ... or the key of an object in the model store
    callback_url: str | None = None
    idempotency: Idempotency | None = None
    body_bytes: int = 0  # as for a prediction

    @property
    def owner(self) -> str:
        return self.tenant.owner
