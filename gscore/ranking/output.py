"""Presenting a ``rank_collection`` result: the Kendall table, per-measure model rankings, CSV, rows.

Works on the JSON-ready dict only (so it serves offline results and HTTP responses alike).
"""

from __future__ import annotations

import csv
import io
from typing import Any

RANKING_COLUMNS: tuple[str, ...] = (
    "measure",
    "rank",
    "name",
    "score",
    "test_accuracy",
    "train_accuracy",
    "in_coefficients",
    "reason",
)
COEFFICIENT_COLUMNS: tuple[str, ...] = ("measure", "coefficient", "value", "ci_low", "ci_high", "n", "reason")


def _interval(entry: dict[str, Any], key: str) -> tuple[float | None, float | None]:
    """(ci_low, ci_high) of coefficient ``key`` ("tau", an axis, "total") of one measure's entry."""
    return (entry.get("ci_low") or {}).get(key), (entry.get("ci_high") or {}).get(key)


def _cell(value: float | None, interval: tuple[float | None, float | None], digits: int) -> str | None:
    """``0.53 [0.21, 0.80]``, ``0.53`` without an interval; None when there is no value."""
    if value is None:
        return None
    text = f"{value:.{digits}f}"
    low, high = interval
    if low is not None and high is not None:
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def _one_group(entry: dict[str, Any], key: str) -> bool:
    """Whether coefficient ``key`` (an axis, or the total over the formed axes) rests on one group per
    axis: its bootstrap interval is then a single point, which says nothing, so it is not shown."""
    groups, psi = entry.get("groups") or {}, entry.get("psi") or {}
    if key == "tau":
        return False
    axes = [key] if key != "total" else [axis for axis in groups if psi.get(axis) is not None]
    return bool(axes) and all(groups.get(axis) == 1 for axis in axes)


def _protocol_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    threshold = result.get("min_train_accuracy")
    if threshold:
        counted = result["n_models"] - result.get("n_left_out", 0)
        lines.append(
            f"Protocol: {counted} of {result['n_models']} models reached training accuracy >= "
            f"{threshold:g}; {result.get('n_left_out', 0)} left out of the coefficients"
        )
    elif threshold is not None:
        lines.append("Protocol: off (min_train_accuracy 0): every model counts, fitted or not")
    bootstrap = result.get("bootstrap")
    if bootstrap and bootstrap.get("n_resamples"):
        lines.append(
            f"Intervals: {bootstrap['level'] * 100:g}% bootstrap, {bootstrap['n_resamples']} resamples "
            f"(tau: models; psi: groups of the axis), seed {bootstrap['seed']}"
        )
    return lines


