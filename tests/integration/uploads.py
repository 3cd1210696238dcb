"""Uploads for tests of jobs: a job's input_object is one of its key's uploads,
`uploads/<owner>/<name>`. Tests of what a job does with its input put the object there
directly (no HTTP upload of a million rows); tests/integration/test_uploads.py covers
the HTTP routes themselves."""

from __future__ import annotations

from common.store import ObjectStore
from common.tenancy import owner_of
from tests.integration.stack import READER_KEY, Stack


def upload_key(name: str, key: str = READER_KEY) -> str:
    """The store key of upload `name` of the API key `key` (what input_object names)."""
    return f"uploads/{owner_of(key)}/{name}"


def put_upload(where: Stack | ObjectStore, name: str, data: bytes, key: str = READER_KEY) -> str:
    """Store `data` as upload `name` of `key`, straight into the store; its input_object."""
    store = where.registry().store if isinstance(where, Stack) else where
    store.put(upload_key(name, key), data)
    return upload_key(name, key)


def results_key(job_id: str, suffix: str = "csv") -> str:
    return f"results/{job_id}.{suffix}"
