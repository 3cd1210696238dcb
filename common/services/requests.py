"""Typed requests the services take, parsed from each front end's own body shapes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.tenancy import Tenant


@dataclass(frozen=True)
class RawBody:
    """A predict body's JSON text, not parsed yet: the service decodes it for the version
    it goes to, straight into rows when it is exactly right (common.exact_body), and
    otherwise has the front end's `parse` read its input_data, naming what is wrong."""

    text: bytes
    parse: Callable[[bytes], Any]

    def input_data(self) -> Any:
        return self.parse(self.text)


@dataclass(frozen=True)
class PredictRequest:
    owner: str  # a digest of the caller's key, never the key
    model_type: str | None
    version: str | None
    # one row (an object) or a list of rows, or the body they are in; validated by the service
    input_data: Any | RawBody
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
