"""``gscore.integrations.mlflow`` read back from a real MLflow tracking store (SQLite): a ranking's run holds
the ranking JSON equal to the document, its CSV and plots, and every coefficient with its interval as metrics
equal to the JSON's; a result's scores, statuses and meta land as metrics, params and tags. The CLI's
``gscore ranking --mlflow-experiment`` runs against a real service in tests/stack/test_pipelines_stack.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from pipelines_lib import expected_mlflow_metrics  # noqa: E402

from gscore.integrations.mlflow import log_ranking, log_result  # noqa: E402
from gscore.ranking.kendall import rank_collection  # noqa: E402
from gscore.ranking.output import ranking_csv  # noqa: E402
from gscore.ranking.plots import plot_measures  # noqa: E402
from gscore.ranking.records import parse_rank_records  # noqa: E402

MODELS = [
    {
        "name": f"lr{lr}-bs{bs}",
        "hyperparameters": {"lr": lr, "batch_size": bs},
        "test_accuracy": acc,
        "train_accuracy": 1.0,
        "scores": {"c3": c3, "c4": c4},
    }
    for lr, bs, acc, c3, c4 in [
        (0.1, 64, 0.91, 0.62, 1.5),
        (0.1, 128, 0.89, 0.55, 1.1),
        (0.01, 64, 0.86, 0.41, 1.9),
        (0.01, 128, 0.84, 0.38, 0.7),
        (0.001, 64, 0.80, 0.20, 1.2),
        (0.001, 128, 0.79, 0.25, 0.9),
    ]
]


@pytest.fixture()
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """A local file tracking store (MLflow's SQLite store spends 7 s creating its schema)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(previous)


def test_ranking_read_back_from_the_store_equals_the_ranking_json(
    tracking: MlflowClient, tmp_path: Path
) -> None:
    records = parse_rank_records(MODELS)
    ranking = json.loads(json.dumps(rank_collection(records, n_resamples=200, seed=3)))
    plots = {m: plot_measures(records, [m], ranking=ranking) for m in ranking["measures"]}
    run_id = log_ranking(ranking, "model-selection", collection="sweep", plots=plots)

    run = tracking.get_run(run_id)
    assert tracking.get_experiment(run.info.experiment_id).name == "model-selection"
    expected = expected_mlflow_metrics(ranking)
    assert "c3/psi_lr" in expected and "c3/tau_ci_high" in expected and "c4/psi_total" in expected
    assert run.data.metrics == pytest.approx(expected, rel=0, abs=0)
    assert run.data.params["gscore/collection"] == "sweep"
    assert run.data.params["gscore/bootstrap_resamples"] == "200"
    assert run.data.params["gscore/axes"] == ",".join(ranking["axes"])

    out = Path(tracking.download_artifacts(run_id, "", str(tmp_path / "artifacts")))
    assert json.loads((out / "ranking.json").read_text()) == ranking
    assert (out / "ranking.csv").read_text() == ranking_csv(ranking)
    assert {p.name: p.read_bytes() for p in (out / "plots").iterdir()} == {
        f"{m}.png": png for m, png in plots.items()
    }


def test_a_result_is_logged_as_metrics_params_and_tags(tracking: MlflowClient) -> None:
    result = {
        "scores": {"c3": 0.75, "c1": None},
        "status": {
            "c3": {"status": "ok", "reason": None, "warnings": []},
            "c1": {"status": "undefined", "reason": "the dataset has no subclasses", "warnings": []},
        },
        "meta": {"dataset": "digits", "samples_per_class": 10, "seconds": {"c3": 0.5}},
    }
    mlflow.set_experiment("results")
    with mlflow.start_run() as run:
        log_result(result, step=7)
    data = tracking.get_run(run.info.run_id).data
    assert data.metrics == {"gscore/c3": 0.75}
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "gscore/c3")] == [7]
    assert data.params == {"gscore/status/c3": "ok", "gscore/status/c1": "undefined"}
    tags = {k: v for k, v in data.tags.items() if k.startswith("gscore/")}
    assert tags == {
        "gscore/reason/c1": "the dataset has no subclasses",
        "gscore/meta/dataset": "digits",
        "gscore/meta/samples_per_class": "10",
        "gscore/meta/seconds": '{"c3": 0.5}',
    }
