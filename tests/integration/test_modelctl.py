"""`modelctl` (the console script, and `python -m modelctl`): train, list, activate,
publish with a card, show, roll versions out and write cards, against a local store and
against a real stack's bucket, telling its API through Redis.

Most calls run `modelctl.cli.main` in this process, with the call's environment, working
directory and captured stdout and stderr: a subprocess spends about half a second
importing the libraries before it does anything. Whatever needs a process of its own
runs in one: the installed console script, `python -m modelctl` (each command's --help),
the one-line warnings that go through logging (pytest holds the root logger), and the
browser opened through `webbrowser`, which reads BROWSER once per process."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from common.cards.publish import DrawnCard
from common.registry import Registry
from common.settings import get_settings
from common.store import LocalStore
from common.training import TrainedModel, breast_cancer
from dev.services import free_port, wait_until
from modelctl.cli import main
from tests.integration.stack import ADMIN_KEY, READER_KEY, ROOT, Stack

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "modelctl"
COMMANDS = {  # each subcommand, and options its --help must name
    "train-demo": ["--if-empty"],
    "list": ["--json"],
    "show": ["TYPE", "VERSION", "--json"],
    "activate": ["TYPE", "VERSION", "--default"],
    "publish": ["--artifact", "--metadata", "--eval-data", "--label-column", "--activate"],
    "alias": ["TYPE", "ALIAS", "VERSION", "--delete", "--json"],
    "traffic": ["VERSION=WEIGHT", "--clear", "--json"],
    "shadow": ["VERSION", "--fraction", "--clear", "--report", "-n N"],
    "card": ["TYPE", "VERSION", "--out", "--open", "--base-url"],
}
ANSI = re.compile(r"\x1b\[")


@dataclass
class Cli:
    """modelctl in `cwd` with `env`: `main()` in this process, or in a subprocess
    (`python -m modelctl`, or the installed script) where `process` is set."""

    env: dict[str, str]
    cwd: Path
    script: bool = False
    process: bool = False
    calls: list[list[str]] = field(default_factory=list)

    def result(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        separate = self.process or self.script
        done = self.in_subprocess(*args, **env) if separate else self.in_process(*args, **env)
        assert "Traceback" not in done.stderr, done.stderr
        assert not ANSI.search(done.stdout + done.stderr), "ANSI codes when not a terminal"
        return done

    def in_subprocess(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [str(SCRIPT)] if self.script else [sys.executable, "-m", "modelctl"]
        self.calls.append([*command, *args])
        return subprocess.run(
            [*command, *args],
            env=self.env | env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def in_process(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """As the subprocess would run: its environment alone, its directory, its exit
        status (argparse's SystemExit too); an exception main() lets out fails the test."""
        self.calls.append(["main", *args])
        out, err = io.StringIO(), io.StringIO()
        with (
            pytest.MonkeyPatch.context() as patch,
            contextlib.chdir(self.cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            for name in set(os.environ) - set(self.env | env):
                patch.delenv(name)
            for name, value in (self.env | env).items():
                patch.setenv(name, value)
            get_settings.cache_clear()  # read from this call's environment, as a process would
            try:
                code = main(list(args))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            finally:
                get_settings.cache_clear()
        return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())

    def __call__(self, *args: str, ok: bool = True, **env: str) -> str:
        done = self.result(*args, **env)
        assert (done.returncode == 0) is ok, done.stdout + done.stderr
        if not ok:
            assert done.returncode == 2, done.stdout + done.stderr
        return done.stdout + done.stderr

    def json(self, *args: str) -> Any:
        done = self.result(*args, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the tables rich printed, cell by cell."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.lstrip().startswith("│")
    ]


@pytest.fixture
def run(tmp_path: Path, redis_url: str) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env |= {
        "SERVING_LOCAL_STORE_PATH": str(tmp_path / "store"),
        "SERVING_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    return Cli(env, tmp_path)


@pytest.fixture
def run_process(run: Cli) -> Cli:
    """`python -m modelctl` in a subprocess, with `run`'s environment and directory."""
    return Cli(run.env, run.cwd, process=True)


@pytest.fixture
def demo_store(
    tmp_path: Path, demo_models: dict[str, TrainedModel], demo_cards: dict[str, DrawnCard]
) -> Registry:
    """The local store with what `train-demo` publishes (its own test runs it): both demo
    models with their cards, active, xgboost the default."""
    registry = Registry(LocalStore(tmp_path / "store"))
    for model_type, trained in demo_models.items():
        default = model_type == "xgboost"
        meta = registry.publish(
            trained.metadata, trained.artifact, activate=True, make_default=default
        )
        demo_cards[model_type].write(registry.store, meta)
    return registry


def write_published(tmp_path: Path, trained: TrainedModel, **fields: Any) -> tuple[str, str]:
    """The demo model as an engineer would bring it: an artifact and a metadata file."""
    (tmp_path / "model.bin").write_bytes(trained.artifact)
    metadata = {k: v for k, v in trained.metadata.items() if k != "metrics"} | fields
    (tmp_path / "meta.json").write_text(json.dumps(metadata))
    return str(tmp_path / "model.bin"), str(tmp_path / "meta.json")


def write_holdout(path: Path, trained: TrainedModel, label: str = "target") -> Path:
    """Its held-out rows as a labelled CSV: an id column, the features in reverse order,
    the class names."""
    _, _, names, classes = breast_cancer()
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", label, *reversed(names)])
        for i, (row, y) in enumerate(zip(trained.x_test, trained.y_test, strict=True)):
            writer.writerow([i, classes[y], *reversed([repr(float(v)) for v in row])])
    return path


def test_train_list_activate_publish_show(run: Cli, tmp_path: Path) -> None:
    out = run("train-demo")
    assert "published xgboost v1" in out and "published logistic_regression v1" in out
    assert "already holds models" in run("train-demo", "--if-empty")
    registry = Registry(LocalStore(tmp_path / "store"))
    meta = registry.metadata("xgboost", "1")
    assert meta.metrics["roc_auc"] > 0.95 and meta.metrics["accuracy"] > 0.9
    assert "xgboost/1/card/evaluation.json" in registry.store.list("xgboost/1/card/")

    artifact = tmp_path / "model.ubj"
    artifact.write_bytes(registry.store.get(meta.artifact_key))
    fields = meta.model_dump(
        mode="json", exclude={"version", "sha256", "created_at", "artifact_deleted_at"}
    )
    (tmp_path / "meta.json").write_text(json.dumps(fields))
    out = run("publish", "--artifact", str(artifact), "--metadata", str(tmp_path / "meta.json"))
    assert f"published xgboost v2 sha256={meta.sha256}" in out
    assert registry.state().active_by_type["xgboost"] == "1"
    assert registry.store.list("xgboost/2/card/") == []  # no --eval-data, no card

    assert "default model: xgboost v2" in run("activate", "xgboost", "2")
    rows = {(row[0], row[1]): row for row in table_rows(run("list"))}
    assert rows["xgboost", "2"][3] == "active, default"
    assert rows["xgboost", "1"][3] == "" and rows["logistic_regression", "1"][3] == "active"
    assert json.loads(run("show", "xgboost", "2"))["sha256"] == meta.sha256
    assert run.json("show", "xgboost", "2")["sha256"] == meta.sha256
    listed = run.json("list")
    assert [(r["model_type"], r["version"], r["marks"]) for r in listed] == [
        ("logistic_regression", "1", ["active"]),
        ("xgboost", "1", []),
        ("xgboost", "2", ["active", "default"]),
    ]


@pytest.mark.usefixtures("demo_store")
def test_errors_are_one_clear_line(run: Cli) -> None:
    assert "unknown model 'xgboost' version '9'" in run("activate", "xgboost", "9", ok=False)
    assert "invalid model type '../x'" in run("show", "../x", "1", ok=False)
    out = run("alias", "xgboost", "challenger", ok=False)  # neither a VERSION nor --delete
    assert "give the VERSION 'challenger' should point at, or --delete" in out
    out = run("traffic", "xgboost", "1=90", "9=10", ok=False)
    assert "unknown versions in the split: ['9']" in out
    assert "the weight must be a whole number" in run("traffic", "xgboost", "1=x", ok=False)
    assert "input should be less than or equal to 1" in run(
        "shadow", "xgboost", "1", "--fraction", "1.5", ok=False
    )
    assert "no prediction log at" in run("shadow", "xgboost", "--report", ok=False)
    assert "invalid choice: 'nope'" in run("nope", ok=False)
    assert run.result().returncode == 2  # no command at all


def test_bad_publish_inputs_are_refused_without_a_traceback(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "model.ubj").write_bytes(b"{}")
    model, bad = str(tmp_path / "model.ubj"), str(tmp_path / "bad.json")
    out = run("publish", "--artifact", model, "--metadata", bad, ok=False)
    assert out.startswith("error:") and "bad.json is not valid JSON" in out
    (tmp_path / "partial.json").write_text('{"model_type": "x"}')
    partial, missing = str(tmp_path / "partial.json"), str(tmp_path / "missing.ubj")
    out = run("publish", "--artifact", missing, "--metadata", partial, ok=False)
    assert out == f"error: No such file or directory: {missing}\n"
    out = run("publish", "--artifact", model, "--metadata", partial, ok=False)
    assert out.startswith("error: invalid metadata: framework: Field required;")
    assert len(out.strip().splitlines()) == 1


def test_the_console_script_runs_from_any_directory(run: Cli, tmp_path: Path) -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install --no-deps -e . (make venv)"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in run.env.items() if k != "PYTHONPATH"}
    script = Cli(env, elsewhere, script=True)
    assert script("--help").startswith("usage: modelctl [-h] COMMAND ...")
    assert "no models published" in script("list")
    assert "unknown model type 'xgboost'" in script("alias", "xgboost", ok=False)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_examples(run_process: Cli, command: str) -> None:
    out = run_process(command, "--help")
    assert out.startswith(f"usage: modelctl {command}")
    assert f"\nexamples:\n  modelctl {command}" in out
    for option in COMMANDS[command]:
        assert option in out, f"{command} --help does not name {option}"


def test_publish_evaluates_on_a_labelled_csv_first(
    run: Cli, tmp_path: Path, demo_models: dict[str, TrainedModel]
) -> None:
    trained = demo_models["logistic_regression"]
    model, meta_file = write_published(tmp_path, trained, model_type="lr")
    holdout = write_holdout(tmp_path / "holdout.csv", trained, label="diagnosis")
    out = run(
        "publish", "--artifact", model, "--metadata", meta_file, "--eval-data", str(holdout),
        "--label-column", "diagnosis", "--activate",
    )  # fmt: skip
    assert "published lr v1" in out
    assert f"with its card, on {len(trained.y_test)} held-out rows: accuracy=" in out
    for step in ["read ", "load the artifact", "evaluate on 143 rows", "upload to"]:
        assert f"lr: {step}" in out  # the steps, one line each when not on a terminal
    registry = Registry(LocalStore(tmp_path / "store"))
    meta = registry.metadata("lr", "1")
    card = json.loads(registry.store.get("lr/1/card/evaluation.json"))
    assert card["artifact_sha256"] == meta.sha256 and card["n_test"] == len(trained.y_test)
    files = ["roc", "pr", "confusion", "calibration", "importance", "evaluation"]
    assert sorted(registry.store.list("lr/1/card/")) == sorted(
        f"lr/1/card/{name}.{'json' if name == 'evaluation' else 'png'}" for name in files
    )
    # The metadata recorded no metrics: the held-out ones are recorded, as the card's.
    assert meta.metrics == card["metrics"] | {"n_test": float(len(trained.y_test))}
    expected = (trained.estimator.predict(trained.x_test) == trained.y_test).mean()
    assert meta.metrics["accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        (None, "No such file or directory: "),
        ("", "is empty: it needs a header row naming the features and the label column"),
        ("drop:mean radius", "lacks the feature columns ['mean radius'] (1 of the model's 30"),
        (
            "label:maybe",
            "unknown label 'maybe' in column 'target'; the model's classes are "
            "['malignant', 'benign']",
        ),
        ("header-only", "has a header but no rows to evaluate on"),
    ],
    ids=["no-file", "empty", "missing-feature", "unknown-label", "header-only"],
)
def test_a_bad_csv_publishes_nothing(
    run: Cli,
    tmp_path: Path,
    demo_models: dict[str, TrainedModel],
    csv_text: str | None,
    message: str,
) -> None:
    trained = demo_models["xgboost"]
    model, meta_file = write_published(tmp_path, trained)
    path = tmp_path / "holdout.csv"
    if csv_text is not None:
        with write_holdout(path, trained).open(newline="") as file:
            rows = list(csv.reader(file))
        kind, _, value = csv_text.partition(":")
        if kind == "drop":
            at = rows[0].index(value)
            rows = [row[:at] + row[at + 1 :] for row in rows]
        elif kind == "label":
            rows[5][1] = value
        elif kind == "header-only":
            rows = rows[:1]
        else:
            rows = []
        with path.open("w", newline="") as file:
            csv.writer(file).writerows(rows)
    args = ["publish", "--artifact", model, "--metadata", meta_file, "--eval-data", str(path)]
    out = run(*args, ok=False)
    assert out.splitlines()[-1].startswith("error: ") and message in out.splitlines()[-1]
    assert "published" not in out
    assert not (tmp_path / "store").exists() or LocalStore(tmp_path / "store").list() == []


def test_a_pickle_is_not_loaded_to_evaluate_it(
    run: Cli, tmp_path: Path, demo_models: dict[str, TrainedModel]
) -> None:
    trained = demo_models["logistic_regression"]
    model, meta_file = write_published(tmp_path, trained, artifact_format="pickle")
    Path(model).write_bytes(pickle.dumps(trained.estimator))
    holdout = str(write_holdout(tmp_path / "holdout.csv", trained))
    args = ["publish", "--artifact", model, "--metadata", meta_file, "--eval-data", holdout]
    out = run(*args, ok=False)
    assert "pickle artifact; loading it would run arbitrary code" in out
    assert "SERVING_ALLOW_UNSAFE_PICKLE" in out and "published" not in out
    assert not (tmp_path / "store").exists() or LocalStore(tmp_path / "store").list() == []


@pytest.mark.usefixtures("demo_store")
def test_an_unreachable_redis_is_a_warning_not_a_failure(run_process: Cli) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    out = run_process("activate", "xgboost", "1", SERVING_REDIS_URL=closed)
    assert "activated xgboost v1" in out
    assert "warning: could not notify API processes of the registry change" in out
    out = run_process("alias", "xgboost", "challenger", "1", SERVING_REDIS_URL=closed)
    assert "warning: could not notify API processes" in out
    assert ["1", "champion, challenger", "", ""] in table_rows(out)


@pytest.mark.usefixtures("demo_store")
def test_card_opens_in_the_browser(run_process: Cli, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(
        f"#!{sys.executable}\nimport pathlib, sys\n"
        f"pathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n"
    )
    browser.chmod(0o755)
    out = run_process("card", "xgboost", "1", "--open", BROWSER=str(browser))
    assert "wrote the card of xgboost v1 to xgboost-1-card.html" in out
    page = tmp_path / "xgboost-1-card.html"
    assert opened.read_text() == page.resolve().as_uri()
    assert page.read_text().startswith("<!DOCTYPE html>")


# --- against a running stack ------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("modelctl")


@pytest.fixture(scope="module")
def on_stack(
    cli_stack: Stack, tmp_path_factory: pytest.TempPathFactory, demo_models: dict[str, TrainedModel]
) -> Cli:
    """The CLI on the stack's bucket and Redis, with xgboost v2 published through it
    (the demo artifact again, with its card from the held-out rows)."""
    tmp = tmp_path_factory.mktemp("modelctl-on-stack")
    cli = Cli(cli_stack.env, tmp)
    trained = demo_models["xgboost"]
    model, meta_file = write_published(tmp, trained)
    holdout = str(write_holdout(tmp / "holdout.csv", trained))
    out = cli("publish", "--artifact", model, "--metadata", meta_file, "--eval-data", holdout)
    assert "published xgboost v2" in out and "with its card, on 143 held-out rows" in out
    return cli


def api_rollout(stack: Stack) -> dict[str, Any]:
    with stack.client(ADMIN_KEY) as client:
        response = client.get("/models/xgboost/rollout")
    assert response.status_code == 200, response.text
    return dict(response.json())


def api_sees(stack: Stack, what: str, check: Callable[[dict[str, Any]], bool]) -> None:
    # The API caches the registry for 60 s here: only the CLI's notification makes it look.
    wait_until(lambda: check(api_rollout(stack)), 20, f"the API seeing {what}")


def test_rollout_changes_reach_the_api(on_stack: Cli, cli_stack: Stack) -> None:
    out = on_stack("alias", "xgboost", "challenger", "2")
    assert ["2", "challenger", "", ""] in table_rows(out)
    api_sees(cli_stack, "the alias", lambda r: r["aliases"].get("challenger") == "2")
    out = on_stack("traffic", "xgboost", "1=90", "2=10")
    assert ["1", "champion", "90 (90%)", ""] in table_rows(out)
    api_sees(cli_stack, "the split", lambda r: r["traffic"] == {"1": 90, "2": 10})
    out = on_stack("shadow", "xgboost", "2", "--fraction", "0.2")
    assert ["2", "challenger", "10 (10%)", "20%"] in table_rows(out)
    api_sees(cli_stack, "the shadow", lambda r: r["shadow"] == {"version": "2", "fraction": 0.2})

    assert on_stack.json("alias", "xgboost") == api_rollout(cli_stack)
    listing = {(row[0], row[1]): row for row in table_rows(on_stack("list"))}
    assert listing["xgboost", "2"][4:7] == ["challenger", "10 (10%)", "20%"]
    assert listing["xgboost", "1"][3:7] == ["active, default", "", "90 (90%)", ""]

    on_stack("alias", "xgboost", "champion", "2")  # activates 2
    api_sees(cli_stack, "the activation", lambda r: r["aliases"]["champion"] == "2")
    on_stack("alias", "xgboost", "champion", "1")
    on_stack("alias", "xgboost", "challenger", "--delete")
    on_stack("traffic", "xgboost", "--clear")
    out = on_stack("shadow", "xgboost", "--clear")
    assert "no traffic split: requests go to the champion; no shadow" in out
    api_sees(
        cli_stack,
        "everything cleared",
        lambda r: (
            r["aliases"] == {"champion": "1"} and r["traffic"] is None and r["shadow"] is None
        ),
    )


def test_the_shadow_report_is_the_apis(on_stack: Cli, cli_stack: Stack) -> None:
    on_stack("activate", "xgboost", "1")
    on_stack("shadow", "xgboost", "2", "--fraction", "1")
    api_sees(cli_stack, "the shadow", lambda r: r["shadow"] == {"version": "2", "fraction": 1.0})
    x, _, names, _ = breast_cancer()
    with cli_stack.client(READER_KEY) as client:
        for i in range(5):
            row = dict(zip(names, map(float, x[i] + np.float64(1e-6) * i), strict=True))
            response = client.post("/predict/xgboost", json={"input_data": [row]})
            assert response.status_code == 200 and response.json()["version"] == "1"

    def api_report() -> dict[str, Any]:
        with cli_stack.client(ADMIN_KEY) as client:
            return dict(client.get("/models/xgboost/shadow/report", params={"n": 100}).json())

    wait_until(lambda: api_report()["requests"] == 5, 60, "five shadow rows beside theirs")
    report = on_stack.json("shadow", "xgboost", "--report", "-n", "100")
    assert report == api_report()
    assert report["label_agreement"] == 1.0  # v2 is v1's artifact again
    assert report["shadow_versions"] == ["2"] and report["primary_versions"] == ["1"]
    rows = {name: value for name, value in table_rows(on_stack("shadow", "xgboost", "--report"))}
    assert rows["shadow requests compared"] == "5" and rows["label agreement"] == "100.00%"
    on_stack("shadow", "xgboost", "--clear")


def test_card_writes_the_page_the_api_serves(on_stack: Cli, cli_stack: Stack) -> None:
    out = on_stack("card", "xgboost", "2", "--out", "card.html", "--base-url", cli_stack.url)
    assert "wrote the card of xgboost v2 to card.html" in out
    page = (on_stack.cwd / "card.html").read_text()
    with cli_stack.client() as client:
        assert page == client.get("/models/xgboost/2/card").text
    evaluation = json.loads(cli_stack.registry().store.get("xgboost/2/card/evaluation.json"))
    assert f'data-value="{evaluation["metrics"]["accuracy"]!r}"' in page
    assert page.count('<img class="plot"') == 5
    assert ADMIN_KEY not in page and READER_KEY not in page


def test_requests_reach_the_api_through_an_alias_set_by_the_cli(
    on_stack: Cli, cli_stack: Stack
) -> None:
    on_stack("alias", "xgboost", "canary", "2")
    _, _, names, _ = breast_cancer()
    row = dict.fromkeys(names, 1.0)
    with httpx.Client(base_url=cli_stack.url, headers={"X-API-Key": READER_KEY}) as client:
        response = client.post("/predict/xgboost/canary", json={"input_data": [row]})
    assert response.status_code == 200 and response.json()["version"] == "2"
    on_stack("alias", "xgboost", "canary", "--delete")
