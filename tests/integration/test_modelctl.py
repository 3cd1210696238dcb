"""`python -m modelctl`: train, list, activate, publish and show, against a local store,
telling a running API through Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.registry import Registry
from common.store import LocalStore
from tests.integration.stack import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def run(tmp_path: Path, redis_url: str):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env |= {
        "SERVING_LOCAL_STORE_PATH": str(tmp_path / "store"),
        "SERVING_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }

    def modelctl(*args: str, ok: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "modelctl", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (done.returncode == 0) is ok, done.stdout + done.stderr
        return done.stdout + done.stderr

    return modelctl


def test_train_list_activate_publish_show(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run("train-demo")
    assert "published xgboost v1" in out and "published logistic_regression v1" in out
    assert "already holds models" in run("train-demo", "--if-empty")
    registry = Registry(LocalStore(tmp_path / "store"))
    meta = registry.metadata("xgboost", "1")
    assert meta.metrics["roc_auc"] > 0.95 and meta.metrics["accuracy"] > 0.9

    artifact = tmp_path / "model.ubj"
    artifact.write_bytes(registry.store.get(meta.artifact_key))
    fields = meta.model_dump(
        mode="json", exclude={"version", "sha256", "created_at", "artifact_deleted_at"}
    )
    (tmp_path / "meta.json").write_text(json.dumps(fields))
    out = run("publish", "--artifact", str(artifact), "--metadata", str(tmp_path / "meta.json"))
    assert f"published xgboost v2 sha256={meta.sha256}" in out
    assert registry.state().active_by_type["xgboost"] == "1"

    assert "default model: xgboost v2" in run("activate", "xgboost", "2")
    listing = run("list")
    line = next(row for row in listing.splitlines() if row.startswith("xgboost\t2"))
    assert "active,default" in line
    assert json.loads(run("show", "xgboost", "2"))["sha256"] == meta.sha256


def test_errors_are_one_clear_line(run) -> None:  # type: ignore[no-untyped-def]
    run("train-demo")
    assert "unknown model 'xgboost' version '9'" in run("activate", "xgboost", "9", ok=False)
    assert "invalid model type '../x'" in run("show", "../x", "1", ok=False)


def test_bad_publish_inputs_are_refused_without_a_traceback(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "model.ubj").write_bytes(b"{}")
    out = run(
        "publish",
        "--artifact",
        str(tmp_path / "model.ubj"),
        "--metadata",
        str(tmp_path / "bad.json"),
        ok=False,
    )
    assert out.startswith("error:") and "Traceback" not in out
    out = run(
        "publish",
        "--artifact",
        str(tmp_path / "missing.ubj"),
        "--metadata",
        str(tmp_path / "bad.json"),
        ok=False,
    )
    assert out.startswith("error:") and "Traceback" not in out
    (tmp_path / "partial.json").write_text('{"model_type": "x"}')
    out = run(
        "publish",
        "--artifact",
        str(tmp_path / "model.ubj"),
        "--metadata",
        str(tmp_path / "partial.json"),
        ok=False,
    )
    assert "invalid metadata" in out and "Traceback" not in out
