"""The CLI a person watches: progress that names the running stage, ``gscore cancel``, ``gscore datasets
upload/list``, quiet output into a reader that closes early, a missing ``--arch`` file called missing,
and error lines that do not repeat their title."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import DIGITS_ARCH, REPO_ROOT, Stack, run_gscore, start_stack, submit_job, wait_for_job
from torch import nn

from gscore.cli.progress import ProgressBar, stage_description
from gscore.client import ServiceError, title_and_detail
from gscore.measures import sharpness
from gscore.measures.table import MEASURES

SHARPNESS_MEASURES = {n: getattr(sharpness, n) for n, m in MEASURES.items() if m.kind == "perturbation"}

JOB_DELAY_SECONDS = 4


def gscore(url: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run_gscore({**os.environ, "GSCORE_URL": url}, *args, **kwargs)


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + worker whose jobs first spend JOB_DELAY_SECONDS in a 'test-delay' stage, second by second."""
    stack = start_stack(
        tmp_path_factory.mktemp("watch"), GSCORE_TEST_JOB_DELAY_SECONDS=str(JOB_DELAY_SECONDS)
    )
    yield stack
    stack.stop()


# ---- progress ---------------------------------------------------------------------------------------
def job(state: str, stage: str | None = None, done: int = 0, total: int = 0) -> dict:
    return {"id": "j", "state": state, "progress": {"stage": stage, "done": done, "total": total}}


def test_progress_bar_names_the_running_stage_and_shows_what_was_reported() -> None:
    out = io.StringIO()
    bar = ProgressBar(file=out)
    for polled in (
        job("queued"),
        job("running", "random_sharpness", 15, 15),
        job("running", "worst_sharpness", 0, 15),
        job("running", "worst_sharpness", 3, 15),
    ):
        bar(polled)
    bar.close()
    text = out.getvalue()
    assert "queued" in text
    worst = text[text.index("running worst_sharpness") :]
    assert "0/15" in worst and "3/15" in worst and "15/15" not in worst
    assert "100%" not in worst
    assert stage_description(job("running", "extract", 5, 10)) == "running extract"
    assert stage_description(job("succeeded", "c4", 1, 1)) == "succeeded"


class CountingModel(nn.Module):
    """A linear classifier counting the forward passes of it and its copies (the measures use a copy)."""

    forwards = 0

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingModel.forwards += 1
        return self.linear(x)


@pytest.mark.parametrize("name", list(SHARPNESS_MEASURES))
def test_a_sharpness_stage_starts_before_its_first_evaluation(name: str) -> None:
    """The engine reports a sharpness measure's stage (0 of its steps) before its set-up runs the model, so
    the measure running is the one shown (not the previous one at 15/15 for the set-up's duration)."""
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    model = CountingModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    CountingModel.forwards = 0
    calls: list[tuple[int, int, int]] = []  # (done, total, forwards so far)
    SHARPNESS_MEASURES[name](
        model, x, y, steps=4, progress=lambda done, total: calls.append((done, total, CountingModel.forwards))
    )
    assert calls[0] == (0, 4, 0)
    assert calls[-1][:2] == (4, 4) and calls[-1][2] > 0


