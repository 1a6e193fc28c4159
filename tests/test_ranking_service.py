"""Issue 5 end to end: the digits experiment (--quick) against a real embedded service, the ranking
endpoint equal to the offline `gscore rank`, the plot endpoint, and the `gscore ranking` verb."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from conftest import REPO_ROOT, Stack

from gscore.cli import main as gscore_main

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import digits_zoo  # noqa: E402


@pytest.fixture(scope="module")
def quick_zoo(embedded_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """Run the experiment's quick grid once; returns (collection, output dir, printed table)."""
    collection = f"zoo-{uuid.uuid4().hex[:6]}"
    out_dir = tmp_path_factory.mktemp("zoo")
    code = digits_zoo.main(
        [
            "--url",
            embedded_stack.url,
            "--quick",
            "--out",
            str(out_dir),
            "--collection",
            collection,
            "--max-epochs",
            "25",
            "--measures",
            "c1,c2,c3,c4",
            "--table-file",
            str(out_dir / "table.txt"),
        ]
    )
    assert code == 0
    return collection, out_dir, (out_dir / "table.txt").read_text()


def test_quick_experiment_produces_a_complete_table(quick_zoo):
    _, out_dir, table = quick_zoo
    ranking = json.loads((out_dir / "ranking.json").read_text())
    assert ranking["n_models"] == ranking["n_models_with_target"] == len(digits_zoo.quick_grid())
    assert list(ranking["measures"]) == ["c1", "c2", "c3", "c4"]
    varied = {"learning_rate", "weight_decay", "batch_size", "dropout", "width"}
    for name, row in ranking["measures"].items():
        assert row["tau"] is not None and -1 <= row["tau"] <= 1, name
        for axis in varied:  # every axis the quick grid varies has a group, hence a coefficient or a reason
            assert row["groups"][axis] >= 1, (name, axis)
            if row["psi"][axis] is None:  # e.g. two models with the same test accuracy: said, not NaN
                assert "does not change" in row["why"][axis], (name, axis, row["why"])
            else:
                assert -1 <= row["psi"][axis] <= 1
        assert row["psi"]["total"] is not None
        assert sorted(row["ranking"]) == sorted(
            r["name"] for r in json.loads((out_dir / "models.json").read_text())
        )
    header = table.splitlines()[1].split()
    assert header[0] == "measure" and "total" in header and "tau" in header
    assert all(any(line.startswith(m + " ") for line in table.splitlines()) for m in ["c1", "c2", "c3", "c4"])


def test_http_ranking_equals_offline_rank(quick_zoo, embedded_stack: Stack, tmp_path, capsys):
    collection, out_dir, _ = quick_zoo
    with embedded_stack.client() as http:
        models = http.get(f"/v1/collections/{collection}").json()["models"]
        online = http.get(
            f"/v1/collections/{collection}/ranking", params={"target": "generalization_gap"}
        ).json()
    offline_file = tmp_path / "models.json"
    offline_file.write_text(
        json.dumps(
            [
                {
                    "name": m["model_name"],
                    "hyperparameters": m["hyperparameters"],
                    "scores": m["scores"],
                    "test_accuracy": m["test_accuracy"],
                    "train_accuracy": m["train_accuracy"],
                }
                for m in models
            ]
        )
    )
    assert gscore_main(["rank", str(offline_file), "--json", "--target", "generalization_gap"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert online.pop("not_scored") == []
    assert online == offline
    # and the experiment's own stored records agree with what the service holds
    trained = {r["name"]: r for r in json.loads((out_dir / "models.json").read_text())}
    for m in models:
        assert m["test_accuracy"] == pytest.approx(trained[m["model_name"]]["test_accuracy"])
        assert m["hyperparameters"] == trained[m["model_name"]]["hyperparameters"]


def test_ranking_verb_and_plot_endpoint(quick_zoo, embedded_stack: Stack, tmp_path, capsys, monkeypatch):
    collection, _, _ = quick_zoo
    monkeypatch.setenv("GSCORE_URL", embedded_stack.url)
    plots = tmp_path / "plots"
    assert gscore_main(["ranking", collection, "--json", "--measures", "c3,c4", "--plot", str(plots)]) == 0
    via_cli = json.loads(capsys.readouterr().out)
    with embedded_stack.client() as http:
        via_http = http.get(f"/v1/collections/{collection}/ranking", params={"measures": "c3,c4"}).json()
        png = http.get(f"/v1/collections/{collection}/plot.png", params={"measure": "c3"})
        missing = http.get("/v1/collections/no-such-collection/ranking")
        bad_target = http.get(f"/v1/collections/{collection}/ranking", params={"target": "loss"})
        absent = http.get(f"/v1/collections/{collection}/ranking", params={"measures": "c3,zz"})
        absent_plot = http.get(f"/v1/collections/{collection}/plot.png", params={"measure": "zz"})
    assert via_cli == via_http and list(via_cli["measures"]) == ["c3", "c4"]
    assert sorted(p.name for p in plots.iterdir()) == ["c3.png", "c4.png"]
    assert (plots / "c3.png").read_bytes().startswith(b"\x89PNG")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert bad_target.status_code == 422
    for response, field in ((absent, "measures"), (absent_plot, "measure")):
        problem = response.json()
        assert response.status_code == 422 and problem["type"] == "unknown-measure", problem
        assert problem["field"] == field and "'zz'" in problem["detail"] and "c3" in problem["detail"]


def test_table_verb_reports_unreachable_service(capsys, monkeypatch):
    monkeypatch.setenv("GSCORE_URL", "http://127.0.0.1:9")
    assert gscore_main(["ranking", "x"]) == 2
    assert "cannot reach" in capsys.readouterr().err
