"""The MLServer peer of `make bench`: its Open Inference Protocol body template, the
model repository it writes, its environment, its batch counts, the venv's pins, and the
check that it serves the bare app's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import mlserver_env, mlserver_peer, sync_points
from bench.loadgen import BodyTemplate
from bench.stack import Servers
from bench.sync_options import parse_args
from bench.sync_predict import needed_services

ROW = {"mean radius": 17.99, "mean texture": 10.38, "mean area": 1001.0}
PORTS = mlserver_peer.Ports(http=18080, grpc=18081, metrics=18082)


def tensor(body: bytes) -> dict[str, Any]:
    document = json.loads(body)
    assert document["outputs"] == [{"name": "predict_proba"}]
    [only] = document["inputs"]
    return dict(only)


def test_the_tensor_template_holds_the_row_in_order_with_one_value_open() -> None:
    template = mlserver_peer.body_template(ROW, "mean texture")

    plain = tensor(template.render())
    assert plain == {
        "name": "input-0",
        "shape": [1, 3],
        "datatype": "FP64",
        "data": [17.99, 10.38, 1001.0],
    }
    seventh = tensor(template.render(7))["data"]
    assert seventh[0] == 17.99 and seventh[2] == 1001.0
    assert seventh[1] == pytest.approx(10.38 + 7e-9, abs=1e-15)
    assert seventh[1] != 10.38
    assert template.render(7) != template.render(8)
    # Survives the trip to a generator process (ProcessSpec carries it as a dict).
    assert BodyTemplate(parts=template.parts, bases=template.bases).render(3) == template.render(3)


def test_model_settings_name_the_runtime_batching_and_the_file() -> None:
    settings = mlserver_peer.model_settings("xgboost-ubj", "3")

    assert settings == {
        "name": "demo-xgboost",
        "implementation": "mlserver_xgboost.XGBoostModel",
        "max_batch_size": 64,
        "max_batch_time": 0.005,
        "parameters": {"uri": "./model.ubj", "version": "3"},
    }
    assert mlserver_peer.model_settings("xgboost-json", "1")["parameters"]["uri"] == "./model.json"
    with pytest.raises(ValueError, match="not 'skops'"):
        mlserver_peer.model_settings("skops", "1")


def test_the_repository_holds_both_settings_files_and_the_artifact_as_it_is(
    tmp_path: Path,
) -> None:
    artifact = ("xgboost-ubj", "2", b"{UBJ")
    root = mlserver_peer.write_repository(tmp_path / "repo", artifact, PORTS, 1)

    server = json.loads((root / "settings.json").read_text())
    assert server == {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": 18080,
        "grpc_port": 18081,
        "metrics_port": 18082,
        "parallel_workers": 1,
        "metrics_dir": str(root / "metrics"),
        "environments_dir": str(root / "envs"),
    }
    model = json.loads((root / "demo-xgboost" / "model-settings.json").read_text())
    assert model["parameters"] == {"uri": "./model.ubj", "version": "2"}
    assert (root / "demo-xgboost" / "model.ubj").read_bytes() == b"{UBJ"
    assert mlserver_peer.target(PORTS).path == "/v2/models/demo-xgboost/infer"


def test_its_environment_drops_what_would_reconfigure_it() -> None:
    env = mlserver_peer.mlserver_env(
        {
            "PATH": "/usr/bin",
            "SERVING_REDIS_URL": "redis://elsewhere",
            "MLSERVER_HTTP_PORT": "8080",
            "PYTHONPATH": "/work/main",
            "VIRTUAL_ENV": "/work/main/.venv",
        }
    )

    assert env == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1"}


INFER = 'app_name="mlserver",method="POST",path="/v2/models/{model_name}/infer"'
READY = 'app_name="mlserver",method="GET",path="/v2/health/ready"'
METRICS = f"""\
# TYPE rest_server_requests_total counter
rest_server_requests_total{{{INFER},status_code="200"}} 200.0
rest_server_requests_total{{{INFER},status_code="400"}} 4.0
rest_server_requests_total{{{READY},status_code="200"}} 9.0
# TYPE parallel_request_queue histogram
parallel_request_queue_bucket{{le="+Inf"}} 29.0
parallel_request_queue_count 29.0
parallel_request_queue_sum 31.0
"""


def test_batch_counts_are_infer_requests_and_messages_to_the_workers() -> None:
    assert mlserver_peer.batch_counts(METRICS) == (204.0, 29.0)
    # parallel_workers 0: no messages, so no mean batch
    no_workers = METRICS.split("# TYPE parallel")[0]
    assert mlserver_peer.batch_counts(no_workers) == (204.0, 0.0)
    assert sync_points.mean_batch((4.0, 1.0), (204.0, 5.0)) == 50.0
    assert sync_points.mean_batch((4.0, 1.0), (204.0, 1.0)) is None


def test_probabilities_come_from_the_one_row_predict_proba_output() -> None:
    answer = {"outputs": [{"name": "predict_proba", "shape": [1, 2], "data": [0.25, 0.75]}]}
    assert mlserver_peer.probabilities(answer) == [0.25, 0.75]
    with pytest.raises(RuntimeError, match="no one-row predict_proba"):
        mlserver_peer.probabilities({"outputs": [{"name": "predict", "shape": [1], "data": [1]}]})


def servers() -> Servers:
    targets = {"bare": mlserver_peer.target(PORTS), "mlserver": mlserver_peer.target(PORTS)}
    return Servers(targets=targets, pids={}, redis_url="redis://unused")


def fake_answers(monkeypatch: pytest.MonkeyPatch, peer: list[float]) -> None:
    def call_json(target: Any, path: str | None = None, body: bytes | None = None) -> Any:
        assert body is not None
        if b'"inputs"' in body:
            return {"outputs": [{"name": "predict_proba", "shape": [1, 2], "data": peer}]}
        return {"labels": ["malignant"], "probabilities": [[0.97749203, 0.02250797]]}

    monkeypatch.setattr(sync_points, "call_json", call_json)


def test_the_peer_must_serve_the_bare_apps_model(monkeypatch: pytest.MonkeyPatch) -> None:
    templates = sync_points.body_templates([ROW])
    fake_answers(monkeypatch, [0.977492034, 0.022507966])  # float32 rounding: the same
    sync_points.check_same_model(servers(), templates)

    fake_answers(monkeypatch, [0.5, 0.5])
    with pytest.raises(RuntimeError, match="not the same model"):
        sync_points.check_same_model(servers(), templates)


def test_the_mlserver_scenario_brings_its_baseline_and_only_its_server() -> None:
    options = parse_args(["--scenarios", "mlserver", "--mlserver-workers", "0"], None)

    chosen = [(s.key, s.body) for s in options.scenarios]
    assert chosen == [("bare", "predict"), ("mlserver", "oip")]
    assert needed_services(options.scenarios) == ["bare", "mlserver"]
    assert options.mlserver_workers == 0
    with pytest.raises(SystemExit):
        parse_args(["--mlserver-workers", "-1"], None)


def test_the_venv_pins_mlserver_uvloop_and_this_venvs_model_libraries() -> None:
    pins = mlserver_env.requirements()

    assert "mlserver==1.7.1" in pins and "mlserver-sklearn==1.7.1" in pins
    assert "uvloop==0.21.0" in pins  # 0.23: "There is no current event loop" in its workers
    assert mlserver_env.ours("scikit-learn") in pins
    assert mlserver_env.ours("xgboost-cpu", "xgboost") in pins
    assert mlserver_env.NO_DEPS == ("mlserver-xgboost==1.7.1",)
    with pytest.raises(RuntimeError, match="none of"):
        mlserver_env.ours("no-such-distribution-here")


def test_the_stamp_follows_the_pins_not_their_order(tmp_path: Path) -> None:
    assert mlserver_env.stamp_name(("a==1", "b==2")) == mlserver_env.stamp_name(("b==2", "a==1"))
    assert mlserver_env.stamp_name(("a==1", "b==2")) != mlserver_env.stamp_name(("a==1", "b==3"))
    # A finished build (its stamp there) is used as it is: nothing is installed.
    venv = mlserver_env.venv_dir(tmp_path)
    venv.mkdir(parents=True)
    (venv / mlserver_env.stamp_name(mlserver_env.requirements() + mlserver_env.NO_DEPS)).touch()
    assert mlserver_env.ensure_mlserver(tmp_path) == venv / "bin" / "mlserver"
    assert sorted(p.name for p in venv.iterdir()) == [
        mlserver_env.stamp_name(mlserver_env.requirements() + mlserver_env.NO_DEPS)
    ]
