"""The whole stack on the local store backend (`SERVING_STORE_BACKEND=local`, the
default outside the tests): models, CSV inputs and results objects in a folder that the
API and the workers share. Every other stack of the suite uses S3."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest

from common.settings import Settings
from common.store import create_store
from common.training import TrainedModel, breast_cancer
from tests.integration.stack import Stack
from tests.integration.test_jobs import assert_results_match, csv_bytes, rows, run_object_job
from tests.integration.uploads import results_key, upload_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-store")


@pytest.fixture(scope="module")
def local(make_stack: Callable[..., Stack], folder: Path) -> Stack:
    # make_stack publishes the demo models through the stack's own settings: with these,
    # into the folder (Registry(LocalStore(folder)), as Stack.publish_demo builds it).
    return make_stack("localstore", store_backend="local", local_store_path=str(folder))


def test_the_models_are_read_from_the_folder_and_not_from_s3(local: Stack, folder: Path) -> None:
    published = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        "registry.json",
        "xgboost/1/metadata.json",
        "xgboost/1/model.ubj",
        "logistic_regression/1/metadata.json",
        "logistic_regression/1/model.skops",
    } <= published
    # The stack's S3 bucket exists (make_stack creates one for every stack) and is empty.
    s3 = create_store(Settings(**(local.fields | {"store_backend": "s3"})))
    assert s3.list() == []
    with local.client() as client:
        models = client.get("/models")
    assert models.status_code == 200, models.text
    assert {m["model_type"] for m in models.json()["models"]} == {"xgboost", "logistic_regression"}


@pytest.mark.parametrize("model_type", ["xgboost", "logistic_regression"])
def test_a_prediction_equals_the_in_process_models(
    local: Stack, demo_models: dict[str, TrainedModel], model_type: str
) -> None:
    x, data = rows(8, 0.1301)
    with local.client() as client:
        response = client.post(f"/predict/{model_type}/1", json={"input_data": data})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_type"], body["version"], body["cached"]) == (model_type, "1", False)
    trained = demo_models[model_type]
    classes = trained.metadata["classes"]
    got = np.array([[p["probabilities"][c] for c in classes] for p in body["predictions"]])
    np.testing.assert_allclose(got, trained.estimator.predict_proba(x), rtol=1e-6)
    assert [p["label"] for p in body["predictions"]] == [
        classes[i] for i in trained.estimator.predict(x)
    ]


def test_an_uploaded_csv_in_the_folder_is_scored_into_a_results_file_under_the_jobs_id(
    local: Stack, folder: Path, demo_models: dict[str, TrainedModel]
) -> None:
    n = 7_000  # two chunks of SERVING_JOB_CHUNK_ROWS (5,000)
    x, _ = rows(n, 0.1401)
    _, _, names, _ = breast_cancer()
    (folder / upload_key("batch.csv")).parent.mkdir(parents=True, exist_ok=True)
    (folder / upload_key("batch.csv")).write_bytes(csv_bytes(x, names))
    with local.client() as client:
        done = run_object_job(client, "batch.csv")
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"rows_done": n, "rows_total": n}
    written = folder / "results" / f"{done['job_id']}.csv"
    assert done["output_object"] == results_key(done["job_id"])
    location = urlparse(done["output_location"])
    assert location.scheme == "file"
    assert Path(url2pathname(location.path)) == written.resolve()
    assert_results_match(written.read_text(), x, demo_models["xgboost"])
