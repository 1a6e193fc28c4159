"""Bad input that only a real worker can find (a zipped pickle, a checkpoint that does not fit its
architecture) fails the job with a typed error, and a finished job cannot be cancelled; the service keeps
serving. Input refused at submission is tested in process: tests/service/test_routes_inprocess.py."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import DIGITS_ARCH, Stack, assert_problem, submit_job, wait_for_job

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c3"]}
FINAL = ("succeeded", "failed", "cancelled")
MARKER = Path("/tmp/gscore-test-pwned-by-pickle")


class Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture()
def client(embedded_stack: Stack) -> httpx.Client:
    with embedded_stack.client() as client:
        yield client
        assert client.get("/healthz").status_code == 200  # still serving


def test_zipped_pickles_are_refused_at_submission(client: httpx.Client, tmp_path: Path) -> None:
    import torch

    zipped = tmp_path / "evil.pt"
    torch.save({"weight": Exploit()}, zipped)
    assert zipfile.is_zipfile(zipped)
    # the pickle's globals are scanned (never unpickled) when the upload arrives
    assert_problem(submit_job(client, zipped, SPEC), 422, "invalid-checkpoint")
    assert not MARKER.exists()


def test_architecture_checkpoint_mismatch(
    client: httpx.Client, digits_checkpoint: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    spec = {**SPEC, "arch": {**DIGITS_ARCH, "width": 16}}
    # safetensors: the header's keys and shapes are checked at submission
    refused = assert_problem(submit_job(client, digits_checkpoint, spec), 422, "checkpoint-mismatch")
    assert refused["detail"]
    # a torch.save zip cannot be read without unpickling: the worker finds the mismatch and fails the job
    pt = tmp_path / "digits.pt"
    torch.save(load_file(str(digits_checkpoint)), pt)
    job = submit_job(client, pt, spec).json()
    failed = wait_for_job(client, job["id"], FINAL)
    assert failed["state"] == "failed" and failed["error"]["type"] == "checkpoint-mismatch", failed
    assert failed["error"]["detail"]


def test_a_job_finished_by_the_worker_cannot_be_cancelled(
    client: httpx.Client, digits_checkpoint: Path
) -> None:
    done = wait_for_job(client, submit_job(client, digits_checkpoint, SPEC).json()["id"], FINAL)
    assert done["state"] == "succeeded"
    assert_problem(client.delete(f"/v1/jobs/{done['id']}"), 409, "job-finished")
