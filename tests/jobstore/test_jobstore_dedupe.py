"""The one duplicate-job check (``gscore.jobstore.dedupe``) on a real SQLite job table."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gscore.jobstore.db import make_session_factory
from gscore.jobstore.dedupe import dedupe_key, duplicate_result
from gscore.jobstore.jobs_repo import JobsRepo

SPEC = {"arch": {"family": "cnn"}, "dataset": "digits", "seed": 0}


def make_repo(tmp_path: Path) -> JobsRepo:
    return JobsRepo(make_session_factory(f"sqlite:///{tmp_path / 'jobs.db'}"))


def add_job(repo: JobsRepo, state: str, key: str, result: dict | None) -> str:
    return repo.create(
        state=state,
        queue="cpu",
        checkpoint_sha256="a" * 64,
        checkpoint_size=1,
        spec=SPEC,
        dedupe_key=key,
        collection=None,
        model_name="m",
        hyperparameters={},
        result=result,
    ).id


def test_dedupe_key_is_the_sha256_of_the_canonical_json() -> None:
    canonical = '{"checkpoint":"abc","spec":{"arch":{"family":"cnn"},"dataset":"digits","seed":0}}'
    assert dedupe_key("abc", SPEC) == hashlib.sha256(canonical.encode()).hexdigest()
    assert dedupe_key("abc", dict(reversed(SPEC.items()))) == dedupe_key("abc", SPEC)  # key order is moot
    assert dedupe_key("abc", {**SPEC, "seed": 1}) != dedupe_key("abc", SPEC)


def test_only_an_earlier_succeeded_job_with_a_result_answers(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    key = dedupe_key("a" * 64, SPEC)
    assert duplicate_result(repo, key) is None
    add_job(repo, "failed", key, None)
    add_job(repo, "queued", key, None)
    assert duplicate_result(repo, key) is None
    result = {"scores": {"c3": 0.5}, "meta": {"samples": 100}}
    first = add_job(repo, "succeeded", key, result)
    add_job(repo, "succeeded", key, {"scores": {"c3": 0.9}, "meta": {}})  # a later one: the oldest answers
    assert duplicate_result(repo, key) == {
        "scores": {"c3": 0.5},
        "meta": {"samples": 100, "deduplicated_from": first},
    }
    assert duplicate_result(repo, key, excluding_job_id=first) is None  # a job never answers for itself
    assert duplicate_result(repo, dedupe_key("b" * 64, SPEC)) is None
    assert result == {"scores": {"c3": 0.5}, "meta": {"samples": 100}}  # the stored result is not mutated
