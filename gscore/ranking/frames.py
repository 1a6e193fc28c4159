"""Ranking and collection documents as dicts that convert to pandas DataFrames (pandas is optional).

``RankingResult`` and ``CollectionResult`` are plain ``dict`` subclasses (``json.dumps`` and indexing
work as before) with a ``to_pandas()`` method; pandas is imported only when it is called.
"""

from __future__ import annotations

from typing import Any

from gscore.errors import GScoreError
from gscore.ranking.output import COEFFICIENT_COLUMNS, RANKING_COLUMNS, coefficient_rows, ranking_rows

COLLECTION_COLUMNS: tuple[str, ...] = ("model_name", "job_id", "state", "test_accuracy", "train_accuracy")


class PandasMissingError(GScoreError):
    type = "pandas-missing"
    title = "pandas is not installed"


def _pandas() -> Any:
    try:
        import pandas
    except ModuleNotFoundError:
        raise PandasMissingError("to_pandas() needs pandas: pip install pandas") from None
    return pandas


class RankingResult(dict):
    """A ranking document (``rank_collection``'s dict, plus ``not_scored`` from the service)."""

    def to_pandas(self, table: str = "models") -> Any:
        """A DataFrame.

        Parameters
        ----------
        table : "models" or "coefficients"
            "models": one row per (measure, model), columns ``RANKING_COLUMNS``, best predicted first
            within a measure (``df[df.measure == "c3"].head(5)`` are c3's five best checkpoints).
            "coefficients": one row per (measure, coefficient), columns ``COEFFICIENT_COLUMNS``
            (coefficient "tau", an axis name or "total"; ``n`` models, groups or axes).
        """
        pandas = _pandas()
        if table == "models":
            return pandas.DataFrame(ranking_rows(self), columns=list(RANKING_COLUMNS))
        if table == "coefficients":
            return pandas.DataFrame(coefficient_rows(self), columns=list(COEFFICIENT_COLUMNS))
        raise ValueError(f"table must be 'models' or 'coefficients', got {table!r}")


class CollectionResult(dict):
    """A collection document: ``{"name", "models": [{"job_id", "model_name", ..., "scores"}]}``."""

    def to_pandas(self) -> Any:
        """One row per model: ``COLLECTION_COLUMNS``, then one column per hyperparameter, then per measure.

        A hyperparameter whose name is also a column or a measure is prefixed ``hp.``; a paired value
        (a list) stays a list. Missing values are None.
        """
        pandas = _pandas()
        models = self.get("models", [])
        measures = sorted({name for model in models for name in (model.get("scores") or {})})
        axes: dict[str, None] = {}
        for model in models:
            axes.update(dict.fromkeys(model.get("hyperparameters") or {}))
        taken = set(COLLECTION_COLUMNS) | set(measures)
        axis_columns = {axis: f"hp.{axis}" if axis in taken else axis for axis in axes}
        rows = []
        for model in models:
            row = {column: model.get(column) for column in COLLECTION_COLUMNS}
            hyperparameters = model.get("hyperparameters") or {}
            row.update({column: hyperparameters.get(axis) for axis, column in axis_columns.items()})
            scores = model.get("scores") or {}
            row.update({measure: scores.get(measure) for measure in measures})
            rows.append(row)
        columns = [*COLLECTION_COLUMNS, *axis_columns.values(), *measures]
        return pandas.DataFrame(rows, columns=columns)
