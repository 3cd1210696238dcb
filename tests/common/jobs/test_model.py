"""The job's states and transitions, and its record as Redis keeps it."""

from __future__ import annotations

from common.jobs.model import TERMINAL, TRANSITIONS, Job, JobState, NewJob, sources_of


def new_job(**overrides: object) -> NewJob:
    fields: dict[str, object] = {
        "job_id": "j1",
        "owner": "o1",
        "model_type": "xgboost",
        "version": "2",
        "sha256": "a" * 64,
        "n_rows": 12,
        "n_chunks": 3,
        "chunk_rows": 5,
        "created_at": 1000.5,
    }
    return NewJob(**(fields | overrides))  # type: ignore[arg-type]


def test_ended_jobs_never_move_again() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
    assert TRANSITIONS[JobState.RUNNING] == TERMINAL
    assert JobState.QUEUED not in {t for targets in TRANSITIONS.values() for t in targets}


def test_the_sources_of_each_target_come_from_the_table() -> None:
    assert sources_of(JobState.RUNNING) == ["queued"]
    assert sources_of(JobState.SUCCEEDED) == ["queued", "running"]
    assert sources_of(JobState.CANCELLED) == ["queued", "running"]
    assert sources_of(JobState.QUEUED) == []


def test_a_new_job_reads_back_as_queued_with_its_fields() -> None:
    raw = {
        k.encode(): str(v).encode()
        for k, v in new_job(callback_url="https://x/cb").to_hash().items()
    }

    job = Job.from_hash(raw)

    assert job.state is JobState.QUEUED and not job.ended and job.sized
    assert (job.n_rows, job.n_chunks, job.chunk_rows) == (12, 3, 5)
    assert (job.rows_done, job.chunks_done) == (0, 0)
    assert job.created_at == job.updated_at == 1000.5
    assert job.callback_url == "https://x/cb"
    assert job.input_object is None and job.task_id is None and job.error is None


def test_an_object_job_is_not_sized_until_read() -> None:
    fields = new_job(
        n_rows=0, n_chunks=0, input_object="in/a.csv", output_object="in/a.predictions.csv"
    ).to_hash()
    job = Job.from_hash(fields)
    assert not job.sized
    assert (job.input_object, job.output_object) == ("in/a.csv", "in/a.predictions.csv")


def test_an_error_is_decoded() -> None:
    fields = new_job().to_hash() | {"status": "failed", "error": '{"type":"x","message":"y"}'}
    job = Job.from_hash(fields)
    assert job.ended and job.error == {"type": "x", "message": "y"}
