"""Prediction cache keys and the registry-change notifications, on Redis."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from common.registry import ModelMetadata
    from common.settings import Settings

log = logging.getLogger(__name__)


def rows_digest(rows: list[list[Any]]) -> str:
    """A canonical hash of validated rows: values in training feature order, typed."""
    return hashlib.blake2b(orjson.dumps(rows), digest_size=20).hexdigest()


def prediction_key(prefix: str, meta: ModelMetadata, rows: list[list[Any]]) -> str:
    # Type, version and artifact checksum: activating or republishing never serves stale.
    return f"{prefix}pred:{meta.model_type}:{meta.version}:{meta.sha256[:16]}:{rows_digest(rows)}"


def prediction_pattern(prefix: str) -> str:
    return f"{prefix}pred:*"


def registry_channel(prefix: str) -> str:
    return f"{prefix}registry-changed"


def models_epoch_key(prefix: str) -> str:
    """Bumped when artifacts are deleted, so every worker process drops loaded models."""
    return f"{prefix}models-epoch"


def notify_registry_changed(settings: Settings) -> None:
    """Tell running API processes to reread the registry now; best effort.

    Sent on the result backend's Redis, where each API process already subscribes."""
    import redis

    client = redis.Redis.from_url(
        settings.effective_result_backend_url, socket_timeout=2, socket_connect_timeout=2
    )
    try:
        client.publish(registry_channel(settings.cache_prefix), b"changed")
    except redis.RedisError as exc:
        log.warning(
            "could not notify API processes of the registry change (%s); "
            "they pick it up within %.0f s",
            exc,
            settings.registry_cache_seconds,
        )
    finally:
        client.close()
