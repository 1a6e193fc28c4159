"""Uploaded dataset names are per owner: two teams may both have a "probe", neither learns of the other's
(no 409 across owners), and each job resolves its own team's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gscore.errors import DatasetError
from gscore.jobstore.datasets_repo import DatasetNameTaken, DatasetsRepo
from gscore.jobstore.db import make_session_factory
from gscore.jobstore.storage import Storage

BUILTINS = ("digits",)


@pytest.fixture()
def repo(tmp_path: Path) -> DatasetsRepo:
    return DatasetsRepo(make_session_factory(f"sqlite:///{tmp_path / 'db.sqlite'}"), Storage(tmp_path / "s"))


def test_two_owners_may_use_one_name_and_each_resolves_their_own(repo: DatasetsRepo) -> None:
    a, created_a = repo.add("probe", "a" * 64, 10, {}, owner="team-a")
    b, created_b = repo.add("probe", "b" * 64, 20, {}, owner="team-b")
    assert created_a and created_b and (a.scope, b.scope) == ("team-a", "team-b")
    assert repo.add("probe", "b" * 64, 20, {}, owner="team-b")[1] is False  # the same upload again
    with pytest.raises(DatasetNameTaken):
        repo.add("probe", "c" * 64, 30, {}, owner="team-a")  # the owner's own name, other content
    assert repo.resolve("probe", BUILTINS, "team-a", "team-a")[0] == "a" * 64
    assert repo.resolve("probe", BUILTINS, "team-b", "team-b")[0] == "b" * 64
    assert [d.owner for d in repo.all("team-b")] == ["team-b"]
    with pytest.raises(DatasetError, match="uploaded datasets are none"):  # team-c learns nothing
        repo.resolve("probe", BUILTINS, "team-c", "team-c")


def test_a_caller_who_sees_everything_gets_their_own_first_then_the_oldest(repo: DatasetsRepo) -> None:
    repo.add("probe", "a" * 64, 10, {}, owner="team-a")
    repo.add("probe", "b" * 64, 10, {}, owner="team-b")
    assert repo.get("probe", visible_to=None, owner="admin").sha256 == "a" * 64  # an admin key: the oldest
    repo.add("probe", "d" * 64, 10, {}, owner="admin")
    assert repo.get("probe", visible_to=None, owner="admin").sha256 == "d" * 64
    keyless, created = repo.add("probe", "e" * 64, 10, {}, owner=None)  # no keys: scope ''
    assert created and keyless.scope == "" and repo.get("probe").sha256 == "e" * 64
