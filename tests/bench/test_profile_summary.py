"""bench.profile's summary of py-spy's collapsed stacks (`--format raw`), and the
benchmark's --scenarios selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profile
from bench.profile import format_summary, function_name, short_path, summarise
from bench.sync_predict import needed_services, parse_args

ROOT = Path("/repo")
SITE = "/venv/lib/python3.12/site-packages"
# Two processes as py-spy --subprocesses writes them: the parent's frame first, then the
# child's; `main` recurses in the last line.
PARENT = 'process 10:"python -m worker"'
CHILD = 'process 11:"python -m worker"'
MAIN = "main (/repo/worker/__main__.py:5)"
PREDICT = f"predict ({SITE}/xgboost/core.py:100)"
DUMPS = "dumps (/usr/lib/python3.12/json/__init__.py:231)"
RAW = "\n".join(
    [
        f"{PARENT};{MAIN};loop (/repo/worker/__main__.py:9) 30",
        f"{PARENT};{CHILD};{MAIN};run (/repo/worker/tasks.py:20);{PREDICT} 50",
        f"{PARENT};{CHILD};{MAIN};run (/repo/worker/tasks.py:21) 10",
        f"{PARENT};{MAIN};main (/repo/worker/__main__.py:7);{DUMPS} 10",
        "",
    ]
)


def test_shares_count_each_function_once_per_sample() -> None:
    summary = summarise(RAW.splitlines(), ROOT)

    assert summary.samples == 100
    assert summary.by_process == {10: 40, 11: 60}
    total = {s.function: (s.total, s.innermost) for s in summary.top_total()}
    # main is on every stack, twice on the last: 100%, not 110%
    assert total["worker/__main__.py:main"] == (1.0, 0.0)
    assert total["worker/tasks.py:run"] == (0.6, 0.1)
    assert total["xgboost/core.py:predict"] == (0.5, 0.5)
    assert total["json/__init__.py:dumps"] == (0.1, 0.1)
    assert [s.function for s in summary.top_self()] == [
        "xgboost/core.py:predict",
        "worker/__main__.py:loop",
        "json/__init__.py:dumps",
        "worker/tasks.py:run",
    ]
    assert [s.function for s in summary.top_total(2)] == [
        "worker/__main__.py:main",
        "worker/tasks.py:run",
    ]


def test_callers_on_the_same_samples_fold_into_the_function_they_call() -> None:
    summary = summarise(
        ["a (m.py:1);b (m.py:2);c (m.py:3) 6", "a (m.py:1);b (m.py:2);d (m.py:4) 2"]
    )

    folded = summary.top_total()
    assert [(s.label, s.total) for s in folded] == [
        ("m.py:b (+1 callers)", 1.0),
        ("m.py:c", 0.75),
        ("m.py:d", 0.25),
    ]
    unfolded = summary.top_total(fold_callers=False)
    assert [(s.label, s.total) for s in unfolded][:2] == [("m.py:a", 1.0), ("m.py:b", 1.0)]


def test_names_are_short_and_thread_frames_ignored() -> None:
    assert short_path("/repo/api/main.py", ROOT) == "api/main.py"
    assert short_path(f"{SITE}/celery/app/trace.py", ROOT) == "celery/app/trace.py"
    assert short_path("/usr/lib/python3.11/asyncio/events.py", ROOT) == "asyncio/events.py"
    assert short_path("celery/app/trace.py", ROOT) == "celery/app/trace.py"  # py-spy's own
    assert function_name("<module> (x.py)", ROOT) == "x.py:<module>"  # --nolineno
    assert function_name("Foo.bar (pkg/m.py:3)", ROOT) == "pkg/m.py:Foo.bar"
    summary = summarise(["thread (0x7f00aa);f (a.py:1);g (b.py:2) 4"], ROOT)
    assert dict(summary.total) == {"a.py:f": 4, "b.py:g": 4}
    assert summary.by_process == {0: 4}


def test_a_line_without_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 2"):
        summarise(["f (a.py:1) 3", "f (a.py:1)"], ROOT)


def test_format_summary_shows_active_threads_and_both_tables() -> None:
    text = format_summary("miss, c=64: worker", summarise(RAW.splitlines(), ROOT), 200, 0.5)

    assert "100 samples in 0.5 s at 200/s: 1.00 threads running or runnable" in text
    assert "10: 40%, 11: 60%" in text
    assert "| xgboost/core.py:predict " in text
    assert "by self share" in text


def test_scenarios_add_their_baseline_and_start_only_their_services(
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = parse_args(["--scenarios", "miss-1000,hit"])

    assert [s.key for s in options.scenarios] == ["bare", "hit", "bare-1000", "miss-1000"]
    assert needed_services(options.scenarios) == ["worker", "api", "bare"]
    default = parse_args([])
    assert [s.key for s in default.scenarios] == [
        "bare", "miss", "hit", "naive", "mlserver", "bare-1000", "miss-1000",
    ]  # fmt: skip
    assert needed_services(default.scenarios) == [
        "worker", "api", "bare", "naive-worker", "naive-api", "mlserver",
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "miss,nope"])
    assert "unknown scenario(s) nope; choose from bare, miss, hit" in capsys.readouterr().err


def test_profile_without_py_spy_or_with_soak_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--soak", "60", "--profile", str(tmp_path)])
    assert "--scenarios and --profile do not apply to --soak" in capsys.readouterr().err

    monkeypatch.setattr(profile, "py_spy_path", lambda: None)
    with pytest.raises(SystemExit):
        parse_args(["--profile", str(tmp_path)])
    assert "--profile needs py-spy" in capsys.readouterr().err


@pytest.mark.parametrize("odd", ["\r", "\u2028", "\x85", "\xca\x00"])
def test_a_frame_holding_a_line_breaking_character_stays_one_stack(
    tmp_path: Path, odd: str
) -> None:
    # py-spy --nonblocking once read a frame half-written, with a carriage return in it:
    # text mode made it a newline and the summary failed on half a stack.
    frame = f"confirm_timeout (timeout:-12{odd}) (/repo/worker/tasks.py:3)"
    path = tmp_path / "stacks.txt"
    path.write_bytes(f"{PARENT};{MAIN};{frame} 7\n{PARENT};{MAIN} 3\n".encode())
    summary = summarise(profile.read_stacks(path), ROOT)
    assert summary.samples == 10


def test_set_passes_known_settings_and_refuses_others(capsys: pytest.CaptureFixture[str]) -> None:
    options = parse_args(["--set", "batch_max_wait_ms=2", "--set", "SERVING_BATCH_MAX_ROWS=64"])
    assert options.settings == {"batch_max_wait_ms": "2", "batch_max_rows": "64"}
    with pytest.raises(SystemExit):
        parse_args(["--set", "no_such_setting=1"])
    assert "expected NAME=VALUE with NAME a setting" in capsys.readouterr().err
