"""Dockerfile.api, Dockerfile.worker and .dockerignore, read as text (no Docker engine).

Besides the files themselves, the code each image copies is imported in a subprocess to
show it runs with that image's requirements only: the API's imports need no ML library,
and neither image's code reaches into a package the other image holds.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
API_DOCKERFILE = ROOT / "Dockerfile.api"
WORKER_DOCKERFILE = ROOT / "Dockerfile.worker"

ML_LIBRARIES = {
    "numpy",
    "scipy",
    "scikit-learn",
    "sklearn",
    "xgboost",
    "xgboost-cpu",
    "skops",
    "pandas",
    "matplotlib",  # model cards are drawn at publication, on the worker side
}
PROJECT_PACKAGES = {"api", "common", "queueing", "worker", "modelctl", "dev", "bench", "tests"}
BASE_IMAGE = re.compile(r"^python:3\.13(\.\d+)?-slim-(bookworm|trixie)$")
APP_UID = "10001"

Instruction = tuple[str, str]


def parse_dockerfile(path: Path) -> list[Instruction]:
    """(KEYWORD, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker ignores comment lines inside a continuation too
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            found.append([])
        assert found, "the first instruction must be FROM (or ARG)"
        found[-1].append((keyword, args))
    return found


def final_stage(path: Path) -> list[Instruction]:
    return stages(parse_dockerfile(path))[-1]


def args_of(instructions: list[Instruction], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of(instructions, "ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"use ENV KEY=value, not the legacy form: {args!r}"
            env[key] = value
    return env


def copy_sources(instructions: list[Instruction]) -> set[str]:
    """Sources of COPY/ADD from the build context (not --from another stage)."""
    sources: set[str] = set()
    for keyword, args in instructions:
        if keyword not in {"COPY", "ADD"}:
            continue
        tokens = shlex.split(args)
        if any(token.startswith("--from") for token in tokens):
            continue
        paths = [token for token in tokens if not token.startswith("--")]
        sources |= {path.rstrip("/") for path in paths[:-1]}
    return sources


def pip_requirement_files(instructions: list[Instruction]) -> list[str]:
    """Every `pip install` must be `--no-cache-dir -r FILE`: no loose package names."""
    files: list[str] = []
    for args in args_of(instructions, "RUN"):
        for command in re.split(r"&&|;", args):
            tokens = shlex.split(command)
            if "pip" not in " ".join(tokens[:3]) or "install" not in tokens:
                continue
            assert "--no-cache-dir" in tokens, command
            rest = tokens[tokens.index("install") + 1 :]
            loose = []
            while rest:
                token = rest.pop(0)
                if token in {"-r", "--requirement"}:
                    files.append(Path(rest.pop(0)).name)
                elif not token.startswith("-"):
                    loose.append(token)
            assert not loose, f"pip installs packages outside a requirements file: {loose}"
    return files


def requirement_names(path: Path) -> set[str]:
    names: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r", "--requirement")):
            names |= requirement_names(path.parent / line.split(maxsplit=1)[1])
            continue
        assert not line.startswith("-"), f"{path.name}: unexpected option {line!r}"
        names.add(canonicalize_name(Requirement(line).name))
    return names


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args!r}"
    return value


# --- the images --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_every_stage_is_a_pinned_python_313_slim_image(path: Path) -> None:
    images = []
    for args in args_of(parse_dockerfile(path), "FROM"):
        tokens = [token for token in args.split() if not token.startswith("--platform")]
        images.append(tokens[0])
    assert images, f"{path.name} has no FROM"
    for image in images:
        assert BASE_IMAGE.match(image), f"{path.name}: {image} is not a python:3.13-slim-<debian>"


@pytest.mark.parametrize("path", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_runs_as_the_fixed_non_root_user(path: Path) -> None:
    stage = final_stage(path)
    keywords = [keyword for keyword, _ in stage]
    users = args_of(stage, "USER")
    assert users, f"{path.name} sets no USER"
    last_user = max(i for i, keyword in enumerate(keywords) if keyword == "USER")
    assert last_user < keywords.index("CMD"), "USER must come before CMD"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}
    # The same UID in both images: the API and the workers write one SQLite volume.
    assert user == APP_UID, f"{path.name}: USER {users[-1]}, expected the numeric UID {APP_UID}"
    created = " ".join(args_of(stage, "RUN"))
    assert f"--uid {APP_UID}" in created and f"--gid {APP_UID}" in created
    assert "chown serving:serving /data" in created  # the volume's mount point, writable


def test_api_healthcheck_uses_python_urllib() -> None:
    (healthcheck,) = args_of(final_stage(API_DOCKERFILE), "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request.urlopen(" in argv[2] and "http://127.0.0.1:8000/healthz" in argv[2]
    assert "curl" not in healthcheck and "wget" not in healthcheck  # not in slim images


def test_worker_healthcheck_pings_through_its_own_queue() -> None:
    (healthcheck,) = args_of(final_stage(WORKER_DOCKERFILE), "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert exec_form(command) == ["python", "-m", "worker.ping"]
    timeout = int(re.search(r"--timeout=(\d+)s", options).group(1))  # type: ignore[union-attr]
    # Python's start-up and the ping's own wait fit in Docker's timeout.
    assert timeout > Settings().readiness_timeout_seconds + 2


@pytest.mark.parametrize("path", [API_DOCKERFILE, WORKER_DOCKERFILE], ids=lambda p: p.name)
def test_python_environment(path: Path) -> None:
    env = env_of(final_stage(path))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["SERVING_DATABASE_URL"] == "sqlite:////data/predictions.db"


def test_worker_uses_one_blas_thread_per_process() -> None:
    env = env_of(final_stage(WORKER_DOCKERFILE))
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["SERVING_WORKER_METRICS_PORT"] == "9808"


def test_api_image_command_and_port() -> None:
    stage = final_stage(API_DOCKERFILE)
    assert args_of(stage, "EXPOSE") == ["8000"]
    (cmd,) = args_of(stage, "CMD")
    serve = ["--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
    assert exec_form(cmd) == ["python", "-m", "api", *serve]


def test_worker_image_command_and_port() -> None:
    stage = final_stage(WORKER_DOCKERFILE)
    assert args_of(stage, "EXPOSE") == ["9808"]
    (cmd,) = args_of(stage, "CMD")
    assert exec_form(cmd) == ["python", "-m", "worker", "--concurrency", "2"]


def test_api_image_installs_only_the_api_requirements() -> None:
    instructions = parse_dockerfile(API_DOCKERFILE)
    assert pip_requirement_files(instructions) == ["requirements-api.txt"]
    copied = copy_sources(instructions)
    assert {path for path in copied if "requirements" in path} == {"requirements-api.txt"}


def test_api_requirements_hold_no_ml_library() -> None:
    api = requirement_names(ROOT / "requirements-api.txt")
    assert {"fastapi", "uvicorn", "celery", "prometheus-client"} <= api
    assert api & ML_LIBRARIES == set()
    worker = requirement_names(ROOT / "requirements-worker.txt")
    assert {"numpy", "scikit-learn", "xgboost-cpu", "skops"} <= worker
    assert "fastapi" not in worker and "uvicorn" not in worker


def test_worker_image_installs_the_worker_requirements() -> None:
    instructions = parse_dockerfile(WORKER_DOCKERFILE)
    assert pip_requirement_files(instructions) == ["requirements-worker.txt"]
    copied = copy_sources(instructions)
    assert {path for path in copied if "requirements" in path} == {"requirements-worker.txt"}


def test_each_image_copies_only_its_own_code() -> None:
    assert copy_sources(final_stage(API_DOCKERFILE)) == {"api", "common", "queueing"}
    assert copy_sources(final_stage(WORKER_DOCKERFILE)) == {
        "worker",
        "common",
        "queueing",
        "modelctl",
    }
    worker_sources = copy_sources(parse_dockerfile(WORKER_DOCKERFILE))
    assert not any(path == "api" or path.startswith("api/") for path in worker_sources)
    assert not any(path in {".", "./"} for path in worker_sources)


# --- .dockerignore -----------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last matching line wins; a pattern matching a folder covers
    everything in it."""
    prefixes = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
    result = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _pattern(rule.lstrip("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for name in [".venv", ".git", "tests", "model_store", "*.db", ".dev", ".env"]:
        assert name in rules, f".dockerignore does not name {name}"
    for path in [
        ".venv/bin/python",
        ".git/config",
        "tests/deploy/test_dockerfiles.py",
        "model_store/registry.json",
        "predictions.db",
        "predictions.db-wal",
        ".dev/api-key",
        ".env",
        ".env.local",
        ".cache/prometheus/root/usr/bin/prometheus",
        "docker-compose.yml",
        "api/__pycache__/main.cpython-313.pyc",
        "common/__pycache__/settings.cpython-313.pyc",
    ]:
        assert ignored(path, rules), f"{path} would be sent to the builder"
    for path in [
        "api/main.py",
        "api/routes/health.py",
        "common/metrics.py",
        "worker/tasks.py",
        "modelctl/__main__.py",
        "requirements-api.txt",
        "requirements-worker.txt",
    ]:
        assert not ignored(path, rules), f"{path} is needed by an image but ignored"


def test_every_file_an_image_copies_reaches_the_builder() -> None:
    """Regression: queueing/ was copied by both images but left out of the context, so
    `docker build` failed on a COPY whose source the builder never got."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for dockerfile in (API_DOCKERFILE, WORKER_DOCKERFILE):
        for source in copy_sources(parse_dockerfile(dockerfile)):
            found = (
                [source]
                if (ROOT / source).is_file()
                else [
                    str(path.relative_to(ROOT))
                    for path in (ROOT / source).rglob("*")
                    if path.is_file() and "__pycache__" not in path.parts
                ]
            )
            assert found, f"{dockerfile.name} copies {source}, which does not exist"
            for path in found:
                assert not ignored(path, rules), f"{dockerfile.name} copies {path}: ignored"


# --- the code each image holds runs with that image's requirements -------------------------

_IMPORT_PROBE = """
import importlib, json, sys

blocked = set(json.loads(sys.argv[1]))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"No module named {name!r} (not installed in this image)")
        return None

sys.meta_path.insert(0, Blocker())
for module in sys.argv[2:]:
    importlib.import_module(module)
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _requirement_lines(path: Path) -> list[str]:
    lines: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r"):
            lines += _requirement_lines(path.parent / line.split(maxsplit=1)[1])
        elif line:
            lines.append(line)
    return lines


def requirement_closure(path: Path) -> set[str]:
    """Distributions a requirements file installs, dependencies included, as the
    installed metadata of this virtualenv tells."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(line) for line in _requirement_lines(path)]
    environment = default_environment()
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this interpreter or platform
        for line in dist.requires or []:
            child = Requirement(line)
            extras = requirement.extras or {""}
            if child.marker is None or any(
                child.marker.evaluate({**environment, "extra": extra}) for extra in extras
            ):
                todo.append(child)
    return {name for name, _ in seen}


def import_as_in_image(modules: list[str], requirements: Path, code: set[str]) -> set[str]:
    """Import `modules` in a fresh interpreter where only what `requirements` installs
    (and the project packages in `code`) can be imported, as in the image; optional
    imports of other libraries fail there as they would in the container. Returns the
    top-level modules loaded."""
    closure = requirement_closure(requirements)
    providers = importlib.metadata.packages_distributions()
    blocked = {
        module
        for module, dists in providers.items()
        if not {canonicalize_name(dist) for dist in dists} & closure
    }
    # The project's own packages belong to its editable install (model-serving), which
    # no image has: what decides is which of them the image copies.
    blocked = (blocked - PROJECT_PACKAGES) | (PROJECT_PACKAGES - code)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(sorted(blocked)), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_api_code_imports_with_the_api_requirements_only() -> None:
    loaded = import_as_in_image(
        ["api.main", "api.__main__"],
        ROOT / "requirements-api.txt",
        code={"api", "common", "queueing"},
    )
    assert loaded & PROJECT_PACKAGES == {"api", "common", "queueing"}
    assert {"fastapi", "uvicorn", "celery", "prometheus_client"} <= loaded
    assert loaded & {"numpy", "scipy", "sklearn", "xgboost", "skops"} == set()


def test_worker_code_imports_with_the_worker_requirements_only() -> None:
    modules = [
        "worker.__main__",
        "worker.celery_app",
        "worker.tasks",
        "worker.housekeeping",
        "modelctl.__main__",
        "common.training",
        "common.runtimes",
    ]
    loaded = import_as_in_image(
        modules, ROOT / "requirements-worker.txt", code={"worker", "common", "queueing", "modelctl"}
    )
    assert loaded & PROJECT_PACKAGES == {"worker", "common", "queueing", "modelctl"}
    assert {"celery", "prometheus_client"} <= loaded
    assert loaded & {"fastapi", "uvicorn", "starlette"} == set()


def test_the_import_check_blocks_what_a_requirements_file_lacks() -> None:
    """The check has teeth: FastAPI is not importable under the worker's requirements."""
    with pytest.raises(AssertionError, match="not installed in this image"):
        import_as_in_image(["fastapi"], ROOT / "requirements-worker.txt", code=set())
