"""The one settings class. Nothing else in the project reads the environment."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.key_rules import checked_digests, hash_api_key, refuse_weak_secrets
from common.redis_urls import with_credentials

CommaList = Annotated[list[str], NoDecode]

# Types a skops artifact of the demo logistic-regression pipeline may contain beyond
# skops' own defaults. Extend through SERVING_SKOPS_TRUSTED_TYPES for other estimators.
DEFAULT_SKOPS_TRUSTED_TYPES = [
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
]
__all__ = ["DEFAULT_SKOPS_TRUSTED_TYPES", "Settings", "get_settings", "hash_api_key"]


class Settings(BaseSettings):
    # Errors never repeat the input: it holds the plain API keys and secrets.
    model_config = SettingsConfigDict(
        env_prefix="SERVING_", env_file=None, extra="ignore", hide_input_in_errors=True
    )

    # Redis: one URL by default; broker, result backend and cache can be split (other
    # databases or other instances). Credentials go in `redis_username` (an ACL user)
    # and `redis_password`, which are added to every Redis URL that carries none, so the
    # URLs themselves hold no secret and can be logged.
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = None
    result_backend_url: str | None = None
    cache_url: str | None = None
    redis_username: str | None = None
    redis_password: SecretStr | None = None

    # Model store: a local folder (embedded default) or an S3-compatible bucket.
    store_backend: Literal["local", "s3"] = "local"
    local_store_path: Path = Path("model_store")
    s3_bucket: str = "models"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    database_url: str = "sqlite:///predictions.db"

    # API keys: plain keys (hashed on load, never kept) or their sha256 hex digests.
    api_keys: CommaList = Field(default_factory=list)
    admin_api_keys: CommaList = Field(default_factory=list)
    api_key_sha256: CommaList = Field(default_factory=list)
    admin_api_key_sha256: CommaList = Field(default_factory=list)

    cache_ttl_seconds: int = Field(3600, ge=0)
    cache_prefix: str = "serving:"
    # "key": each key's cached predictions are its own, so a hit never tells one key what
    # another sent. "global": every key shares them (more hits; MLServer's and Triton's
    # caches are global), for deployments whose keys all trust one another.
    cache_scope: Literal["key", "global"] = "key"
    # A traffic split (PUT /models/{type}/traffic) picks a version per caller key (a
    # hash: a caller sees one version throughout), or afresh for each request if false.
    traffic_sticky: bool = True
    predict_timeout_seconds: float = Field(30.0, gt=0)
    # GET /ready: how long a ping task may take through the queue and back.
    readiness_timeout_seconds: float = Field(5.0, gt=0)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_rows_per_request: int = Field(10_000, gt=0)
    registry_cache_seconds: float = Field(2.0, ge=0)
    # How long the API keeps an idle HTTP connection open. Longer than any client's or
    # load balancer's idle timeout (httpx 5 s, AWS ALB 60 s): at uvicorn's own 5 s a
    # client reusing a connection just as the server closes it gets a reset (ReadError).
    http_keep_alive_seconds: int = Field(75, gt=0)
    # Per API process: at most this many synchronous predictions wait on the workers at
    # once (cache hits and jobs do not count); past it the API answers 429 with
    # Retry-After at once instead of queueing without bound. Roughly what the workers can
    # drain within predict_timeout_seconds, divided among the API processes.
    max_in_flight_predictions: int = Field(256, gt=0)

    # Micro-batching: while `batch_max_in_flight` tasks of a model version are out from
    # one API process, its requests gather (at most `batch_max_wait_ms`, at most
    # `batch_max_rows` rows) and go to a worker as one task. An idle API never waits.
    batch_max_rows: int = Field(512, gt=0)
    batch_max_wait_ms: float = Field(5.0, ge=0)
    # One task out at a time lets the next batch grow while it runs: on one shared core
    # that gave 20% more cache misses per second than two, at a lower p99 (README,
    # Benchmark). Each API process has its own lanes, so several still run in parallel.
    batch_max_in_flight: int = Field(1, gt=0)

    # Asynchronous jobs: rows are split into chunks of `job_chunk_rows`, each a task.
    # Job state and results live in the result backend's Redis for `job_ttl_seconds`.
    job_chunk_rows: int = Field(5000, gt=0)
    job_max_rows: int = Field(1_000_000, gt=0)
    # An inline job body takes about 6.5 times its size in API memory while it is parsed
    # and validated: 64 MiB (about 60,000 rows of 30 named features) keeps one request
    # near 400 MB. Bigger inputs go in a CSV object in the store (`input_object`).
    job_max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    job_ttl_seconds: int = Field(24 * 3600, gt=0)
    job_inline_result_rows: int = Field(1000, ge=0)

    # Signs job callbacks (HMAC-SHA256); jobs with a callback_url are refused without it.
    callback_secret: SecretStr | None = None
    callback_max_attempts: int = Field(6, gt=0)
    # One deadline per delivery attempt: connect, send and the whole response.
    callback_timeout_seconds: float = Field(10.0, gt=0)
    # Callbacks go only to public addresses; these CIDRs are allowed besides (receivers
    # inside the operator's own network, a local receiver in tests). Empty by default.
    callback_allowed_networks: CommaList = Field(default_factory=list)
    # Deliveries in flight at once per callback worker (its thread pool's size).
    callback_concurrency: int = Field(16, gt=0)

    # Uploads (PUT /uploads/{name}, POST /jobs with a CSV or Parquet body): streamed into
    # the store under the key's own prefix, up to this size.
    upload_max_bytes: int = Field(2 * 1024**3, gt=0)
    # How long a presigned results URL, minted only for the job's owner, stays valid.
    presign_seconds: int = Field(3600, gt=0)
    # Per API process: job submissions being read and parsed at once; past it, 429.
    max_job_submissions_in_flight: int = Field(4, gt=0)
    # Per key: jobs queued or running at once; past it, 429 until one ends.
    max_jobs_per_key: int = Field(20, gt=0)
    # GET /logs: an answer is cut at this many bytes; the rest is on the next page.
    logs_max_response_bytes: int = Field(8 * 1024 * 1024, gt=1024)
    # Log rows an API process holds for its background writer (cache hits); past it a
    # request waits (off the event loop) for room, counted in a metric: memory stays
    # bounded and no row is dropped.
    log_queue_max_rows: int = Field(10_000, gt=0)

    # Queues: synchronous predictions (and readiness pings) on `task_queue`; job work
    # (preparing, chunks, the final results write) and callbacks on queues of their own,
    # so interactive requests never wait behind a job's chunks (README, Queues).
    task_queue: str = "predictions"
    job_queue: str | None = None  # default: "<task_queue>.jobs"
    callback_queue: str | None = None  # default: "<task_queue>.callbacks"
    # A job with no progress (no chunk recorded, no state change) for this long is failed
    # by the sweeper, which every worker runs every `job_sweep_seconds` (one at a time).
    # Keep it above the longest a job's next chunk may wait in its queue.
    job_stall_seconds: int = Field(600, gt=0)
    job_sweep_seconds: float = Field(10.0, gt=0)
    # An input object larger than this is refused before a byte of it is read.
    job_max_object_bytes: int = Field(4 * 1024**3, gt=0)
    # Prediction log rows older than this are deleted in batches by the workers'
    # housekeeping; 0 keeps them forever.
    log_retention_days: int = Field(30, ge=0)
    task_soft_time_limit_seconds: float = Field(50.0, gt=0)
    task_time_limit_seconds: float = Field(60.0, gt=0)
    broker_visibility_timeout_seconds: int = Field(3600, gt=0)
    result_expires_seconds: int = Field(3600, gt=0)
    # Task events (received, started, succeeded...) cost the worker three publishes per
    # task. Flower turns them on in the workers itself while it runs (its `enable_events`,
    # every 5 s), so they are off otherwise; True sends them always, for other watchers.
    # The API's task-sent event follows the same setting.
    task_events: bool = False
    # A task whose run kills its worker process (a crash, the OOM killer) goes back to
    # the queue; past this many runs it fails instead of looping forever.
    task_max_attempts: int = Field(3, gt=0)
    worker_model_cache_size: int = Field(4, gt=0)
    model_threads: int = Field(1, gt=0)

    # Refused unless an operator turns this on: loading pickle runs code from the bucket.
    allow_unsafe_pickle: bool = False
    skops_trusted_types: CommaList = Field(
        default_factory=lambda: list(DEFAULT_SKOPS_TRUSTED_TYPES)
    )

    # Flower, as `make run` starts it (on 127.0.0.1 only): "user:password"; when unset,
    # `make run` makes a development password and prints it.
    flower_basic_auth: SecretStr | None = None
    flower_port: int = Field(5555, gt=0, le=65535)

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Prometheus: several processes per service share a directory of metric files
    # (a fresh temporary one when unset). The worker's main process serves /metrics.
    metrics_dir: Path | None = None
    worker_metrics_port: int = Field(9808, ge=0, le=65535)  # 0: no metrics server

    @field_validator(
        "api_keys",
        "admin_api_keys",
        "api_key_sha256",
        "admin_api_key_sha256",
        "skops_trusted_types",
        "callback_allowed_networks",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("callback_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network in CIDR form") from None
        return value

    @model_validator(mode="after")
    def _hash_keys(self) -> Settings:
        self._refuse_weak_secrets()
        # Keep only digests in memory: a settings dump or a traceback never shows a key.
        self.api_key_sha256 = [*self.api_key_sha256, *map(hash_api_key, self.api_keys)]
        self.admin_api_key_sha256 = [
            *self.admin_api_key_sha256,
            *map(hash_api_key, self.admin_api_keys),
        ]
        self.api_keys, self.admin_api_keys = [], []
        if self.task_soft_time_limit_seconds > self.task_time_limit_seconds:
            raise ValueError("task_soft_time_limit_seconds must not exceed task_time_limit_seconds")
        if self.broker_visibility_timeout_seconds <= self.task_time_limit_seconds:
            raise ValueError(
                "broker_visibility_timeout_seconds must exceed task_time_limit_seconds"
            )
        return self

    def _refuse_weak_secrets(self) -> None:
        """Placeholders and short keys refused (common.key_rules), digests normalised."""
        plain = {"SERVING_API_KEYS": self.api_keys, "SERVING_ADMIN_API_KEYS": self.admin_api_keys}
        if self.callback_secret is not None:
            plain["SERVING_CALLBACK_SECRET"] = [self.callback_secret.get_secret_value()]
        refuse_weak_secrets(plain)
        self.api_key_sha256 = checked_digests("SERVING_API_KEY_SHA256", self.api_key_sha256)
        self.admin_api_key_sha256 = checked_digests(
            "SERVING_ADMIN_API_KEY_SHA256", self.admin_api_key_sha256
        )

    @property
    def effective_job_queue(self) -> str:
        return self.job_queue or f"{self.task_queue}.jobs"

    @property
    def effective_callback_queue(self) -> str:
        return self.callback_queue or f"{self.task_queue}.callbacks"

    @property
    def effective_broker_url(self) -> str:
        return self._with_credentials(self.broker_url or self.redis_url)

    @property
    def effective_result_backend_url(self) -> str:
        return self._with_credentials(self.result_backend_url or self.redis_url)

    @property
    def effective_cache_url(self) -> str:
        return self._with_credentials(self.cache_url or self.redis_url)

    @property
    def worker_writes_cache(self) -> bool:
        """A miss's result is cached by the worker, in the script that stores it (one
        round trip less for the API), when the cache and the results share a Redis."""
        return self.cache_ttl_seconds > 0 and self.effective_cache_url == (
            self.effective_result_backend_url
        )

    def _with_credentials(self, url: str) -> str:
        return with_credentials(url, self.redis_username, self.redis_password)


@lru_cache
def get_settings() -> Settings:
    return Settings()
