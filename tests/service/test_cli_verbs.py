"""The command line as a newcomer meets it: ``--version``, bare ``gscore``, the measures in ``score --help``,
``rank-file`` (offline) apart from ``ranking`` (a server), and the service verbs (``status``, ``collection``)
run in process against ``create_app`` through FastAPI's TestClient: warnings, hyperparameters, rounding,
near matches for a mistyped collection, and what to do when no server answers."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS_ARCH, free_port
from fastapi import FastAPI
from fastapi.testclient import TestClient

import gscore
from gscore.cli import remote as cli_service
from gscore.cli.main import main as gscore_main
from gscore.client import Client
from gscore.jobstore.dedupe import dedupe_key
from gscore.measures.table import DEFAULT_MEASURES, FAMILIES, MEASURES
from gscore.pipeline import ScoreRequest
from gscore.pipeline import score as score_checkpoint
from gscore.service.app import create_app
from gscore.settings import Settings

SPEC = {"arch": DIGITS_ARCH, "dataset": "digits", "samples_per_class": 10, "measures": ["c1", "c3"]}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cli-verbs"),
        datasets_dir=None,
        storage_dir=None,
        database_url=None,
        broker_url=None,
        device="cpu",
        default_queue="cpu",
    )
    return create_app(settings, run_reaper=False)


@pytest.fixture()
def served(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPI]:
    """The service verbs talk to ``app`` in process (a Client whose transport is the TestClient)."""

    def client(args: Any) -> Client:
        client = Client("http://testserver")
        client._http.close()
        client._http = TestClient(app, base_url="http://testserver")
        return client

    monkeypatch.setattr(cli_service, "_client", client)
    yield app


@pytest.fixture(scope="module")
def untrained_result(digits_checkpoint: Path) -> dict[str, Any]:
    """A real result of the untrained digits CNN: c1 undefined, c3 with a warning, a fit warning."""
    request = ScoreRequest(checkpoint=digits_checkpoint, arch=DIGITS_ARCH, dataset="digits", **_probe())
    return score_checkpoint(request)


def _probe() -> dict[str, Any]:
    return {"measures": SPEC["measures"], "samples_per_class": SPEC["samples_per_class"], "device": "cpu"}


def insert_job(app: FastAPI, state: str, seed: int, **fields: Any) -> str:
    """A job written straight into the table, as a worker leaves it."""
    spec = {**SPEC, "seed": seed}
    values: dict[str, Any] = {
        "queue": "cpu",
        "checkpoint_sha256": "c" * 64,
        "checkpoint_size": 10,
        "spec": spec,
        "dedupe_key": dedupe_key("c" * 64, spec),
        "collection": None,
        "model_name": f"m{seed}",
        "hyperparameters": {},
        "test_accuracy": None,
        "train_accuracy": None,
        "progress_stage": state,
    }
    values.update(fields)
    return app.state.context.repo.create(state=state, **values).id


def test_version_is_the_package_version_in_the_cli_and_the_api(app: FastAPI, capsys) -> None:
    installed = importlib.metadata.version("gscore")
    assert gscore.__version__ == installed
    with pytest.raises(SystemExit) as exit_:
        gscore_main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"gscore {installed}\n"
    with TestClient(app) as client:
        assert client.get("/openapi.json").json()["info"]["version"] == installed


def test_bare_gscore_prints_help(capsys) -> None:
    assert gscore_main([]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: gscore")
    for verb in ("score", "demo", "rank-file", "ranking", "up", "submit", "status", "collection"):
        assert f"\n    {verb} " in captured.out, verb
    assert captured.err == ""


def test_score_help_lists_every_measure(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        gscore_main(["score", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    lines = help_text.split("\nmeasures (--measures", 1)[1].splitlines()  # the epilog
    rows = [line for line in lines if line.startswith("  ") and line.split()[0] in MEASURES]
    listed = {line.split()[0]: line for line in rows}
    assert len(rows) == len(listed) and set(listed) == set(MEASURES)  # each once, grouped by family
    assert f"default: {', '.join(DEFAULT_MEASURES)}," in " ".join(help_text.split())
    for family in FAMILIES:
        members = [name for name, measure in MEASURES.items() if measure.family == family]
        if members:  # the family's header, then its measures
            start = lines.index(f" {family}:")
            assert [line.split()[0] for line in lines[start + 1 : start + 1 + len(members)]] == members
    assert "lower predicts better generalization" in listed["random_sharpness"]
    assert "higher predicts better generalization; needs a label hierarchy" in listed["c1"]


def test_rank_file_is_the_offline_verb_and_rank_a_deprecated_alias(tmp_path: Path, capsys) -> None:
    models = [
        {
            "name": f"m{i}",
            "hyperparameters": {"lr": lr},
            "test_accuracy": acc,
            "train_accuracy": 1.0,
            "scores": {"c3": c3},
        }
        for i, (lr, acc, c3) in enumerate([(0.1, 0.6, 0.2), (0.2, 0.7, 0.3), (0.3, 0.5, 0.1)])
    ]
    path = tmp_path / "models.json"
    path.write_text(json.dumps(models))
    assert gscore_main(["rank-file", str(path), "--json", "--resamples", "0"]) == 0
    new = capsys.readouterr()
    assert new.err == ""
    assert json.loads(new.out)["measures"]["c3"]["tau"] == 1.0
    assert gscore_main(["rank", str(path), "--json", "--resamples", "0"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out
    assert "`gscore rank FILE` is now `gscore rank-file FILE`" in old.err
    assert "`gscore ranking NAME` ranks a server's collection" in old.err
    # the three models form one lr group: psi and total are 1.00 from one group, not "1.00 [1.00, 1.00]"
    assert gscore_main(["rank-file", str(path)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("c3 "))
    assert row.split("  ")[0] == "c3" and "1.00 (1 group)  1.00 (1 group)  1.00 [" in row
    assert "Groups per axis: lr 1" in table


def test_status_shows_scores_statuses_and_warnings(served: FastAPI, untrained_result, capsys) -> None:
    job_id = insert_job(served, "succeeded", seed=1, result=untrained_result)
    assert gscore_main(["status", job_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{job_id} succeeded"
    c1, c3 = untrained_result["status"]["c1"], untrained_result["status"]["c3"]
    assert c1["status"] == "undefined" and c3["warnings"]  # the data behind the claim
    assert f"  {'c1':28s} undefined: {c1['reason']}" in out
    assert f"  {'c3':28s} {untrained_result['scores']['c3']:.6g}" in out
    assert f"  {'':28s} warning: {c3['warnings'][0]}" in out
    (fit_warning,) = untrained_result["meta"]["result_warnings"]
    assert out[-1] == f"  warning: {fit_warning}"


def test_collection_shows_hyperparameters_and_rounds(served: FastAPI, untrained_result, capsys) -> None:
    for seed, hyperparameters in [(2, {"lr": 0.1, "pair": [0.1, 0.0005]}), (3, {"lr": 0.01, "depth": 3})]:
        insert_job(
            served,
            "succeeded",
            seed=seed,
            collection="digits-sweep",
            hyperparameters=hyperparameters,
            test_accuracy=0.912345678,
            train_accuracy=1.0,
            result=untrained_result,
        )
    assert gscore_main(["collection", "digits-sweep"]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["model", "state", "lr", "pair", "depth", "test_acc", "train_acc", "c1", "c3"]
    c3 = f"{untrained_result['scores']['c3']:.4g}"
    assert first.split() == ["m2", "succeeded", "0.1", "(0.1,", "0.0005)", "-", "0.9123", "1", "-", c3]
    assert second.split() == ["m3", "succeeded", "0.01", "-", "3", "0.9123", "1", "-", c3]


def test_a_mistyped_collection_names_the_near_matches(served: FastAPI, untrained_result, capsys) -> None:
    insert_job(served, "succeeded", seed=4, collection="cifar-widths", result=untrained_result)
    with TestClient(served) as client:
        problem = client.get("/v1/collections/Cifar-Width").json()
        assert problem["status"] == 404 and problem["near_matches"] == ["cifar-widths"]
        far = client.get("/v1/collections/zzz").json()
        assert far["near_matches"] == [] and far["detail"] == "no job was submitted to 'zzz'"
    assert gscore_main(["collection", "cifar-widht"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gscore: error: 404 Collection not found: no job was submitted to 'cifar-widht'")
    assert "did you mean 'cifar-widths'?" in err
    assert gscore_main(["ranking", "cifar-width"]) == 2
    assert "did you mean 'cifar-widths'?" in capsys.readouterr().err


def test_cannot_reach_says_how_to_start_or_point_at_a_server(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert gscore_main(["status", "some-job", "--url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gscore: error: cannot reach {url}")
    assert "`gscore up`" in err and "$GSCORE_URL" in err
