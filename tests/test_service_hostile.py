"""A careless or hostile client against the real embedded service: duplicated parts, names that cannot be
read back, values the worker would choke on, reused Idempotency-Keys and races. Never a 500."""

from __future__ import annotations

import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DIGITS_ARCH, Stack, submit_job, wait_for_job
from test_service_bad_input import assert_problem

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture()
def client(embedded_stack: Stack) -> httpx.Client:
    with embedded_stack.client() as client:
        yield client
        assert client.get("/healthz").status_code == 200  # still serving


def test_a_field_sent_twice_is_refused(client: httpx.Client, digits_checkpoint: Path) -> None:
    body = {"spec": [json.dumps(SPEC), json.dumps({**SPEC, "seed": 5})]}
    with digits_checkpoint.open("rb") as handle:
        response = client.post("/v1/jobs", data=body, files={"checkpoint": ("c", handle)})
    problem = assert_problem(response, 400, "malformed-multipart")
    assert "'spec' was sent twice" in problem["detail"]
    body = {"spec": json.dumps(SPEC), "collection": ["a", "b"]}
    with digits_checkpoint.open("rb") as handle:
        response = client.post("/v1/jobs", data=body, files={"checkpoint": ("c", handle)})
    assert "'collection' was sent twice" in assert_problem(response, 400, "malformed-multipart")["detail"]


@pytest.mark.parametrize("name", ["a/b", "..", ".", "tab\there", "nul\x00"])
def test_collection_names_that_cannot_be_read_back_are_refused(
    client: httpx.Client, digits_checkpoint: Path, name: str
) -> None:
    response = submit_job(client, digits_checkpoint, SPEC, collection=name)
    assert_problem(response, 422, "invalid-spec", field="collection")
    response = submit_job(client, digits_checkpoint, SPEC, model_name=f"m{name}" if "\t" in name else "m\x07")
    assert_problem(response, 422, "invalid-spec", field="model_name")


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


def test_values_the_worker_cannot_use_are_refused_at_submission(
    client: httpx.Client, digits_checkpoint: Path
) -> None:
    for text in ('{"lr": NaN}', '{"lr": Infinity}', '{"lr": 1e400}'):
        response = submit_job(client, digits_checkpoint, SPEC, hyperparameters=text)
        assert_problem(response, 422, "invalid-spec", field="hyperparameters.lr")
    for seed in (-1, 2**64):
        response = submit_job(client, digits_checkpoint, {**SPEC, "seed": seed})
        assert_problem(response, 422, "invalid-spec", field="spec.seed")
    for accuracy in ("93", "-0.1"):  # accuracies are fractions: a percentage would skew every ranking
        response = submit_job(client, digits_checkpoint, SPEC, test_accuracy=accuracy)
        assert_problem(response, 422, "invalid-spec", field="test_accuracy")
    # the largest seed accepted is one the worker can use
    job = submit_job(client, digits_checkpoint, {**SPEC, "seed": 2**64 - 1}).json()
    done = wait_for_job(client, job["id"], FINAL)
    assert done["state"] == "succeeded", done["error"]


def test_an_idempotency_key_reused_with_another_body_is_refused(
    client: httpx.Client, digits_checkpoint: Path
) -> None:
    collection = f"idem-{uuid.uuid4().hex[:8]}"
    client.headers["Idempotency-Key"] = key = uuid.uuid4().hex
    first = submit_job(client, digits_checkpoint, {**SPEC, "seed": 31}, collection=collection)
    assert first.status_code == 202
    again = submit_job(client, digits_checkpoint, {**SPEC, "seed": 31}, collection=collection)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    other_spec = submit_job(client, digits_checkpoint, {**SPEC, "seed": 32}, collection=collection)
    problem = assert_problem(other_spec, 422, "idempotency-key-reused", field="Idempotency-Key")
    assert key in problem["detail"] and first.json()["id"] in problem["detail"]
    other_entry = submit_job(
        client, digits_checkpoint, {**SPEC, "seed": 31}, collection=collection, model_name="x"
    )
    assert_problem(other_entry, 422, "idempotency-key-reused")
    del client.headers["Idempotency-Key"]
    jobs = client.get("/v1/jobs", params={"collection": collection}).json()["jobs"]
    assert [job["id"] for job in jobs] == [first.json()["id"]]


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
    from service.datasets_repo import DatasetNameTaken, DatasetsRepo
    from service.db import make_session_factory
    from service.storage import Storage

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
    from service.datasets_repo import DatasetsRepo
    from service.db import make_session_factory
    from service.jobs_repo import InvalidCursor, JobsRepo, encode_cursor
    from service.storage import Storage

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
