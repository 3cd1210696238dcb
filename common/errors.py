"""The one error hierarchy. Each error knows its HTTP status; the API turns it into JSON."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class ServingError(Exception):
    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    type: ClassVar[str] = "serving_error"

    def __init__(self, message: str, details: Any = None) -> None:
        # args stay JSON-friendly so Celery can carry the error from worker to API.
        super().__init__(message, details)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body

    def headers(self) -> dict[str, str]:
        """HTTP headers the response carries besides the JSON body."""
        return {}


class InvalidInput(ServingError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    type = "invalid_input"


class MalformedBody(ServingError):
    status = HTTPStatus.BAD_REQUEST
    type = "malformed_body"


class BodyTooLarge(ServingError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    type = "body_too_large"


class UnsupportedMediaType(ServingError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    type = "unsupported_media_type"


class ModelNotFound(ServingError):
    status = HTTPStatus.NOT_FOUND
    type = "model_not_found"


class JobNotFound(ServingError):
    status = HTTPStatus.NOT_FOUND
    type = "job_not_found"


class UploadNotFound(ServingError):
    """No upload by that name under the caller's key (or it names no upload at all)."""

    status = HTTPStatus.NOT_FOUND
    type = "upload_not_found"


class JobConflict(ServingError):
    status = HTTPStatus.CONFLICT
    type = "job_conflict"


class InvalidModelName(ServingError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    type = "invalid_model_name"


class ModelUnavailable(ServingError):
    """The model is known but cannot serve: artifact deleted or missing."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "model_unavailable"


class ArtifactRejected(ServingError):
    """The artifact failed a safety check (checksum, format, untrusted types).

    503, not 4xx: the caller's request is fine; the model cannot serve until republished."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "artifact_rejected"


class PublishError(ServingError):
    status = HTTPStatus.BAD_REQUEST
    type = "publish_error"


class NotAuthenticated(ServingError):
    status = HTTPStatus.UNAUTHORIZED
    type = "not_authenticated"


class Forbidden(ServingError):
    status = HTTPStatus.FORBIDDEN
    type = "forbidden"


class PredictionTimeout(ServingError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    type = "prediction_timeout"


class PredictionTimeLimit(ServingError):
    """The model ran past the worker's task time limit and was stopped. Unlike
    PredictionTimeout (no answer yet, the task may still finish), the task is over."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    type = "time_limit_exceeded"

    @classmethod
    def after(cls, seconds: float, hard: bool) -> PredictionTimeLimit:
        if hard:
            message = f"the prediction ran past the hard time limit of {seconds:g} s; its "
            message += "worker process was killed"
        else:
            message = f"the prediction ran past the time limit of {seconds:g} s and was stopped"
        return cls(message, {"time_limit_seconds": seconds, "limit": "hard" if hard else "soft"})


class PredictionDeferred(ServingError):
    """Not an error for the caller: the answer will be a job to poll (202)."""

    status = HTTPStatus.ACCEPTED
    type = "prediction_deferred"


class WorkerCrashed(ServingError):
    """The task's run ended its worker process every time it was tried."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "worker_crashed"


class CallbackFailed(ServingError):
    """A job's callback URL did not take the delivery (retried; never fails the job)."""

    status = HTTPStatus.BAD_GATEWAY
    type = "callback_failed"


class CallbackRefused(InvalidInput):
    """A callback URL whose host is, or resolves to, an address callbacks may not go to
    (loopback, private, ...): 422 at submission; at delivery given up, never retried."""

    type = "callback_refused"


class TooManyRequests(ServingError):
    """This API process already has its limit of synchronous predictions waiting on the
    workers: refused at once, with `Retry-After`, instead of queueing without bound."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    type = "overloaded"

    @classmethod
    def at_limit(cls, limit: int, retry_after: int) -> TooManyRequests:
        return cls(
            f"the server already has {limit} predictions waiting, its limit; "
            f"retry in {retry_after} s, or send `Prefer: respond-async` for a job",
            {"max_in_flight_predictions": limit, "retry_after_seconds": retry_after},
        )

    @classmethod
    def submissions_at_limit(cls, limit: int, retry_after: int) -> TooManyRequests:
        return cls(
            f"the server is already reading {limit} job submissions, its limit; "
            f"retry in {retry_after} s",
            {"max_job_submissions_in_flight": limit, "retry_after_seconds": retry_after},
        )

    def headers(self) -> dict[str, str]:
        details = self.details if isinstance(self.details, dict) else {}
        seconds = details.get("retry_after_seconds")
        return {"Retry-After": str(seconds if isinstance(seconds, int) else 1)}


class TooManyJobs(TooManyRequests):
    """The caller's key already has its limit of jobs queued or running: refused until
    one of them ends, so one key cannot fill the queues for every other."""

    type = "too_many_jobs"

    @classmethod
    def for_key(cls, limit: int, active: int, retry_after: int) -> TooManyJobs:
        return cls(
            f"this key already has {active} jobs queued or running; the limit is {limit} "
            f"per key (max_jobs_per_key): retry in {retry_after} s, once one has ended",
            {"max_jobs_per_key": limit, "active_jobs": active, "retry_after_seconds": retry_after},
        )


class BackendUnavailable(ServingError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "backend_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}  # Redis restarts take seconds; retry soon


class StoreUnavailable(ServingError):
    """The model store (S3 or the local folder) failed a read or a write."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class JobStalled(ServingError):
    """A job made no progress for `job_stall_seconds`; the sweeper ended it."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    type = "job_stalled"


class PredictionFailed(ServingError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    type = "prediction_failed"


_BY_NAME: dict[str, type[ServingError]] = {}


def _collect(cls: type[ServingError]) -> None:
    _BY_NAME[cls.__name__] = cls
    for sub in cls.__subclasses__():
        _collect(sub)


_collect(ServingError)

# Raised by Celery's pool (billiard) when a task runs too long: name -> is the hard limit.
_TIME_LIMITS = {"TimeLimitExceeded": True, "SoftTimeLimitExceeded": False}
_TIME_LIMIT_MODULES = {"billiard.exceptions", "celery.exceptions"}


def from_task_failure(
    exc_type: str, exc_message: Any, exc_module: str | None = None
) -> ServingError:
    """Rebuild a domain error from the fields Celery stores for a failed task."""
    cls = _BY_NAME.get(exc_type) if exc_module in {None, __name__} else None
    args = exc_message if isinstance(exc_message, list | tuple) else [exc_message]
    if exc_type in _TIME_LIMITS and exc_module in _TIME_LIMIT_MODULES:
        # Celery's own time-limit errors: the hard one carries the limit in seconds.
        seconds = args[0] if args and isinstance(args[0], int | float) else None
        if seconds is None:
            return PredictionTimeLimit("the prediction ran past the task time limit")
        return PredictionTimeLimit.after(float(seconds), hard=_TIME_LIMITS[exc_type])
    if cls is None:
        # Never leak foreign exception text or tracebacks to clients.
        return PredictionFailed(f"the worker failed with {exc_type}")
    message = str(args[0]) if args else cls.type
    details = args[1] if len(args) > 1 else None
    return cls(message, details)
