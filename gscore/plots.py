"""Figure-3 style plots: each measure (x, raw value) against the target (y), one point per model.

Uses matplotlib's object-oriented API with the Agg canvas (no pyplot, no display, no global state),
so it is safe in a worker or web process. Each panel is ``PANEL_SIZE_PX`` pixels; panels are laid
out in rows of at most ``MAX_COLUMNS``. The title gives the measure's tau from ``rank_collection``
(oriented, so a sharpness measure with a falling cloud of points has a positive tau).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gscore.measure_registry import orientation
from gscore.ranking import ModelRecord, RankingInputError, finite_or_none, rank_collection, target_values

PANEL_SIZE_PX: tuple[int, int] = (400, 350)  # width, height of one panel
MAX_COLUMNS = 4
DPI = 100
# Points beyond this magnitude are not drawn: matplotlib's autoscaling overflows near the float maximum
# (a score of 1e308 raised "arange: cannot compute length"); the panel says how many were left out.
PLOT_LIMIT = 1e300
_TARGET_LABELS = {"test_accuracy": "test accuracy", "generalization_gap": "generalization gap (train - test)"}


def figure_size_px(n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that ``plot_measures`` makes for ``n_panels`` measures."""
    columns = min(n_panels, MAX_COLUMNS)
    rows = -(-n_panels // MAX_COLUMNS)
    return columns * PANEL_SIZE_PX[0], rows * PANEL_SIZE_PX[1]


def plot_measures(
    records: Sequence[ModelRecord], measures: Sequence[str], target: str = "test_accuracy"
) -> bytes:
    """A PNG with one scatter panel per measure; models lacking the score or the target are not drawn."""
    if not measures:
        raise RankingInputError("plot_measures needs at least one measure")
    result = rank_collection(records, target=target, measures=measures)
    targets = target_values(records, target)
    width_px, height_px = figure_size_px(len(measures))
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    columns = min(len(measures), MAX_COLUMNS)
    rows = -(-len(measures) // MAX_COLUMNS)
    for position, measure in enumerate(measures):
        axes = figure.add_subplot(rows, columns, position + 1)
        usable = [
            (float(record.scores[measure]), target_value)
            for record, target_value in zip(records, targets, strict=True)
            if target_value is not None and finite_or_none(record.scores.get(measure)) is not None
        ]
        points = [(x, y) for x, y in usable if abs(x) <= PLOT_LIMIT and abs(y) <= PLOT_LIMIT]
        entry = result["measures"][measure]
        tau = entry["tau"]
        tau_text = f"tau = {tau:.2f}" if tau is not None else "tau n/a"
        left_out = len(usable) - len(points)
        left_out_text = f", {left_out} beyond 1e300 not drawn" if left_out else ""
        axes.set_title(f"{measure}\n{tau_text} (n = {entry['n']}{left_out_text})", fontsize=10)
        x_label = measure + (" (lower predicts better)" if orientation(measure) < 0 else "")
        axes.set_xlabel(x_label, fontsize=9)
        axes.set_ylabel(_TARGET_LABELS[target], fontsize=9)
        axes.tick_params(labelsize=8)
        if points:
            xs, ys = zip(*points, strict=True)
            axes.scatter(xs, ys, s=14, alpha=0.8, edgecolors="none")
        else:
            axes.text(
                0.5,
                0.5,
                f"no model has both\n{measure} and {target}" if not usable else "no plottable point",
                ha="center",
                va="center",
                transform=axes.transAxes,
                fontsize=9,
            )
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def _file_stem(measure: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", measure).strip("._") or "measure"


def write_plots(
    records: Sequence[ModelRecord],
    measures: Sequence[str],
    out_dir: str | Path,
    target: str = "test_accuracy",
) -> list[Path]:
    """Write ``<measure>.png`` (one panel) per measure into ``out_dir`` (created); returns the paths.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; a name that collides
    after that gets a ``-2``, ``-3``... suffix.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    used: set[str] = set()
    for measure in measures:
        stem = _file_stem(measure)
        candidate, suffix = stem, 2
        while candidate in used:
            candidate, suffix = f"{stem}-{suffix}", suffix + 1
        used.add(candidate)
        path = directory / f"{candidate}.png"
        path.write_bytes(plot_measures(records, [measure], target))
        paths.append(path)
    return paths
