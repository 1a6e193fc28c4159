"""Bad input gets an RFC 9457 problem document naming what is wrong, and the service keeps serving."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import DIGITS_ARCH, MAX_UPLOAD_BYTES, Stack, submit_job, wait_for_job

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
FINAL = ("succeeded", "failed", "cancelled")
MARKER = Path("/tmp/gscore-test-pwned-by-pickle")


class Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


def assert_problem(response: httpx.Response, status: int, type_: str, *, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and problem["type"] == type_
    assert problem["title"] and problem["detail"] and problem["instance"]
    if field is not None:
        assert problem["field"] == field, problem
    return problem


@pytest.fixture()
def client(embedded_stack: Stack) -> httpx.Client:
    with embedded_stack.client() as client:
        yield client
        assert client.get("/healthz").status_code == 200  # still serving


def test_not_multipart_and_malformed_multipart(client: httpx.Client) -> None:
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


def test_invalid_spec_names_the_field(client: httpx.Client, digits_checkpoint: Path) -> None:
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


def test_unknown_or_missing_dataset_says_where(client: httpx.Client, digits_checkpoint: Path) -> None:
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


def test_oversized_upload_is_refused_while_streaming(client: httpx.Client, embedded_stack: Stack) -> None:
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
    assert list((embedded_stack.data_dir / "storage" / "tmp").iterdir()) == []


def test_pickles_are_refused_at_upload_or_by_the_worker(client: httpx.Client, tmp_path: Path) -> None:
    import torch

    legacy = pickle.dumps(Exploit(), protocol=2)
    response = client.post(
        "/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"checkpoint": ("evil.pt", legacy)}
    )
    assert_problem(response, 422, "invalid-checkpoint")
    zipped = tmp_path / "evil.pt"
    torch.save({"weight": Exploit()}, zipped)
    assert zipfile.is_zipfile(zipped)
    job = submit_job(client, zipped, SPEC).json()
    failed = wait_for_job(client, job["id"], FINAL)
    assert failed["state"] == "failed" and failed["error"]["type"] == "invalid-checkpoint", failed
    assert not MARKER.exists()
    not_a_checkpoint = client.post(
        "/v1/jobs",
        data={"spec": json.dumps(SPEC)},
        files={"checkpoint": ("x.pt", io.BytesIO(b"hello world, not weights"))},
    )
    assert_problem(not_a_checkpoint, 422, "invalid-checkpoint")


def test_architecture_checkpoint_mismatch_fails_the_job(
    client: httpx.Client, digits_checkpoint: Path
) -> None:
    spec = {**SPEC, "arch": {**DIGITS_ARCH, "width": 16}}
    job = submit_job(client, digits_checkpoint, spec).json()
    failed = wait_for_job(client, job["id"], FINAL)
    assert failed["state"] == "failed" and failed["error"]["type"] == "checkpoint-mismatch", failed
    assert failed["error"]["detail"]


def test_unknown_job_cursor_and_finished_cancel(client: httpx.Client, digits_checkpoint: Path) -> None:
    assert_problem(client.get("/v1/jobs/does-not-exist"), 404, "job-not-found")
    assert_problem(client.delete("/v1/jobs/does-not-exist"), 404, "job-not-found")
    assert_problem(client.get("/v1/collections/none-such"), 404, "collection-not-found")
    assert_problem(client.get("/v1/jobs", params={"cursor": "!!"}), 422, "invalid-request", field="cursor")
    assert_problem(client.get("/v1/jobs", params={"limit": 1000}), 422, "invalid-request", field="limit")
    assert client.get("/v1/nothing-here").status_code == 404
    done = wait_for_job(client, submit_job(client, digits_checkpoint, SPEC).json()["id"], FINAL)
    assert done["state"] == "succeeded"
    assert_problem(client.delete(f"/v1/jobs/{done['id']}"), 409, "job-finished")


def test_bad_dataset_uploads(client: httpx.Client) -> None:
    response = client.post("/v1/datasets", files={"file": ("x.npz", b"not a zip")})
    assert_problem(response, 422, "invalid-dataset")
    response = client.post("/v1/datasets", files={"file": ("x.npz", b"PK")}, data={"name": "digits"})
    assert_problem(response, 422, "invalid-dataset")
    response = client.post("/v1/datasets", files={"file": ("x.npz", b"PK")}, data={"name": "../etc"})
    assert_problem(response, 422, "invalid-dataset")


def test_unreachable_broker_is_a_503_with_retry_after(tmp_path: Path, digits_checkpoint: Path) -> None:
    """An API whose broker is down says so (readyz, submission) and keeps serving reads."""
    from conftest import free_port, stack_env

    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = Stack(data_dir=tmp_path, env=stack_env(tmp_path, BROKER_URL=dead_broker))
    try:
        stack.start_api()
        with stack.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] == "ok"
            assert ready.json()["checks"]["broker"] != "ok"
            spec = {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"]}
            response = submit_job(client, digits_checkpoint, spec)
            assert_problem(response, 503, "broker-unavailable")
            assert response.headers["retry-after"] == "5"
            assert client.get("/healthz").status_code == 200
    finally:
        stack.stop()
