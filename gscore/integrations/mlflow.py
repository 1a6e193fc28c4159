"""Log gscore results and rankings to MLflow (``pip install 'gscore[mlflow]'``).

- :func:`log_result`: one result (``gscore.score``'s ``ScoreResult``, or a job's ``result`` dict) on a run:
  each score as the metric ``gscore/<measure>``, each status as the param ``gscore/status/<measure>``, the
  reasons and the meta as tags ``gscore/reason/<measure>`` and ``gscore/meta/<key>``.
- :func:`log_ranking`: a collection's ranking as one run of an experiment: the ranking JSON, its CSV and one
  plot per measure as artifacts; each coefficient and its bootstrap interval as metrics
  ``<measure>/tau``, ``<measure>/tau_ci_low``, ``<measure>/tau_ci_high``, ``<measure>/psi_<axis>`` (and
  ``psi_total``) with ``_ci_low``/``_ci_high``; the protocol as params.

The tracking store is MLflow's own (``MLFLOW_TRACKING_URI`` or ``tracking_uri``).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "gscore.integrations.mlflow needs MLflow: pip install 'gscore[mlflow]'", name=exc.name
    ) from exc

from gscore.ranking.output import coefficient_rows, ranking_csv

if TYPE_CHECKING:
    from gscore.client import Client

PREFIX = "gscore"
MAX_VALUE_CHARS = 5000  # MLflow's smallest limit on a param or tag value (tags allow more)
_UNSAFE = re.compile(r"[^\w\-. /]")


def metric_name(text: str) -> str:
    """``text`` with the characters MLflow refuses in a key (anything but letters, digits, ``_-. /``)
    replaced by ``_``."""
    return _UNSAFE.sub("_", text)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_VALUE_CHARS]


def result_document(result: Any) -> dict[str, Any]:
    """``{"scores", "status", "meta"}`` of a ``ScoreResult`` or of a job's ``result`` dict."""
    if hasattr(result, "as_dict"):
        return result.as_dict()
    return {"scores": result["scores"], "status": result.get("status", {}), "meta": result.get("meta", {})}


def log_result(result: Any, *, run_id: str | None = None, step: int | None = None) -> None:
    """Log one result to run ``run_id`` (default the active run, started if there is none)."""
    document = result_document(result)
    metrics = {
        f"{PREFIX}/{metric_name(name)}": float(value)
        for name, value in document["scores"].items()
        if value is not None
    }
    params = {
        f"{PREFIX}/status/{metric_name(name)}": entry.get("status")
        for name, entry in document["status"].items()
    }
    tags = {
        f"{PREFIX}/reason/{metric_name(name)}": _text(entry["reason"])
        for name, entry in document["status"].items()
        if entry.get("reason")
    }
    tags.update(
        {f"{PREFIX}/meta/{metric_name(key)}": _text(value) for key, value in document["meta"].items()}
    )
    if run_id is None:
        run_id = (mlflow.active_run() or mlflow.start_run()).info.run_id
    timestamp = int(time.time() * 1000)
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric(key, value, timestamp, step or 0) for key, value in metrics.items()],
        params=[Param(key, _text(value)) for key, value in params.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )


def coefficient_metrics(ranking: dict[str, Any]) -> dict[str, float]:
    """Every non-null coefficient of a ranking and its interval ends, keyed ``<measure>/tau``,
    ``<measure>/psi_<axis>``, ``<measure>/psi_total`` (+ ``_ci_low``, ``_ci_high``)."""
    metrics: dict[str, float] = {}
    for row in coefficient_rows(ranking):
        name = "tau" if row["coefficient"] == "tau" else f"psi_{row['coefficient']}"
        key = metric_name(f"{row['measure']}/{name}")
        for suffix, value in (("", row["value"]), ("_ci_low", row["ci_low"]), ("_ci_high", row["ci_high"])):
            if value is not None:
                metrics[key + suffix] = float(value)
    return metrics


def ranking_params(ranking: dict[str, Any], collection: str | None = None) -> dict[str, str]:
    params = {
        "target": ranking["target"],
        "n_models": ranking["n_models"],
        "min_train_accuracy": ranking["min_train_accuracy"],
        "n_left_out": ranking["n_left_out"],
        "bootstrap_level": ranking["bootstrap"]["level"],
        "bootstrap_resamples": ranking["bootstrap"]["n_resamples"],
        "bootstrap_seed": ranking["bootstrap"]["seed"],
        "axes": ",".join(ranking["axes"]),
        "measures": ",".join(ranking["measures"]),
    }
    if collection is not None:
        params["collection"] = collection
    return {f"{PREFIX}/{key}": _text(value) for key, value in params.items()}


def log_ranking(
    ranking: dict[str, Any],
    experiment: str,
    *,
    collection: str | None = None,
    plots: dict[str, bytes] | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log ``ranking`` (a ranking document) as a new run of ``experiment`` (made if missing); ``plots``:
    {measure: PNG bytes}. Returns the run id."""
    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    name = run_name or (f"ranking {collection}" if collection else "ranking")
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.log_params(ranking_params(ranking, collection))
        mlflow.log_metrics(coefficient_metrics(ranking))
        with tempfile.TemporaryDirectory(prefix="gscore-mlflow-") as folder:
            root = Path(folder)
            (root / "ranking.json").write_text(json.dumps(ranking, indent=2))
            (root / "ranking.csv").write_text(ranking_csv(ranking))
            mlflow.log_artifact(str(root / "ranking.json"))
            mlflow.log_artifact(str(root / "ranking.csv"))
            for measure, png in (plots or {}).items():
                path = root / f"{metric_name(measure).replace('/', '_')}.png"
                path.write_bytes(png)
                mlflow.log_artifact(str(path), artifact_path="plots")
        return run.info.run_id


def log_collection_ranking(
    client: Client,
    collection: str,
    ranking: dict[str, Any],
    experiment: str,
    *,
    target: str = "test_accuracy",
    color_by: str | None = None,
    protocol: dict[str, Any] | None = None,
) -> str:
    """:func:`log_ranking` with the service's plot of each measure (``gscore ranking --mlflow-experiment``)."""
    plots = {
        measure: client.plot(collection, [measure], target, color_by=color_by, **(protocol or {}))
        for measure in ranking["measures"]
    }
    return log_ranking(ranking, experiment, collection=collection, plots=plots)
