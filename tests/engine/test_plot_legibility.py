"""The PNG plots say which models the coefficients leave out, and stay legible: no text past the figure,
text and panels of a readable size (gscore.ranking.plots.measures_figure, the figure plot_measures renders)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.text import Text

from gscore.measures.table import MEASURES
from gscore.ranking.kendall import ModelRecord, rank_collection
from gscore.ranking.plots import DPI, PANEL_SIZE_PX, left_out_label, measures_figure


def records() -> list[ModelRecord]:
    """Eight models, the odd ones under the protocol's training accuracy (left out of tau and psi)."""
    return [
        ModelRecord(
            f"m{k}",
            {"bs": 32 * (1 + k % 2), "learning_rate_and_weight_decay": [0.1 * k, 5e-4]},
            {name: 0.1 * k + 0.05 * (k % 3) for name in MEASURES},
            0.5 + 0.04 * k,
            0.9 if k % 2 else 1.0,
        )
        for k in range(8)
    ]


def _collections(axes) -> dict[str, np.ndarray]:
    """Legend label -> the points that scatter drew, [n, 2]."""
    return {c.get_label(): np.asarray(c.get_offsets()) for c in axes.collections}


@pytest.mark.parametrize("color_by", [None, "bs"])
def test_left_out_models_are_drawn_apart_and_named_in_the_legend(color_by: str | None) -> None:
    models = records()
    ranking = rank_collection(models, measures=["c3"], n_resamples=0)
    assert ranking["n_left_out"] == 4
    figure = measures_figure(models, ["c3"], color_by=color_by, ranking=ranking)
    (axes,) = figure.axes
    label = left_out_label(ranking, 4)
    assert label == "left out of tau/psi (4)"
    drawn = _collections(axes)
    left_out = {(m.scores["c3"], m.test_accuracy) for m in models if m.train_accuracy < 0.99}
    counted = {(m.scores["c3"], m.test_accuracy) for m in models if m.train_accuracy >= 0.99}
    assert set(map(tuple, drawn.pop(label).tolist())) == left_out
    assert set(map(tuple, np.concatenate(list(drawn.values())).tolist())) == counted
    crosses = [c for c in axes.collections if c.get_label() == label]
    assert crosses[0].get_paths()[0] != axes.collections[0].get_paths()[0]  # another marker
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert label in legend
    assert legend[:-1] == (["32"] if color_by else ["counted models"])  # only bs 32 models fitted
    assert axes.get_title().endswith("\nn = 4; 4 left out: train acc < 0.99")


def test_nothing_left_out_means_no_such_entry() -> None:
    models = [ModelRecord(m.name, m.hyperparameters, m.scores, m.test_accuracy, 1.0) for m in records()]
    figure = measures_figure(models, ["c3"], color_by="bs")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["32", "64"]
    assert "left out" not in figure.axes[0].get_title()


def test_every_text_stays_inside_the_figure_at_a_readable_size() -> None:
    """All measures (the longest names and labels), a paired hyperparameter in the legend."""
    measures = list(MEASURES)
    figure = measures_figure(records(), measures, color_by="learning_rate_and_weight_decay")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    width, height = figure.canvas.get_width_height()
    assert (width, height) == (4 * PANEL_SIZE_PX[0], -(-len(measures) // 4) * PANEL_SIZE_PX[1])
    texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 10 * len(measures)  # titles, labels, ticks, legends
    for text in texts:
        assert text.get_fontsize() * DPI / 72 >= 14, f"{text.get_text()!r}: {text.get_fontsize()} pt"
    # what each panel draws (title, labels, tick labels in view, legend) is inside the figure and
    # overlaps no other panel
    boxes = [axes.get_tightbbox(renderer) for axes in figure.axes]
    for axes, box in zip(figure.axes, boxes, strict=True):
        inside = box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height
        assert inside, f"{axes.get_title()!r} draws at {box.extents}, past the {width}x{height} figure"
    for first in range(len(boxes)):
        for second in range(first + 1, len(boxes)):
            assert not boxes[first].overlaps(boxes[second]), (first, second)
    for axes in figure.axes:  # x labels wrap: no line wider than its panel
        assert axes.xaxis.label.get_window_extent(renderer).width < PANEL_SIZE_PX[0] * 0.9