def format_ranking_table(result: dict[str, Any], digits: int = 2) -> str:
    """Plain-text table like the paper's Table 1: rows measures, columns the axes, "total", "tau", "n".

    Cells read ``0.53 [0.21, 0.80]`` (value and bootstrap interval), ``0.67 (1 group)`` for a psi (or a
    total) that rests on one group per axis, whose interval would be a point. A coefficient that could not be
    formed shows ``n/a[k]``; footnote ``[k]`` gives the reason (identical reasons share a footnote).
    ``n`` is the number of models in the measure's coefficients; the groups per axis follow the table.
    """
    axes: list[str] = list(result["axes"])
    footnotes: dict[str, int] = {}

    def cell(value: float | None, interval: tuple[float | None, float | None], reason: str | None) -> str:
        text = _cell(value, interval, digits)
        if text is not None:
            return text
        number = footnotes.setdefault(reason or "not available", len(footnotes) + 1)
        return f"n/a[{number}]"

    rows: list[list[str]] = []
    groups_by_measure: dict[str, str] = {}
    for measure, entry in result["measures"].items():
        why = entry.get("why", {})
        keys = [*axes, "total"]
        values = [entry["psi"].get(key) for key in keys] + [entry["tau"]]
        cells = [
            cell(value, _interval(entry, key), why.get(key))
            if not (value is not None and _one_group(entry, key))
            else f"{value:.{digits}f} (1 group)"
            for value, key in zip(values, [*keys, "tau"], strict=True)
        ]
        rows.append([measure, *cells, str(entry.get("n_models", entry.get("n", "")))])
        groups = entry.get("groups", {})
        groups_by_measure[measure] = ", ".join(f"{axis} {groups.get(axis, 0)}" for axis in axes)

    header = ["measure", *axes, "total", "tau", "n"]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join(
            [first, *(text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True))]
        )

    out = [
        f"Kendall coefficients against {result['target']} "
        f"({result['n_models']} models, {result['n_models_with_target']} with {result['target']})",
        line(header),
        line(["-" * width for width in widths]),
        *(line(row) for row in rows),
        "",
        *_protocol_lines(result),
    ]
    if axes and groups_by_measure:
        patterns = set(groups_by_measure.values())
        if len(patterns) == 1:
            out.append(f"Groups per axis: {patterns.pop()}")
        else:
            out.extend(f"Groups per axis ({measure}): {text}" for measure, text in groups_by_measure.items())
    if footnotes:
        out.append("")
        out.extend(f"[{number}] {reason}" for reason, number in footnotes.items())
    return "\n".join(out) + "\n"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def format_model_rankings(result: dict[str, Any], top: int | None = None, digits: int = 4) -> str:
    """Per measure, the models best predicted first: rank, name, score, accuracies and a note.

    ``top`` keeps the first ``top`` rows of each measure (the ranked models come first).
    """
    out: list[str] = []
    for measure, entry in result["measures"].items():
        rows = entry["ranking"]
        ranked = sum(row["rank"] is not None for row in rows)
        direction = "higher" if entry["orientation"] > 0 else "lower"
        out.append(
            f"{measure} ({direction} predicts better generalization): {ranked} of {len(rows)} models ranked"
        )
        shown = rows if top is None else rows[:top]
        table = [["rank", "model", "score", "test_acc", "train_acc", "note"]]
        for row in shown:
            table.append(
                [
                    "-" if row["rank"] is None else str(row["rank"]),
                    row["name"],
                    _number(row["score"], digits),
                    _number(row["test_accuracy"], digits),
                    _number(row["train_accuracy"], digits),
                    row["reason"] or "",
                ]
            )
        widths = [max(len(cells[k]) for cells in table) for k in range(5)]
        for cells in table:
            padded = [
                cells[0].rjust(widths[0]),
                *(c.ljust(w) for c, w in zip(cells[1:5], widths[1:], strict=True)),
            ]
            out.append(f"{'  '.join(padded)}  {cells[5]}".rstrip())
        if len(shown) < len(rows):
            out.append(f"  ... {len(rows) - len(shown)} more (drop --top to see them)")
        out.append("")
    return "\n".join(out)


def top_rankings(result: dict[str, Any], top: int | None) -> dict[str, Any]:
    """A copy of ``result`` whose per-measure rankings keep their first ``top`` rows (all if None)."""
    if top is None:
        return result
    measures = {
        name: {**entry, "ranking": entry["ranking"][:top]} for name, entry in result["measures"].items()
    }
    return {**result, "measures": measures}


def ranking_rows(result: dict[str, Any], top: int | None = None) -> list[dict[str, Any]]:
    """One flat row per (measure, model): ``RANKING_COLUMNS``, best predicted first within a measure."""
    return [
        {"measure": measure, **{column: row[column] for column in RANKING_COLUMNS[1:]}}
        for measure, entry in top_rankings(result, top)["measures"].items()
        for row in entry["ranking"]
    ]


def coefficient_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (measure, coefficient): tau, each axis's psi and the total (``COEFFICIENT_COLUMNS``).

    ``n`` is the number of models (tau), of groups (an axis) or of formed axes (total).
    """
    rows = []
    for measure, entry in result["measures"].items():
        why = entry.get("why", {})
        formed_axes = sum(entry["psi"].get(axis) is not None for axis in result["axes"])
        counts = {"tau": entry.get("n_models"), **entry.get("groups", {}), "total": formed_axes}
        for key in ["tau", *result["axes"], "total"]:
            value = entry["tau"] if key == "tau" else entry["psi"].get(key)
            low, high = _interval(entry, key)
            rows.append(
                {
                    "measure": measure,
                    "coefficient": key,
                    "value": value,
                    "ci_low": low,
                    "ci_high": high,
                    "n": counts.get(key),
                    "reason": why.get(key),
                }
            )
    return rows


def ranking_csv(result: dict[str, Any], top: int | None = None) -> str:
    """``ranking_rows`` as CSV text with a header line (empty cells for None)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RANKING_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in ranking_rows(result, top):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()
