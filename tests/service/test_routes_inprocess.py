"""Request validation and error paths of the HTTP layer, in process: ``gscore.service.app.create_app(settings)`` over
a temporary GSCORE_DATA_DIR and the embedded SQLite broker, driven with FastAPI's ``TestClient``.

Nothing here needs a worker: every request is refused before a job runs, or leaves its job queued. What
needs real processes (workers, recovery, Redis, PostgreSQL, concurrent clients) stays in the subprocess
tests (test_service_*.py, test_worker_recovery.py). Server errors are raised into the test (the
TestClient default), so a 500 fails with its traceback.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DIGITS_ARCH, MAX_UPLOAD_BYTES, assert_problem, free_port, submit_job
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gscore.jobstore.dedupe import dedupe_key
from gscore.jobstore.jobs_repo import JobsRepo
from gscore.service.app import create_app
from gscore.settings import Settings

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
MARKER = Path("/tmp/gscore-test-pwned-by-pickle")


class Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


def inprocess_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of an embedded-mode API under ``data_dir`` (database and broker: SQLite files there). The upload
    checks run in the test process (``upload_check_processes=0``): the check pool has its own tests
    (test_upload_bombs.py's pool case, and every real-process stack)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "datasets_dir": None,
        "storage_dir": None,
        "database_url": None,
        "broker_url": None,
        "device": "cpu",
        "default_queue": "cpu",
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "upload_check_processes": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    app = create_app(inprocess_settings(tmp_path_factory.mktemp("inprocess")), run_reaper=False)
    assert app.state.context.warmup.wait(120), "the engine warm-up did not finish"
    return app


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
        assert client.get("/healthz").status_code == 200  # still serving


def repo_of(app: FastAPI) -> JobsRepo:
    return app.state.context.repo


def insert_job(app: FastAPI, state: str, **fields: Any) -> str:
    """A job written straight into the table (as a worker would leave it); returns its id."""
    spec = {**SPEC, "seed": fields.pop("seed", 0)}
    checkpoint = fields.pop("checkpoint_sha256", "c" * 64)
    values: dict[str, Any] = {
        "queue": "cpu",
        "checkpoint_sha256": checkpoint,
        "checkpoint_size": 10,
        "spec": spec,
        "dedupe_key": dedupe_key(checkpoint, spec),
        "collection": None,
        "model_name": "m",
        "hyperparameters": {},
        "test_accuracy": None,
        "train_accuracy": None,
        "progress_stage": state,
    }
    values.update(fields)
    return repo_of(app).create(state=state, **values).id


# ---- moved from test_service_bad_input.py ---------------------------------------------------------------
def test_not_multipart_and_malformed_multipart(client: TestClient) -> None:
    assert_problem(client.post("/v1/jobs", json={"spec": SPEC}), 415, "unsupported-media-type")
    truncated = b'--XyZ\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{"a": 1}\r\n--Xy'
    response = client.post(
        "/v1/jobs", content=truncated, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert_problem(response, 400, "malformed-multipart")
    garbage = client.post(
        "/v1/jobs",
        content=b"\x00\x01 not multipart at all",
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert garbage.status_code == 400


def test_invalid_spec_names_the_field(client: TestClient, digits_checkpoint: Path) -> None:
    with digits_checkpoint.open("rb") as handle:
        response = client.post("/v1/jobs", data={"spec": "{not json"}, files={"checkpoint": handle})
    assert_problem(response, 422, "invalid-spec", field="spec")
    assert_problem(
        submit_job(client, digits_checkpoint, {"dataset": "digits"}), 422, "invalid-spec", field="spec.arch"
    )
    problem = assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "arch": {**DIGITS_ARCH, "width": -3}}),
        422,
        "invalid-spec",
    )
    assert problem["field"].startswith("arch.width")
    assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "measures": ["c9"]}),
        422,
        "invalid-spec",
        field="measures",
    )
    assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "samples_per_class": 0}),
        422,
        "invalid-spec",
        field="spec.samples_per_class",
    )
    assert_problem(
        submit_job(client, digits_checkpoint, SPEC, hyperparameters='{"nested": {"a": 1}}'),
        422,
        "invalid-spec",
    )
    with digits_checkpoint.open("rb") as handle:
        response = client.post("/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"weights": handle})
    assert response.status_code == 422


def test_unknown_or_missing_dataset_says_where(client: TestClient, digits_checkpoint: Path) -> None:
    problem = assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "dataset": "nope"}), 422, "invalid-dataset"
    )
    assert "POST /v1/datasets" in problem["detail"]
    problem = assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "dataset": "/etc/passwd.npz"}), 422, "invalid-dataset"
    )
    spec = {
        **SPEC,
        "arch": {"family": "cnn", "in_channels": 3, "width": 8, "depth": 2, "num_classes": 10},
        "dataset": "cifar10",
    }
    problem = assert_problem(submit_job(client, digits_checkpoint, spec), 422, "invalid-dataset")
    assert "not installed" in problem["detail"] and "datasets" in problem["detail"]


def test_oversized_upload_is_refused_while_streaming(client: TestClient, app: FastAPI) -> None:
    """The byte count is the app's (multipart reader), not the transport's: the TestClient hands the app
    the generator's bytes without a Content-Length, as uvicorn does with a chunked upload."""
    big = b"PK\x03\x04" + b"\x00" * (MAX_UPLOAD_BYTES + 200_000)
    response = client.post("/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"checkpoint": ("big.pt", big)})
    problem = assert_problem(response, 413, "upload-too-large")
    assert str(MAX_UPLOAD_BYTES) in problem["detail"]

    def chunks():  # no Content-Length: a chunked upload cannot slip past the cap
        yield b'--B\r\nContent-Disposition: form-data; name="checkpoint"; filename="x"\r\n\r\n'
        for _ in range(40):
            yield b"\x01" * 65536
        yield b"\r\n--B--\r\n"

    response = client.post(
        "/v1/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert_problem(response, 413, "upload-too-large")
    assert list((app.state.context.settings.resolved_storage_dir / "tmp").iterdir()) == []


def test_legacy_pickles_and_non_checkpoints_are_refused_at_upload(client: TestClient) -> None:
    legacy = pickle.dumps(Exploit(), protocol=2)
    response = client.post(
        "/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"checkpoint": ("evil.pt", legacy)}
    )
    assert_problem(response, 422, "invalid-checkpoint")
    assert not MARKER.exists()
    not_a_checkpoint = client.post(
        "/v1/jobs",
        data={"spec": json.dumps(SPEC)},
        files={"checkpoint": ("x.pt", io.BytesIO(b"hello world, not weights"))},
    )
    assert_problem(not_a_checkpoint, 422, "invalid-checkpoint")


def test_unknown_job_and_bad_cursor(client: TestClient) -> None:
    assert_problem(client.get("/v1/jobs/does-not-exist"), 404, "job-not-found")
    assert_problem(client.delete("/v1/jobs/does-not-exist"), 404, "job-not-found")
    assert_problem(client.get("/v1/collections/none-such"), 404, "collection-not-found")
    assert_problem(client.get("/v1/jobs", params={"cursor": "!!"}), 422, "invalid-request", field="cursor")
    assert_problem(client.get("/v1/jobs", params={"limit": 1000}), 422, "invalid-request", field="limit")
    assert client.get("/v1/nothing-here").status_code == 404


def test_bad_dataset_uploads(client: TestClient) -> None:
    response = client.post("/v1/datasets", files={"file": ("x.npz", b"not a zip")})
    assert_problem(response, 422, "invalid-dataset")
    response = client.post("/v1/datasets", files={"file": ("x.npz", b"PK")}, data={"name": "digits"})
    assert_problem(response, 422, "invalid-dataset")
    response = client.post("/v1/datasets", files={"file": ("x.npz", b"PK")}, data={"name": "../etc"})
    assert_problem(response, 422, "invalid-dataset")


def test_unreachable_broker_is_named_by_readyz_and_submissions_stay_queued(
    tmp_path: Path, digits_checkpoint: Path
) -> None:
    """An API whose broker is down says so in readyz, accepts jobs into the outbox (202, queued: the reaper
    publishes them once the broker is back) and keeps serving reads."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(
        inprocess_settings(tmp_path, broker_url=dead_broker, broker_timeout_seconds=1), run_reaper=False
    )
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["broker"] != "ok" and ready.json()["checks"]["storage"] == "ok"
        spec = {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"]}
        response = submit_job(client, digits_checkpoint, spec)
        assert response.status_code == 202, response.text
        assert client.get(f"/v1/jobs/{response.json()['id']}").json()["state"] == "queued"
        assert client.get("/healthz").status_code == 200


# ---- moved from test_service_hostile.py -----------------------------------------------------------------
def test_a_field_sent_twice_is_refused(client: TestClient, digits_checkpoint: Path) -> None:
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
    client: TestClient, digits_checkpoint: Path, name: str
) -> None:
    response = submit_job(client, digits_checkpoint, SPEC, collection=name)
    assert_problem(response, 422, "invalid-spec", field="collection")
    response = submit_job(client, digits_checkpoint, SPEC, model_name=f"m{name}" if "\t" in name else "m\x07")
    assert_problem(response, 422, "invalid-spec", field="model_name")


def test_values_the_worker_cannot_use_are_refused_at_submission(
    client: TestClient, digits_checkpoint: Path
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


def test_an_idempotency_key_reused_with_another_body_is_refused(
    client: TestClient, digits_checkpoint: Path
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


# ---- error paths with no subprocess counterpart ---------------------------------------------------------
def test_cancelling_a_finished_job_is_a_409_and_a_cancelled_one_answers_again(
    client: TestClient, app
) -> None:
    for state in ("succeeded", "failed"):
        job_id = insert_job(app, state)
        problem = assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409, "job-finished")
        assert state in problem["detail"] and job_id in problem["detail"]
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == state  # unchanged
    queued = insert_job(app, "queued")
    first = client.delete(f"/v1/jobs/{queued}")
    assert first.status_code == 202 and first.json()["state"] == "cancelled"
    again = client.delete(f"/v1/jobs/{queued}")
    assert again.status_code == 202 and again.json()["state"] == "cancelled"


def test_job_listing_refuses_unknown_states_and_foreign_cursors(client: TestClient, app: FastAPI) -> None:
    assert_problem(client.get("/v1/jobs", params={"state": "done"}), 422, "invalid-request", field="state")
    assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422, "invalid-request", field="limit")
    foreign = "WyJub3QgYSBkYXRlIiwgIngiXQ"  # base64 of ["not a date", "x"]: decodes, but is no cursor
    assert_problem(client.get("/v1/jobs", params={"cursor": foreign}), 422, "invalid-request", field="cursor")
    assert_problem(
        client.get("/v1/jobs", params={"cursor": "x" * 600}), 422, "invalid-request", field="cursor"
    )
    collection = "listing-probe"
    ids = [insert_job(app, "queued", collection=collection, seed=seed) for seed in (1, 2, 3)]
    page = client.get("/v1/jobs", params={"collection": collection, "limit": 2}).json()
    assert [job["id"] for job in page["jobs"]] == ids[::-1][:2]
    rest = client.get("/v1/jobs", params={"collection": collection, "cursor": page["next_cursor"]}).json()
    assert [job["id"] for job in rest["jobs"]] == [ids[0]] and rest["next_cursor"] is None


def test_idempotency_key_longer_than_255_characters_is_refused(
    client: TestClient, digits_checkpoint: Path
) -> None:
    client.headers["Idempotency-Key"] = "k" * 256
    response = submit_job(client, digits_checkpoint, SPEC)
    del client.headers["Idempotency-Key"]
    assert_problem(response, 422, "invalid-request", field="idempotency-key")


def test_oversized_form_field_and_too_many_parts(client: TestClient) -> None:
    big_field = b'--B\r\nContent-Disposition: form-data; name="spec"\r\n\r\n' + b"{" * (1024 * 1024 + 1)
    response = client.post(
        "/v1/jobs",
        content=big_field + b"\r\n--B--\r\n",
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    assert "'spec' exceeds 1048576 bytes" in assert_problem(response, 413, "field-too-large")["detail"]
    parts = b"".join(b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(33))
    response = client.post(
        "/v1/jobs", content=parts + b"--B--\r\n", headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert "more than 32 parts" in assert_problem(response, 400, "malformed-multipart")["detail"]


def test_unknown_form_fields_and_bad_splits_name_the_field(
    client: TestClient, digits_checkpoint: Path
) -> None:
    problem = assert_problem(
        submit_job(client, digits_checkpoint, SPEC, colection="typo"), 422, "invalid-spec", field="colection"
    )
    assert "allowed: checkpoint, collection" in problem["detail"]
    assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "split": "validation"}),
        422,
        "invalid-spec",
        field="split",
    )
    assert_problem(
        submit_job(client, digits_checkpoint, {**SPEC, "extra": 1}), 422, "invalid-spec", field="spec.extra"
    )
    empty = client.post("/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"checkpoint": ("e.pt", b"")})
    assert "empty" in assert_problem(empty, 422, "invalid-checkpoint")["detail"]


def _npz(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.random((20, 1, 8, 8), dtype=np.float32), y=np.repeat(np.arange(5), 4))
    return buffer.getvalue()


def test_a_dataset_name_with_other_content_is_a_409(client: TestClient) -> None:
    first = client.post("/v1/datasets", data={"name": "probe-409"}, files={"file": ("p.npz", _npz(0))})
    assert first.status_code == 201 and first.headers["location"] == "/v1/datasets/probe-409"
    again = client.post("/v1/datasets", data={"name": "probe-409"}, files={"file": ("p.npz", _npz(0))})
    assert again.status_code == 200 and again.json()["sha256"] == first.json()["sha256"]
    other = client.post("/v1/datasets", data={"name": "probe-409"}, files={"file": ("p.npz", _npz(1))})
    assert "'probe-409'" in assert_problem(other, 409, "dataset-name-taken")["detail"]
    assert_problem(client.post("/v1/datasets", json={"name": "x"}), 415, "unsupported-media-type")
    assert_problem(client.post("/v1/datasets", data={"name": "x"}), 415, "unsupported-media-type")


def test_ranking_and_plot_error_paths(client: TestClient, app: FastAPI) -> None:
    collection = "ranking-probe"
    for seed, (c3, accuracy) in enumerate([(0.1, 0.5), (0.2, 0.7), (0.3, 0.6)]):
        result = {"scores": {"c3": c3, "margin": 1.0 + seed, "param_norm": 3.0 - seed}, "meta": {}}
        insert_job(
            app,
            "succeeded",
            seed=seed,
            collection=collection,
            model_name=f"m{seed}",
            hyperparameters={"lr": seed},
            test_accuracy=accuracy,
            result=result,
        )
    insert_job(app, "queued", seed=9, collection=collection, model_name="pending")
    ranking = client.get(f"/v1/collections/{collection}/ranking").json()
    assert ranking["n_models"] == 3 and ranking["not_scored"] == [{"name": "pending", "state": "queued"}]
    ranked = [(entry["name"], entry["score"]) for entry in ranking["measures"]["c3"]["ranking"]]
    assert ranked == [("m2", 0.3), ("m1", 0.2), ("m0", 0.1)]  # higher c3 ranks first (orientation +1)
    assert_problem(client.get("/v1/collections/none-such/ranking"), 404, "collection-not-found")
    assert_problem(client.get("/v1/collections/none-such/plot.png"), 404, "collection-not-found")
    bad_target = client.get(f"/v1/collections/{collection}/ranking", params={"target": "loss"})
    assert_problem(bad_target, 422, "invalid-request", field="target")
    absent = client.get(f"/v1/collections/{collection}/ranking", params={"measures": "c3,zz"})
    problem = assert_problem(absent, 422, "unknown-measure", field="measures")
    assert "'zz'" in problem["detail"] and "present: c3, margin, param_norm" in problem["detail"]
    # a family stands for its members present in the collection (margin and param_norm of "norm"), in table order
    family = client.get(f"/v1/collections/{collection}/ranking", params={"measures": "norm,c3"}).json()
    assert list(family["measures"]) == ["margin", "param_norm", "c3"]
    assert list(
        client.get(f"/v1/collections/{collection}/ranking", params={"measures": "all"}).json()["measures"]
    ) == [
        "c3",
        "margin",
        "param_norm",
    ]
    no_member = client.get(f"/v1/collections/{collection}/ranking", params={"measures": "spectral"})
    assert "'spectral'" in assert_problem(no_member, 422, "unknown-measure", field="measures")["detail"]
    absent_plot = client.get(f"/v1/collections/{collection}/plot.png", params={"measure": "zz"})
    assert_problem(absent_plot, 422, "unknown-measure", field="measure")
    insert_job(app, "running", seed=10, collection="unscored-probe")
    nothing = client.get("/v1/collections/unscored-probe/plot.png")
    assert_problem(nothing, 422, "nothing-to-plot")


def test_wrong_method_and_readiness(client: TestClient) -> None:
    wrong = client.put("/v1/jobs/x")
    assert wrong.status_code == 405 and wrong.json()["type"] == "about:blank"
    assert wrong.headers["content-type"].startswith("application/problem+json")
    checks = {"database": "ok", "broker": "ok", "storage": "ok", "engine": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "checks": checks}
    metrics = client.get("/metrics").text
    assert 'gscore_http_requests_total{method="PUT",route="/v1/jobs/{job_id}",status="405"}' in metrics
