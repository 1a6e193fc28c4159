"""End to end: the digits experiment (--quick) against a real embedded service, the ranking
endpoint equal to the offline `gscore rank`, the plot endpoint, and the `gscore ranking` verb."""

from __future__ import annotations

import io
import json
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT, Stack
from PIL import Image

from gscore.cli.main import main as gscore_main
from gscore.ranking.plots import tau_text

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
    trained = json.loads((out_dir / "models.json").read_text())
    fitted = [r for r in trained if r["train_accuracy"] >= ranking["min_train_accuracy"]]
    assert ranking["n_left_out"] == len(trained) - len(fitted)
    for name, row in ranking["measures"].items():
        # a coefficient, or a reason (underfit models left out, a measure not ok, a constant target)
        for key in ["tau", *varied, "total"]:
            value = row["tau"] if key == "tau" else row["psi"][key]
            if value is None:
                assert row["why"][key] and row["ci_low"][key] is None, (name, key)
            else:
                assert row["ci_low"][key] <= value <= row["ci_high"][key], (name, key)
        assert row["n_models"] <= len(fitted)
        assert sorted(r["name"] for r in row["ranking"]) == sorted(r["name"] for r in trained)
        ranked = [r for r in row["ranking"] if r["rank"] is not None]
        assert [r["rank"] for r in ranked] == sorted(r["rank"] for r in ranked)
    # every quick-grid model has at most 24 neurons <= k = 30: c1 is 0 by construction, never ranked
    assert ranking["measures"]["c1"]["tau"] is None and ranking["measures"]["c1"]["why"]["tau"]
    header = next(line for line in table.splitlines() if line.startswith("measure")).split()
    assert header[0] == "measure" and "total" in header and "tau" in header
    assert all(any(line.startswith(m + " ") for line in table.splitlines()) for m in ["c1", "c2", "c3", "c4"])


def test_http_ranking_equals_offline_rank(quick_zoo, embedded_stack: Stack, tmp_path, capsys):
    collection, out_dir, _ = quick_zoo
    with embedded_stack.client() as http:
        models = http.get(f"/v1/collections/{collection}").json()["models"]
        results = {m["job_id"]: http.get(f"/v1/jobs/{m['job_id']}").json()["result"] for m in models}
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
                    "status": results[m["job_id"]].get("status") or {},
                    "meta": {
                        key: results[m["job_id"]]["meta"].get(key) for key in ("split", "probe_accuracy")
                    },
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


def test_ranking_protocol_and_interval_query_parameters(
    quick_zoo, embedded_stack: Stack, capsys, monkeypatch
):
    collection, out_dir, _ = quick_zoo
    trained = {r["name"]: r for r in json.loads((out_dir / "models.json").read_text())}
    # leaves out the least fitted model (none if every model reached 1.0)
    strict = min(1.0, min(r["train_accuracy"] for r in trained.values()) + 1e-9)
    base = f"/v1/collections/{collection}/ranking"
    with embedded_stack.client() as http:
        everyone = http.get(base, params={"min_train_accuracy": 0, "measures": "c3"}).json()
        tight = http.get(base, params={"min_train_accuracy": strict, "measures": "c3", "seed": 4}).json()
        again = http.get(base, params={"min_train_accuracy": strict, "measures": "c3", "seed": 4}).json()
        bare = http.get(base, params={"measures": "c3", "n_resamples": 0, "level": 0.9}).json()
        too_high = http.get(base, params={"min_train_accuracy": 1.5})
        bad_level = http.get(base, params={"level": 1})
    assert everyone["n_left_out"] == 0 and everyone["measures"]["c3"]["n_models"] == len(trained)
    expected_out = sorted(name for name, r in trained.items() if r["train_accuracy"] < strict)
    assert (
        sorted(m["name"] for m in tight["left_out"])
        == expected_out
        == sorted(m["name"] for m in tight["left_out"])
    )
    assert tight["n_left_out"] == len(expected_out)
    rows = {row["name"]: row for row in tight["measures"]["c3"]["ranking"]}
    assert all(
        rows[name]["rank"] is None and "below min_train_accuracy" in rows[name]["reason"]
        for name in expected_out
    )
    assert tight == again  # seeded intervals
    assert bare["bootstrap"] == {"level": 0.9, "n_resamples": 0, "seed": 0}
    assert set(bare["measures"]["c3"]["ci_low"].values()) == {None}
    assert too_high.status_code == 422 and bad_level.status_code == 422
    monkeypatch.setenv("GSCORE_URL", embedded_stack.url)
    out = _cli_csv(capsys, collection, strict)
    assert out[0] == "measure,rank,name,score,test_accuracy,train_accuracy,in_coefficients,reason"
    assert len(out) == 1 + 2  # header and the two best models


