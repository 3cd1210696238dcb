"""Prometheus metric definitions, shared by the API and the worker.

Both run several processes (uvicorn workers, Celery prefork children), so metrics use
prometheus-client's multiprocess mode: each launcher points PROMETHEUS_MULTIPROC_DIR at
a fresh directory before this module is imported (`common.observability`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
MODEL = ("model_type", "version")

# API
HTTP_REQUESTS = Counter(
    "serving_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "serving_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "serving_http_requests_in_flight",
    "HTTP requests being served",
    multiprocess_mode="livesum",
)
PREDICTIONS = Counter(
    "serving_predictions_total",
    "Prediction requests answered by the API",
    [*MODEL, "status"],
)
PREDICTION_ROWS = Counter("serving_prediction_rows_total", "Rows predicted for API requests", MODEL)
BATCH_SIZE = Histogram(
    "serving_batch_size_requests",
    "Requests sent to the workers together in one task",
    MODEL,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
PREDICTIONS_IN_FLIGHT = Gauge(
    "serving_predictions_in_flight",
    "Synchronous predictions waiting on the workers (bounded by max_in_flight_predictions)",
    multiprocess_mode="livesum",
)
PREDICTIONS_REJECTED = Counter(
    "serving_predictions_rejected_total",
    "Synchronous predictions refused with 429: max_in_flight_predictions were waiting",
    MODEL,
)
SHADOWS = Counter(
    "serving_shadow_requests_total",
    "Requests also sent to their type's shadow version, by the shadow (model_type, "
    "version) and whether the task was queued",
    [*MODEL, "result"],
)
CACHE_LOOKUPS = Counter(
    "serving_cache_lookups_total", "Prediction cache lookups", [*MODEL, "result"]
)
JOBS = Counter(
    "serving_jobs_total",
    "Jobs submitted (API) and ended (succeeded, failed: worker; cancelled: API)",
    ["status"],
)
JOBS_REJECTED = Counter(
    "serving_jobs_rejected_total",
    "Job submissions refused with 429: max_job_submissions_in_flight being read by the "
    "process (reason submissions_in_flight), or max_jobs_per_key unfinished (jobs_per_key)",
    ["reason"],
)
OFF_LOOP_VALIDATIONS = Counter(
    "serving_off_loop_validations_total",
    "Rows of request bodies over 1 MiB validated on a thread instead of the event loop",
)
LOG_QUEUE_ROWS = Gauge(
    "serving_log_queue_rows",
    "Cache-hit log rows waiting for the API's background writer (at most log_queue_max_rows)",
    multiprocess_mode="livesum",
)
LOG_QUEUE_WAITS = Counter(
    "serving_log_queue_waits_total",
    "Cache-hit log rows that found the API's log queue full and waited for room",
)
RESULT_MESSAGES_SKIPPED = Counter(
    "serving_result_messages_skipped_total",
    "Messages on the API's result subscription it could not use and skipped",
    ["reason"],
)
RESULT_LISTENER_RESTARTS = Counter(
    "serving_result_listener_restarts_total",
    "Times the API's result listener loop ended with an error and was started again",
)
# Queue depth and age are read from the broker when /metrics is scraped:
QUEUE_DEPTH = "serving_queue_depth"
QUEUE_OLDEST_AGE = "serving_queue_oldest_task_age_seconds"

# Worker
TASKS = Counter("serving_tasks_total", "Prediction tasks run by workers", [*MODEL, "status"])
TASK_DURATION = Histogram(
    "serving_task_duration_seconds",
    "Task run time in the worker",
    MODEL,
    buckets=LATENCY_BUCKETS,
)
TASK_QUEUE_WAIT = Histogram(
    "serving_task_queue_wait_seconds",
    "Time from the API's send to the task's start",
    MODEL,
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "serving_inference_duration_seconds",
    "Time inside the model's predict",
    MODEL,
    buckets=LATENCY_BUCKETS,
)
MODEL_LOADS = Counter("serving_model_loads_total", "Models loaded by worker processes", MODEL)
MODEL_LOAD_DURATION = Histogram(
    "serving_model_load_duration_seconds",
    "Time to fetch, verify and load a model",
    MODEL,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
MODELS_LOADED = Gauge(
    "serving_models_loaded",
    "Models held in worker processes' caches",
    multiprocess_mode="livesum",
)
TASK_FAILURES = Counter(
    "serving_task_failures_total", "Failed prediction tasks", [*MODEL, "error_type"]
)

# Prediction log spool: rows the database refused, kept in Redis until it takes them.
LOG_BACKLOG = Gauge(
    "serving_log_backlog_rows",
    "Prediction log rows in the spool, waiting for the database to accept them",
    multiprocess_mode="mostrecent",
)
LOG_SPOOLED = Counter(
    "serving_log_spooled_rows_total", "Prediction log rows the database refused, spooled"
)
LOG_PURGED = Counter(
    "serving_log_purged_rows_total", "Prediction log rows deleted past the retention"
)

# Jobs: the sweeper's work.
JOBS_SWEPT = Counter(
    "serving_jobs_swept_total", "Jobs the sweeper ended or settled", ["outcome"]
)
