"""A careless or hostile client against the real embedded service: names read back through the client,
the largest seed run by a worker, duplicates found by the worker, concurrent Idempotency-Key retries and
uploads, and the repositories' races and NUL handling. Never a 500. (Duplicated parts, unreadable names,
unusable values and reused Idempotency-Keys are refused in process: tests/service/test_routes_inprocess.py.)"""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DIGITS_ARCH, Stack, submit_job, wait_for_job

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture()
def client(embedded_stack: Stack) -> httpx.Client:
    with embedded_stack.client() as client:
        yield client
        assert client.get("/healthz").status_code == 200  # still serving


def test_any_accepted_collection_name_is_readable_through_the_client(
    embedded_stack: Stack, client: httpx.Client, digits_checkpoint: Path
) -> None:
    from gscore.client import Client

    name = f"sweep #1 50%? ü {uuid.uuid4().hex[:6]}"
    job = submit_job(client, digits_checkpoint, SPEC, collection=name, model_name="m1").json()
    assert job["collection"] == name
    with Client(embedded_stack.url) as service:
        collection = service.collection(name)
        assert collection["name"] == name
        assert [m["model_name"] for m in collection["models"]] == ["m1"]
        assert service.job(job["id"])["id"] == job["id"]


def test_the_largest_seed_accepted_is_one_the_worker_can_use(
    client: httpx.Client, digits_checkpoint: Path
) -> None:
    job = submit_job(client, digits_checkpoint, {**SPEC, "seed": 2**64 - 1}).json()
    done = wait_for_job(client, job["id"], FINAL)
    assert done["state"] == "succeeded", done["error"]


def test_concurrent_retries_with_one_idempotency_key_make_one_job(
    embedded_stack: Stack, digits_checkpoint: Path
) -> None:
    collection = f"idem-race-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex

    def post(_: int) -> tuple[int, str]:
        with embedded_stack.client() as client:
            client.headers["Idempotency-Key"] = key
            response = submit_job(client, digits_checkpoint, {**SPEC, "seed": 41}, collection=collection)
            return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    assert {status for status, _ in answers} == {202}, answers
    assert len({job_id for _, job_id in answers}) == 1, answers
    with embedded_stack.client() as client:
        jobs = client.get("/v1/jobs", params={"collection": collection}).json()["jobs"]
        assert [job["id"] for job in jobs] == [answers[0][1]]  # no orphan duplicates left running


def test_a_duplicate_found_by_the_worker_says_so_in_its_progress(
    client: httpx.Client, digits_checkpoint: Path
) -> None:
    spec = {**SPEC, "seed": 51}
    first = submit_job(client, digits_checkpoint, spec).json()
    second = submit_job(client, digits_checkpoint, spec).json()
    assert second["state"] == "queued"  # the first has not finished: the worker finds the duplicate
    wait_for_job(client, first["id"], FINAL)
    done = wait_for_job(client, second["id"], FINAL)
    assert done["state"] == "succeeded"
    assert done["result"]["meta"]["deduplicated_from"] == first["id"]
    assert done["progress"]["stage"] == "deduplicated"


def _npz(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.random((20, 1, 8, 8), dtype=np.float32), y=np.repeat(np.arange(5), 4))
    return buffer.getvalue()


def test_concurrent_uploads_of_one_dataset_name(embedded_stack: Stack) -> None:
    def upload(args: tuple[str, int]) -> int:
        name, seed = args
        with embedded_stack.client() as client:
            response = client.post("/v1/datasets", data={"name": name}, files={"file": ("p.npz", _npz(seed))})
            return response.status_code

    for round_ in range(3):
        name = f"race-{round_}-{uuid.uuid4().hex[:6]}"
        with ThreadPoolExecutor(8) as pool:
            same = sorted(pool.map(upload, [(name, 0)] * 8))
        assert same == [200] * 7 + [201]
        with ThreadPoolExecutor(8) as pool:
            other = sorted(pool.map(upload, [(name, seed) for seed in range(1, 9)]))
        assert other == [409] * 8


def test_datasets_repo_add_survives_losing_the_insert_race(tmp_path: Path) -> None:
    from gscore.jobstore.datasets_repo import DatasetNameTaken, DatasetsRepo
    from gscore.jobstore.db import make_session_factory
    from gscore.jobstore.storage import Storage

    repo = DatasetsRepo(make_session_factory(f"sqlite:///{tmp_path / 'db.sqlite'}"), Storage(tmp_path / "s"))
    repo.add("probe", "a" * 64, 10, {})
    real_get = repo.get
    misses = [1]

    def get_after_a_miss(name: str) -> object:
        if misses:  # the existence check ran before the concurrent request's insert
            misses.pop()
            return None
        return real_get(name)

    repo.get = get_after_a_miss  # type: ignore[method-assign]
    record, created = repo.add("probe", "a" * 64, 10, {})
    assert (record.name, record.sha256, created) == ("probe", "a" * 64, False)
    misses.append(1)
    with pytest.raises(DatasetNameTaken):
        repo.add("probe", "b" * 64, 10, {})


def test_nul_in_ids_and_names_is_not_a_database_error(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL refuses NUL in strings: a path or query with %00 must be a 404/422, not a 500."""
    from gscore.jobstore.datasets_repo import DatasetsRepo
    from gscore.jobstore.db import make_session_factory
    from gscore.jobstore.jobs_repo import InvalidCursor, JobsRepo, encode_cursor
    from gscore.jobstore.storage import Storage

    sessions = make_session_factory(postgres_url)
    jobs = JobsRepo(sessions)
    assert jobs.get("a\x00b") is None
    assert jobs.request_cancel("a\x00b") is None
    assert jobs.collection_jobs("c\x00") == []
    assert jobs.page(collection="c\x00", state=None, limit=5, cursor=None) == ([], None)
    with pytest.raises(InvalidCursor):
        jobs.page(
            collection=None, state=None, limit=5, cursor=encode_cursor(datetime.now(timezone.utc), "x\x00")
        )
    datasets = DatasetsRepo(sessions, Storage(tmp_path))
    assert datasets.get("d\x00") is None