def test_status_wait_shows_the_stage_while_the_job_runs(slow_stack: Stack, digits_checkpoint: Path) -> None:
    with slow_stack.client() as client:
        response = submit_job(
            client,
            digits_checkpoint,
            {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"], "seed": 41},
        )
        job_id = response.json()["id"]
    watched = gscore(slow_stack.url, "status", job_id, "--wait")
    assert watched.returncode == 0, watched.stderr
    assert f"/{JOB_DELAY_SECONDS}" in watched.stderr and "running test-delay" in watched.stderr
    assert watched.stdout.startswith(f"{job_id} succeeded")


# ---- cancel -----------------------------------------------------------------------------------------
def test_cancel_a_running_job_then_a_finished_one(slow_stack: Stack, digits_checkpoint: Path) -> None:
    with slow_stack.client() as client:
        response = submit_job(
            client,
            digits_checkpoint,
            {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"], "seed": 42},
        )
        job_id = response.json()["id"]
        wait_for_job(client, job_id, ("running",), timeout=60)
        cancelled = gscore(slow_stack.url, "cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.startswith(job_id) and "cancel" in cancelled.stdout
        assert wait_for_job(client, job_id, ("cancelled", "succeeded", "failed"))["state"] == "cancelled"
    again = gscore(slow_stack.url, "cancel", job_id)  # cancelling a cancelled job again is harmless
    assert again.returncode == 0 and again.stdout == f"{job_id} cancelled\n"
    with slow_stack.client() as client:
        response = submit_job(
            client,
            digits_checkpoint,
            {"arch": DIGITS_ARCH, "dataset": "digits", "measures": ["c3"], "seed": 43},
        )
        finished_id = wait_for_job(client, response.json()["id"], ("succeeded",))["id"]
    finished = gscore(slow_stack.url, "cancel", finished_id)
    assert finished.returncode == 2
    assert finished.stderr.strip() == (
        f"gscore: error: 409 Job already finished: job {finished_id} is succeeded; "
        "only queued or running jobs can be cancelled"
    )
    missing = gscore(slow_stack.url, "cancel", "no-such-job")
    assert missing.returncode == 2 and "404 Job not found" in missing.stderr


# ---- datasets ---------------------------------------------------------------------------------------
def test_datasets_upload_and_list(slow_stack: Stack, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny-probe.npz"
    np.savez(path, x=rng.random((12, 1, 8, 8), dtype=np.float32), y=np.arange(12) % 3, sub=np.arange(12) % 6)
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    uploaded = gscore(slow_stack.url, "datasets", "upload", str(path), "--name", name)
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stdout.startswith(f"uploaded {name}: 3 classes, 6 subclasses, samples train 12")

    listed = gscore(slow_stack.url, "datasets", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split("\t") == ["name", "source", "installed", "classes", "subclasses", "samples", "sha256"]
    ours = [row.split("\t") for row in rows if row.startswith(name + "\t")]
    assert ours and ours[0][:6] == [name, "uploaded", "yes", "3", "6", "train 12"]
    assert any(row.split("\t")[:2] == ["digits", "builtin"] for row in rows)
    as_json = json.loads(gscore(slow_stack.url, "datasets", "list", "--json").stdout)
    assert {d["name"] for d in as_json} >= {name, "digits"}

    missing = gscore(slow_stack.url, "datasets", "upload", str(tmp_path / "nope.npz"))
    assert missing.returncode == 2 and "is missing (no such file)" in missing.stderr
    assert "Traceback" not in missing.stderr


# ---- pipes, missing files, error lines --------------------------------------------------------------
def test_output_into_a_reader_that_closed_early_ends_quietly(slow_stack: Stack) -> None:
    """The reader of stdout is gone before the CLI writes (``gscore datasets list | head -0``): no
    BrokenPipe traceback, no 'Exception ignored' line, the shell's SIGPIPE exit status."""
    env = {**os.environ, "GSCORE_URL": slow_stack.url}
    process = subprocess.Popen(
        [sys.executable, "-m", "gscore.cli", "datasets", "list"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader closes before the first byte is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert stderr == ""


def test_output_piped_into_head_ends_quietly(slow_stack: Stack) -> None:
    piped = subprocess.run(
        f"{sys.executable} -m gscore.cli datasets list --json | head -n 1",
        shell=True,
        cwd=REPO_ROOT,
        env={**os.environ, "GSCORE_URL": slow_stack.url},
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert piped.stdout == "[\n" and "Traceback" not in piped.stderr and "Broken" not in piped.stderr


def test_a_missing_arch_file_is_called_missing(slow_stack: Stack, digits_checkpoint: Path) -> None:
    started = time.monotonic()
    result = gscore(
        slow_stack.url, "submit", str(digits_checkpoint), "--arch", "arch.json", "--dataset", "digits"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gscore: error: Invalid spec: --arch file 'arch.json' is missing "
        "(no such file; give a JSON file's path or JSON text)"
    )
    assert time.monotonic() - started < 60
    not_json = gscore(
        slow_stack.url, "submit", str(digits_checkpoint), "--arch", "{oops", "--dataset", "digits"
    )
    assert not_json.returncode == 2 and "neither valid JSON" in not_json.stderr


def test_error_lines_do_not_repeat_their_title() -> None:
    title = "Checkpoint does not match the architecture"
    detail = "checkpoint does not match the architecture: missing key features.0.weight"
    assert title_and_detail(title, detail) == detail
    assert title_and_detail("Job not found", "no job with id 'x'") == "Job not found: no job with id 'x'"
    assert title_and_detail("Job not found", "") == "Job not found"
    error = ServiceError(422, {"title": title, "detail": detail})
    assert str(error) == f"422 {detail}" and str(error).lower().count("does not match") == 1


def test_a_failed_job_prints_its_error_once(slow_stack: Stack, tmp_path: Path) -> None:
    import torch

    from gscore.models import build_model

    # a torch.save file: its keys cannot be checked at submission, so the worker fails the job
    wrong = tmp_path / "wider.pt"
    torch.save(build_model({**DIGITS_ARCH, "width": 4}).state_dict(), wrong)
    result = gscore(
        slow_stack.url,
        "submit",
        str(wrong),
        "--arch",
        json.dumps(DIGITS_ARCH),
        "--dataset",
        "digits",
        "--wait",
    )
    assert result.returncode == 1
    with slow_stack.client() as client:
        failed = client.get(f"/v1/jobs/{result.stdout.split()[0]}").json()
    error_line = [line for line in result.stderr.splitlines() if failed["error"]["detail"] in line]
    assert error_line == [f"  {title_and_detail(failed['error']['title'], failed['error']['detail'])}"]
