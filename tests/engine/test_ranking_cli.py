"""`gscore rank FILE` output formats and options, and the pandas views of ranking/collection documents."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from gscore.cli.main import main as gscore_main
from gscore.ranking.frames import CollectionResult, RankingResult
from gscore.ranking.kendall import DEFAULT_MIN_TRAIN_ACCURACY, ModelRecord, rank_collection

REPO_ROOT = Path(__file__).parents[2]


def _models() -> list[dict[str, Any]]:
    """Six models over (lr, bs); 'under' never fitted its training data, 'probe' was measured on it."""
    rows = [
        ("a1", 1, 32, 1.0, 0.50, 1.0),
        ("a2", 2, 32, 2.0, 0.60, 1.0),
        ("b1", 1, 64, 4.0, 0.70, 0.995),
        ("b2", 2, 64, 3.0, 0.80, 1.0),
        ("under", 3, 64, 9.0, 0.40, 0.79),
    ]
    models = [
        {
            "name": name,
            "hyperparameters": {"lr": lr, "bs": bs},
            "scores": {"c3": c3, "c1": None},
            "status": {"c1": {"status": "undefined", "reason": "k >= neurons"}},
            "test_accuracy": test,
            "train_accuracy": train,
            "checkpoint": f"/tmp/{name}.safetensors",  # the experiment's own fields are ignored
            "arch": {"family": "cnn"},
            "epochs": 3,
            "seconds": 0.5,
        }
        for name, lr, bs, c3, test, train in rows
    ]
    models.append(
        {
            "name": "probe",
            "hyperparameters": {"lr": 3, "bs": 32},
            "scores": {"c3": 0.5},
            "test_accuracy": 0.3,
            "meta": {"split": "train", "probe_accuracy": 1.0},
        }
    )
    return models


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(_models()))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert gscore_main(list(argv)) == 0
    return capsys.readouterr().out


def test_cli_default_matches_the_library() -> None:
    from gscore.cli.main import build_parser

    args = build_parser().parse_args(["rank", "x.json"])
    assert args.min_train_accuracy == DEFAULT_MIN_TRAIN_ACCURACY == 0.99
    assert (args.level, args.resamples, args.seed, args.format, args.top) == (0.95, 1000, 0, "table", None)


def test_rank_json_applies_the_protocol(models_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = json.loads(_run(capsys, "rank", str(models_file), "--format", "json", "--seed", "3"))
    assert result["n_left_out"] == 1 and result["left_out"][0]["name"] == "under"
    c3 = result["measures"]["c3"]
    assert c3["n_models"] == 5  # the four fitted models and 'probe' (measured on the train split)
    ranked = [(row["rank"], row["name"]) for row in c3["ranking"]]
    assert ranked == [(1, "b1"), (2, "b2"), (3, "a2"), (4, "a1"), (5, "probe"), (None, "under")]
    assert c3["ci_low"]["tau"] <= c3["tau"] <= c3["ci_high"]["tau"]
    assert result["measures"]["c1"]["n_skipped"] == 6
    everyone = json.loads(_run(capsys, "rank", str(models_file), "--json", "--min-train-accuracy", "0"))
    assert everyone["n_left_out"] == 0 and everyone["measures"]["c3"]["n_models"] == 6
    assert (
        everyone["measures"]["c3"]["ranking"][0]["name"] == "under"
    )  # c3 9.0: ranked first without the protocol
    top = json.loads(_run(capsys, "rank", str(models_file), "--json", "--top", "2", "--resamples", "0"))
    assert [row["name"] for row in top["measures"]["c3"]["ranking"]] == ["b1", "b2"]
    assert top["measures"]["c3"]["ci_low"]["tau"] is None


def test_rank_csv(models_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(_run(capsys, "rank", str(models_file), "--format", "csv"))))
    assert list(rows[0]) == [
        "measure",
        "rank",
        "name",
        "score",
        "test_accuracy",
        "train_accuracy",
        "in_coefficients",
        "reason",
    ]
    c3 = [row for row in rows if row["measure"] == "c3"]
    assert [row["name"] for row in c3] == ["b1", "b2", "a2", "a1", "probe", "under"]
    assert c3[0] == {
        "measure": "c3",
        "rank": "1",
        "name": "b1",
        "score": "4.0",
        "test_accuracy": "0.7",
        "train_accuracy": "0.995",
        "in_coefficients": "True",
        "reason": "",
    }
    assert c3[-1]["rank"] == "" and "below min_train_accuracy 0.99" in c3[-1]["reason"]
    c1 = [row for row in rows if row["measure"] == "c1"]
    assert [row["reason"] for row in c1] == ["c1 undefined: k >= neurons"] * 4 + ["no c1 score"] + [
        "c1 undefined: k >= neurons"
    ]
    top = list(
        csv.DictReader(io.StringIO(_run(capsys, "rank", str(models_file), "--format", "csv", "--top", "1")))
    )
    assert [(row["measure"], row["name"]) for row in top] == [("c1", "a1"), ("c3", "b1")]


def test_rank_table(models_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "rank", str(models_file), "--top", "3")
    lines = out.splitlines()
    assert lines[1].split() == ["measure", "lr", "bs", "total", "tau", "n"]
    c3_line = next(line for line in lines if line.startswith("c3 "))
    assert "0.80 [" in c3_line  # tau of the five counted models: 9 concordant pairs, 1 discordant (b1-b2)
    assert "Protocol: 5 of 6 models reached training accuracy >= 0.99; 1 left out" in out
    assert "c3 (higher predicts better generalization): 5 of 6 models ranked" in out
    rank_lines = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [cells[:2] for cells in rank_lines if cells[1] in {"b1", "b2", "a2"}] == [
        ["1", "b1"],
        ["2", "b2"],
        ["3", "a2"],
    ]
    assert "3 more (drop --top to see them)" in out


def test_rank_reads_the_experiments_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    """The stored experiment file (records with their job's scores, status and meta) reproduces the
    service's ranking offline, intervals included."""
    results = REPO_ROOT / "experiments/results"
    assert gscore_main(["rank", str(results / "digits_zoo_models.json"), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    online = json.loads((results / "digits_zoo_ranking.json").read_text())
    assert offline["n_models"] == online["n_models"] == 96
    assert offline["n_left_out"] == online["n_left_out"]
    for name, row in online["measures"].items():
        for key in ("tau", "psi", "ci_low", "ci_high"):
            assert offline["measures"][name][key] == pytest.approx(row[key], abs=1e-12), (name, key)


def test_rank_says_when_a_file_has_no_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A models.json without scores: a clear word on stderr, no crash."""
    stored = json.loads((REPO_ROOT / "experiments/results/digits_zoo_models.json").read_text())
    bare = tmp_path / "models.json"
    bare.write_text(
        json.dumps([{k: v for k, v in r.items() if k not in ("scores", "status", "meta")} for r in stored])
    )
    assert gscore_main(["rank", str(bare), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_models"] == 96
    assert "has scores" in captured.err


def test_rank_bad_options(models_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gscore_main(["rank", str(models_file), "--min-train-accuracy", "2"]) == 2
    assert "min_train_accuracy must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gscore_main(["rank", str(models_file), "--top", "0"])


# ----------------------------------------------------------------------------- pandas


def test_ranking_to_pandas() -> None:
    pytest.importorskip("pandas")
    records = [
        ModelRecord("a", {"lr": 1}, {"c3": 1.0}, 0.5, 1.0),
        ModelRecord("b", {"lr": 2}, {"c3": 2.0}, 0.7, 1.0),
        ModelRecord("c", {"lr": 3}, {"c3": 3.0}, 0.6, 0.5),
    ]
    result = RankingResult(rank_collection(records, seed=2))
    models = result.to_pandas()
    assert list(models["name"]) == ["b", "a", "c"] and list(models["measure"]) == ["c3"] * 3
    assert models.loc[0, "rank"] == 1 and not models.loc[2, "in_coefficients"]
    coefficients = result.to_pandas("coefficients").set_index("coefficient")
    assert coefficients.loc["tau", "value"] == 1.0 and coefficients.loc["tau", "n"] == 2
    assert coefficients.loc["tau", "ci_low"] == result["measures"]["c3"]["ci_low"]["tau"]
    assert (coefficients.loc["lr", "value"], coefficients.loc["lr", "n"]) == (1.0, 1)  # 'c' left out
    with pytest.raises(ValueError, match="models"):
        result.to_pandas("groups")


def test_collection_to_pandas() -> None:
    pytest.importorskip("pandas")
    collection = CollectionResult(
        {
            "name": "sweep",
            "models": [
                {
                    "job_id": "j1",
                    "model_name": "a",
                    "state": "succeeded",
                    "test_accuracy": 0.5,
                    "train_accuracy": 1.0,
                    "hyperparameters": {"lr": 0.1, "c3": "clash"},
                    "scores": {"c3": 1.5, "c1": None},
                },
                {
                    "job_id": "j2",
                    "model_name": "b",
                    "state": "queued",
                    "test_accuracy": None,
                    "train_accuracy": None,
                    "hyperparameters": {"bs": 32},
                    "scores": None,
                },
            ],
        }
    )
    frame = collection.to_pandas()
    assert list(frame.columns) == [
        "model_name",
        "job_id",
        "state",
        "test_accuracy",
        "train_accuracy",
        "lr",
        "hp.c3",
        "bs",
        "c1",
        "c3",
    ]
    assert frame.loc[0, "c3"] == 1.5 and frame.loc[0, "hp.c3"] == "clash" and frame.loc[1, "bs"] == 32
    assert json.loads(json.dumps(collection))["name"] == "sweep"  # still a plain dict
