"""Figure-3 style plots: each measure (x, raw value) against the target (y), one point per model.

Uses matplotlib's object-oriented API with the Agg canvas (no pyplot, no display, no global state),
so it is safe in a worker or web process. Each panel is ``PANEL_SIZE_PX`` pixels; panels are laid
out in rows of at most ``MAX_COLUMNS``, text sizes in points at ``DPI``, in a constrained layout (no
label runs past the figure). The title gives the measure's tau from ``rank_collection`` (oriented, so a
sharpness measure with a falling cloud of points has a positive tau), with its confidence interval when
the ranking reports one, and counts the models the ranking leaves out of the coefficients (grey crosses,
named in the legend). ``color_by`` colours the points by one hyperparameter:
one colour per distinct value (a legend) for up to ``MAX_LEGEND_VALUES`` values, else a colour scale
(a colour bar) for numeric values.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gscore.measures.table import orientation
from gscore.ranking.kendall import (
    ModelRecord,
    RankingInputError,
    finite_or_none,
    rank_collection,
    target_values,
)

PANEL_SIZE_PX: tuple[int, int] = (640, 540)  # width, height of one panel
MAX_COLUMNS = 4
DPI = 128  # text sizes below are in points: at 128 dpi a 10 pt label is about 18 px high
TITLE_FONT_SIZE = 11
LABEL_FONT_SIZE = 10
TICK_FONT_SIZE = 9
LEGEND_FONT_SIZE = 8.5
MARKER_SIZE = 22  # points^2
LEFT_OUT_COLOUR = "#555555"  # the crosses of models left out of the coefficients
# Points beyond this magnitude are not drawn: matplotlib's autoscaling overflows near the float maximum
# (a score of 1e308 raised "arange: cannot compute length"); the panel says how many were left out.
PLOT_LIMIT = 1e300
_TARGET_LABELS = {"test_accuracy": "test accuracy", "generalization_gap": "generalization gap (train - test)"}
MAX_LEGEND_VALUES = 20  # more distinct values than this: a colour bar (numeric) or a single colour
_MISSING_LABEL = "(not set)"


def orientation_label(measure: str) -> str:
    """The x-axis label: the measure and which direction predicts better generalization."""
    direction = "higher" if orientation(measure) > 0 else "lower"
    return f"{measure} ({direction} predicts better generalization)"


def coefficient_interval(entry: dict[str, Any], key: str) -> tuple[float, float] | None:
    """The confidence interval ``(low, high)`` of coefficient ``key`` ("tau", an axis or "total") of one
    measure's ranking entry, or None when the ranking has none.

    Read from ``entry["ci_low"][key]`` / ``entry["ci_high"][key]`` (dicts keyed like ``psi`` plus "tau"),
    or for tau also from scalar ``entry["ci_low"]`` / ``entry["ci_high"]`` or ``tau_ci_low``/``tau_ci_high``.
    """
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if isinstance(low, dict) and isinstance(high, dict):
        low, high = low.get(key), high.get(key)
    elif key == "tau" and not (isinstance(low, (int, float)) and isinstance(high, (int, float))):
        low, high = entry.get("tau_ci_low"), entry.get("tau_ci_high")
    elif key != "tau":
        return None
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return float(low), float(high)
    return None


def tau_text(entry: dict[str, Any], level: float | None = None) -> str:
    """``tau = 0.53 [0.21, 0.80]`` (``... 95% CI`` with ``level`` 0.95), ``tau = 0.53`` without an
    interval, ``tau n/a`` without a value."""
    tau = entry.get("tau")
    if tau is None:
        return "tau n/a"
    interval = coefficient_interval(entry, "tau")
    if interval is None:
        return f"tau = {tau:.2f}"
    level_text = f" {level:.0%} CI" if level is not None else ""
    return f"tau = {tau:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]{level_text}"


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (2, str(value))
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def _value_label(value: Any) -> str:
    if value is None:
        return _MISSING_LABEL
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def figure_size_px(n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that ``plot_measures`` makes for ``n_panels`` measures."""
    columns = min(n_panels, MAX_COLUMNS)
    rows = -(-n_panels // MAX_COLUMNS)
    return columns * PANEL_SIZE_PX[0], rows * PANEL_SIZE_PX[1]


def _in_coefficients(entry: dict[str, Any]) -> dict[str, bool]:
    """Model name -> whether the ranking counts it in this measure's tau and psi (its ``ranking`` rows)."""
    return {row["name"]: bool(row.get("in_coefficients", True)) for row in entry.get("ranking", [])}


def left_out_label(ranking: dict[str, Any], count: int) -> str:
    """The legend entry of the models drawn but left out of the coefficients (the title says why)."""
    return f"left out of tau/psi ({count})"


def _left_out_reason(ranking: dict[str, Any]) -> str:
    threshold = ranking.get("min_train_accuracy") or 0
    return f": train acc < {threshold:g}" if threshold else ""


def measures_figure(
    records: Sequence[ModelRecord],
    measures: Sequence[str],
    target: str = "test_accuracy",
    color_by: str | None = None,
    ranking: dict[str, Any] | None = None,
) -> Figure:
    """The figure ``plot_measures`` renders (see there); on the Agg canvas, nothing shown."""
    if not measures:
        raise RankingInputError("plot_measures needs at least one measure")
    if color_by is not None and not any(color_by in record.hyperparameters for record in records):
        raise RankingInputError(f"no model has the hyperparameter {color_by!r} to colour by")
    result = ranking if ranking is not None else rank_collection(records, target=target, measures=measures)
    targets = target_values(records, target)
    width_px, height_px = figure_size_px(len(measures))
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    columns = min(len(measures), MAX_COLUMNS)
    rows = -(-len(measures) // MAX_COLUMNS)
    level = result.get("bootstrap", {}).get("level")
    for position, measure in enumerate(measures):
        axes = figure.add_subplot(rows, columns, position + 1)
        entry = result["measures"][measure]
        counted = _in_coefficients(entry)
        usable = [
            (float(record.scores[measure]), target_value, record.hyperparameters.get(color_by))
            + (counted.get(record.name, True),)
            for record, target_value in zip(records, targets, strict=True)
            if target_value is not None and finite_or_none(record.scores.get(measure)) is not None
        ]
        points = [point for point in usable if abs(point[0]) <= PLOT_LIMIT and abs(point[1]) <= PLOT_LIMIT]
        beyond = len(usable) - len(points)
        beyond_text = f", {beyond} beyond 1e300 not drawn" if beyond else ""
        left_out = [point for point in points if not point[3]]
        left_out_text = f"; {len(left_out)} left out{_left_out_reason(result)}" if left_out else ""
        axes.set_title(
            f"{measure}\n{tau_text(entry, level)}\nn = {entry['n_models']}{left_out_text}{beyond_text}",
            fontsize=TITLE_FONT_SIZE,
        )
        axes.set_xlabel(orientation_label(measure).replace(" (", "\n(", 1), fontsize=LABEL_FONT_SIZE)
        axes.set_ylabel(_TARGET_LABELS[target].replace(" (", "\n(", 1), fontsize=LABEL_FONT_SIZE)
        axes.tick_params(labelsize=TICK_FONT_SIZE)
        kept = [(x, y, c) for x, y, c, counts in points if counts]
        if kept and color_by is not None:
            _scatter_coloured(figure, axes, kept, color_by)
        elif kept:
            xs, ys, _ = zip(*kept, strict=True)
            axes.scatter(xs, ys, s=MARKER_SIZE, alpha=0.8, edgecolors="none", label="counted models")
        if left_out:
            axes.scatter(
                [x for x, *_ in left_out],
                [y for _, y, *_ in left_out],
                s=MARKER_SIZE * 1.6,
                marker="x",
                linewidths=1.2,
                color=LEFT_OUT_COLOUR,
                label=left_out_label(result, len(left_out)),
            )
            _legend(axes, color_by if kept else None)
        if not points:
            axes.text(
                0.5,
                0.5,
                f"no model has both\n{measure} and {target}" if not usable else "no plottable point",
                ha="center",
                va="center",
                transform=axes.transAxes,
                fontsize=LABEL_FONT_SIZE,
            )
    return figure


def plot_measures(
    records: Sequence[ModelRecord],
    measures: Sequence[str],
    target: str = "test_accuracy",
    color_by: str | None = None,
    ranking: dict[str, Any] | None = None,
) -> bytes:
    """A PNG with one scatter panel per measure; models lacking the score or the target are not drawn.

    Models the ranking leaves out of the measure's coefficients (the training-accuracy protocol) are
    drawn as grey crosses with their own legend entry; the title counts them. Axis labels wrap onto a
    second line rather than run past the panel. The panels' titles are also the PNG's Title text.

    Parameters
    ----------
    records
        The models; ``hyperparameters[color_by]`` picks each point's colour.
    measures
        One panel per name, in order (x: the raw score).
    target
        ``"test_accuracy"`` or ``"generalization_gap"`` (y).
    color_by
        A hyperparameter of the collection, or None for single-colour points.
    ranking
        ``rank_collection(records, target=target, ...)`` already computed (with the caller's protocol,
        level, resamples and seed), whose tau, interval and left-out models the panels show; None:
        computed here with the defaults.

    Returns
    -------
    bytes
        The PNG, ``figure_size_px(len(measures))`` pixels.
    """
    figure = measures_figure(records, measures, target, color_by, ranking)
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]  # not a colour bar's
    buffer = io.BytesIO()
    # the panels' titles also as the PNG's Title text (readable without looking at the pixels)
    figure.canvas.print_png(buffer, metadata={"Title": "\n\n".join(titles)})
    return buffer.getvalue()


def colour_groups(values: Sequence[Any]) -> list[tuple[str, list[int]]]:
    """Points grouped by hyperparameter value: ``[(label, indices)]`` in sorted value order (numbers
    ascending, then text, then booleans and missing)."""
    groups: dict[Any, list[int]] = {}
    originals: dict[Any, Any] = {}
    for index, value in enumerate(values):
        key = _hashable(value)
        groups.setdefault(key, []).append(index)
        originals.setdefault(key, value)
    ordered = sorted(groups, key=lambda key: _sort_key(originals[key]))
    return [(_value_label(originals[key]), groups[key]) for key in ordered]


def _legend(axes: Any, title: str | None) -> None:
    """The legend right of the panel (never over a point); the constrained layout makes room for it."""
    axes.legend(
        title=title,
        fontsize=LEGEND_FONT_SIZE,
        title_fontsize=LEGEND_FONT_SIZE,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )


def _scatter_coloured(
    figure: Figure, axes: Any, points: list[tuple[float, float, Any]], color_by: str
) -> None:
    xs, ys, values = zip(*points, strict=True)
    groups = colour_groups(values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(groups) > MAX_LEGEND_VALUES and numeric:
        drawn = axes.scatter(
            xs, ys, c=[float(v) for v in values], cmap="viridis", s=MARKER_SIZE, edgecolors="none"
        )
        figure.colorbar(drawn, ax=axes, label=color_by)
        return
    palette = "tab10" if len(groups) <= 10 else "tab20"
    from matplotlib import colormaps

    colours = colormaps[palette]
    for number, (label, indices) in enumerate(groups[:MAX_LEGEND_VALUES]):
        axes.scatter(
            [xs[i] for i in indices],
            [ys[i] for i in indices],
            s=MARKER_SIZE,
            alpha=0.85,
            edgecolors="none",
            color=colours(number % colours.N),
            label=label,
        )
    rest = [i for _, indices in groups[MAX_LEGEND_VALUES:] for i in indices]
    if rest:
        axes.scatter(
            [xs[i] for i in rest], [ys[i] for i in rest], s=MARKER_SIZE, color="grey", label="other values"
        )
    _legend(axes, color_by)


def _file_stem(measure: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", measure).strip("._") or "measure"


def write_plots(
    records: Sequence[ModelRecord],
    measures: Sequence[str],
    out_dir: str | Path,
    target: str = "test_accuracy",
    color_by: str | None = None,
    ranking: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``<measure>.png`` (one panel) per measure into ``out_dir`` (created); returns the paths.

    ``ranking``: the ``rank_collection`` result the titles show (computed once here when None).
    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; a name that collides
    after that gets a ``-2``, ``-3``... suffix.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if ranking is None:
        ranking = rank_collection(records, target=target, measures=list(measures))
    paths: list[Path] = []
    used: set[str] = set()
    for measure in measures:
        stem = _file_stem(measure)
        candidate, suffix = stem, 2
        while candidate in used:
            candidate, suffix = f"{stem}-{suffix}", suffix + 1
        used.add(candidate)
        path = directory / f"{candidate}.png"
        path.write_bytes(plot_measures(records, [measure], target, color_by=color_by, ranking=ranking))
        paths.append(path)
    return paths
