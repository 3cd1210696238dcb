"""Errors: statuses, JSON bodies, and rebuilding a domain error from a failed Celery task."""

from __future__ import annotations

import json
import pickle
from http import HTTPStatus

import pytest

from common import errors
from common.errors import PredictionFailed, ServingError, from_task_failure


def all_error_classes() -> list[type[ServingError]]:
    found: list[type[ServingError]] = []
    pending = [ServingError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


ERROR_CLASSES = all_error_classes()
ERROR_IDS = [cls.__name__ for cls in ERROR_CLASSES]


def test_every_error_class_of_the_module_is_covered() -> None:
    defined = {
        name for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, ServingError)
    }
    assert defined == set(ERROR_IDS)
    assert len(defined) >= 15


def test_every_error_type_is_unique() -> None:
    types = [cls.type for cls in ERROR_CLASSES]
    assert len(types) == len(set(types))


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("InvalidInput", 422), ("MalformedBody", 400), ("BodyTooLarge", 413),
        ("UnsupportedMediaType", 415), ("ModelNotFound", 404), ("InvalidModelName", 422),
        ("ModelUnavailable", 503), ("ArtifactRejected", 503), ("PublishError", 400),
        ("NotAuthenticated", 401), ("Forbidden", 403), ("PredictionTimeout", 504),
        ("BackendUnavailable", 503), ("PredictionFailed", 500), ("ServingError", 500),
        ("TooManyRequests", 429),
    ],
)
def test_http_status_of_each_error(name: str, status: int) -> None:
    assert getattr(errors, name).status == HTTPStatus(status)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=ERROR_IDS)
def test_from_task_failure_rebuilds_class_message_and_details(cls: type[ServingError]) -> None:
    details = {"feature": "alpha", "rows": [1, 2]}

    rebuilt = from_task_failure(cls.__name__, ["something went wrong", details])

    assert type(rebuilt) is cls
    assert rebuilt.message == "something went wrong"
    assert rebuilt.details == details
    assert str(rebuilt) == "something went wrong"
    assert rebuilt.to_dict() == {"type": cls.type, "message": "something went wrong",
                                 "details": details}


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=ERROR_IDS)
def test_round_trip_through_celery_json_args(cls: type[ServingError]) -> None:
    original = cls("the message", [{"feature": "beta", "problem": "missing"}])
    # Celery's JSON result backend stores type(exc).__name__ and the args as a list.
    exc_message = json.loads(json.dumps(original.args))

    rebuilt = from_task_failure(type(original).__name__, exc_message)

    assert type(rebuilt) is cls
    assert rebuilt.to_dict() == original.to_dict()


def test_from_task_failure_accepts_a_tuple_and_a_bare_string() -> None:
    from_tuple = from_task_failure("ModelNotFound", ("no such model", None))
    from_string = from_task_failure("InvalidInput", "bad row")

    assert type(from_tuple) is errors.ModelNotFound
    assert from_tuple.message == "no such model"
    assert from_tuple.details is None
    assert type(from_string) is errors.InvalidInput
    assert from_string.message == "bad row"
    assert from_string.details is None


def test_from_task_failure_with_only_a_message_has_no_details() -> None:
    rebuilt = from_task_failure("PredictionTimeout", ["took too long"])

    assert rebuilt.details is None
    assert rebuilt.to_dict() == {"type": "prediction_timeout", "message": "took too long"}


def test_from_task_failure_with_no_args_uses_the_type_as_message() -> None:
    rebuilt = from_task_failure("BackendUnavailable", [])

    assert type(rebuilt) is errors.BackendUnavailable
    assert rebuilt.message == "backend_unavailable"


@pytest.mark.parametrize(
    "exc_type", ["KeyError", "OperationalError", "XGBoostError", "WorkerLostError", ""]
)
def test_unknown_exception_type_gives_prediction_failed_without_its_message(
    exc_type: str,
) -> None:
    secret = "password=hunter2 at /srv/secret/path.py line 12"

    rebuilt = from_task_failure(exc_type, [secret, {"trace": secret}])

    assert type(rebuilt) is PredictionFailed
    assert "hunter2" not in rebuilt.message
    assert "/srv/secret" not in rebuilt.message
    assert rebuilt.details is None
    assert rebuilt.message == f"the worker failed with {exc_type}"
    assert int(rebuilt.status) == 500


def test_base_exception_names_are_not_mistaken_for_domain_errors() -> None:
    for name in ["Exception", "ValueError", "BaseException"]:
        assert type(from_task_failure(name, ["x"])) is PredictionFailed


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=ERROR_IDS)
def test_errors_survive_pickling_with_message_and_details(cls: type[ServingError]) -> None:
    # Celery's pickle paths and multiprocessing rebuild exceptions from args.
    original = cls("msg", {"k": 1})

    copy = pickle.loads(pickle.dumps(original))

    assert type(copy) is cls
    assert copy.message == "msg"
    assert copy.details == {"k": 1}


def test_to_dict_omits_absent_details() -> None:
    assert errors.Forbidden("admin key needed").to_dict() == {
        "type": "forbidden", "message": "admin key needed",
    }


def test_a_foreign_exception_with_a_domain_name_is_not_trusted() -> None:
    rebuilt = from_task_failure("Forbidden", ["secret internals"], "somelib.http")
    assert type(rebuilt) is PredictionFailed
    assert "secret internals" not in rebuilt.message
    ours = from_task_failure("Forbidden", ["no"], "common.errors")
    assert type(ours) is errors.Forbidden and ours.message == "no"


@pytest.mark.parametrize("module", ["billiard.exceptions", "celery.exceptions"])
def test_celery_time_limits_become_a_504_naming_the_limit(module: str) -> None:
    hard = from_task_failure("TimeLimitExceeded", [4.0], module)
    soft = from_task_failure("SoftTimeLimitExceeded", ["SoftTimeLimitExceeded(True,)"], module)

    assert type(hard) is errors.PredictionTimeLimit and int(hard.status) == 504
    assert hard.to_dict() == {
        "type": "time_limit_exceeded",
        "message": "the prediction ran past the hard time limit of 4 s; its worker process "
        "was killed",
        "details": {"time_limit_seconds": 4.0, "limit": "hard"},
    }
    assert type(soft) is errors.PredictionTimeLimit
    assert soft.message == "the prediction ran past the task time limit"
    assert from_task_failure("TimeLimitExceeded", [4.0], "somelib").type == "prediction_failed"