def _cli_csv(capsys, collection: str, strict: float) -> list[str]:
    args = ["ranking", collection, "--format", "csv", "--top", "2", "--measures", "c3"]
    assert gscore_main([*args, "--min-train-accuracy", str(strict)]) == 0
    return capsys.readouterr().out.splitlines()


def test_table_verb_reports_unreachable_service(capsys, monkeypatch):
    monkeypatch.setenv("GSCORE_URL", "http://127.0.0.1:9")
    assert gscore_main(["ranking", "x"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def png_title(response: httpx.Response) -> str:
    """The Title text chunk of a PNG answer (``plot_measures`` writes the panels' titles there)."""
    return Image.open(io.BytesIO(response.content)).text["Title"]


def test_plot_titles_follow_the_rankings_protocol_parameters(
    quick_zoo, embedded_stack: Stack, tmp_path, capsys
):
    """The plot endpoint takes the ranking's min_train_accuracy/level/n_resamples/seed (its titles show tau,
    its interval and the interval's level, and equal the ranking's own), and `gscore ranking --plot` passes
    the ones it ranked with. Titles are read from the PNG's Title text, not compared as pixels: two levels
    may give the same interval on a small collection."""
    collection, _, _ = quick_zoo
    with embedded_stack.client() as http:
        url = f"/v1/collections/{collection}/plot.png"
        default = http.get(url, params={"measure": "c3"})
        explicit = http.get(url, params={"measure": "c3", "level": 0.95, "n_resamples": 1000, "seed": 0})
        narrower = http.get(url, params={"measure": "c3", "level": 0.5})
        bad = http.get(url, params={"measure": "c3", "level": 1.5})
        ranking = http.get(f"/v1/collections/{collection}/ranking", params={"measures": "c3", "level": 0.5})
    assert default.status_code == explicit.status_code == narrower.status_code == ranking.status_code == 200
    entry = ranking.json()["measures"]["c3"]
    assert png_title(default) == png_title(explicit), "level 0.95 and 1,000 resamples are the defaults"
    assert "95% CI" in png_title(default) and "50% CI" in png_title(narrower), png_title(narrower)
    drawn_left_out = sum(  # plotted (score and test accuracy) but not counted: the protocol's
        not row["in_coefficients"] and row["score"] is not None and row["test_accuracy"] is not None
        for row in entry["ranking"]
    )
    left_out = f"; {drawn_left_out} left out: train acc < 0.99" if drawn_left_out else ""
    expected = f"c3\n{tau_text(entry, 0.5)}\nn = {entry['n_models']}{left_out}"
    assert png_title(narrower) == expected, "as the ranking"
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    plots = tmp_path / "plots"
    argv = [
        "ranking",
        collection,
        "--url",
        embedded_stack.url,
        "--measures",
        "c3",
        "--json",
        "--level",
        "0.5",
    ]
    assert gscore_main([*argv, "--plot", str(plots)]) == 0
    capsys.readouterr()
    assert (plots / "c3.png").read_bytes() == narrower.content
