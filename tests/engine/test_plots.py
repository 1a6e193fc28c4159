"""Tests of gscore.ranking.plots: valid PNGs of the documented pixel size, one file per measure."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gscore.ranking.kendall import ModelRecord, RankingInputError
from gscore.ranking.plots import PANEL_SIZE_PX, figure_size_px, plot_measures, write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which directly follows the signature."""
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def collection() -> list[ModelRecord]:
    records = []
    for k in range(8):
        scores = {"c3": 0.1 * k + 0.05 * (k % 3), "random_sharpness": 5.0 - 0.3 * k}
        records.append(ModelRecord(f"m{k}", {"bs": 32 * (1 + k % 2)}, scores, 0.5 + 0.04 * k, 1.0))
    records.append(ModelRecord("no-target", {"bs": 32}, {"c3": 9.0}, None))
    return records


def test_figure_size_px() -> None:
    assert figure_size_px(1) == PANEL_SIZE_PX
    assert figure_size_px(3) == (3 * PANEL_SIZE_PX[0], PANEL_SIZE_PX[1])
    assert figure_size_px(5) == (4 * PANEL_SIZE_PX[0], 2 * PANEL_SIZE_PX[1])


def test_plot_measures_png() -> None:
    data = plot_measures(collection(), ["c3", "random_sharpness", "c1"])  # c1: empty panel
    assert png_size(data) == (3 * PANEL_SIZE_PX[0], PANEL_SIZE_PX[1])
    gap = plot_measures(collection(), ["c3"], target="generalization_gap")
    assert png_size(gap) == PANEL_SIZE_PX


def test_plot_measures_needs_a_measure() -> None:
    with pytest.raises(RankingInputError):
        plot_measures(collection(), [])


def test_write_plots(tmp_path: Path) -> None:
    paths = write_plots(collection(), ["c3", "user/measure", "user_measure"], tmp_path / "plots")
    assert [path.name for path in paths] == ["c3.png", "user_measure.png", "user_measure-2.png"]
    for path in paths:
        assert png_size(path.read_bytes()) == PANEL_SIZE_PX


def test_plot_survives_scores_near_the_float_maximum() -> None:
    """Finite scores near 1e308 made matplotlib's autoscaling overflow ("arange: cannot compute length");
    such points are left out of the panel (and counted), the others are drawn."""
    records = [
        ModelRecord("huge", {}, {"c3": 1e308, "c4": -1e308}, 0.5),
        ModelRecord("a", {}, {"c3": 1.0, "c4": -1e308}, 0.6),
        ModelRecord("b", {}, {"c3": 2.0, "c4": 1e308}, 0.7),
    ]
    assert png_size(plot_measures(records, ["c3", "c4"])) == (2 * PANEL_SIZE_PX[0], PANEL_SIZE_PX[1])
    assert png_size(plot_measures(records[:1], ["c3"])) == PANEL_SIZE_PX  # a lone point at 1e308


# ---- colour by a hyperparameter, orientation labels, tau intervals -------------------------------------
def _pixels(data: bytes):
    import io

    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")[..., :3]


def _has_colour(pixels, rgb: tuple[float, float, float], tolerance: float = 0.02) -> bool:
    import numpy as np

    return bool((np.abs(pixels - np.array(rgb)).max(axis=-1) < tolerance).any())


def test_color_by_draws_one_colour_per_value() -> None:
    """Points coloured by bs (two values) show tab10's first two colours; uncoloured plots only the first."""
    from matplotlib import colormaps

    def on_white(rgb: tuple[float, ...], alpha: float) -> tuple[float, ...]:
        return tuple(alpha * c + (1 - alpha) for c in rgb)

    blue, orange = colormaps["tab10"](0)[:3], colormaps["tab10"](1)[:3]
    coloured = _pixels(plot_measures(collection(), ["c3"], color_by="bs"))
    plain = _pixels(plot_measures(collection(), ["c3"]))
    assert _has_colour(coloured, on_white(blue, 0.85)) and _has_colour(coloured, on_white(orange, 0.85))
    assert _has_colour(plain, on_white(blue, 0.8)) and not _has_colour(plain, on_white(orange, 0.8))


def test_color_by_an_unknown_hyperparameter_is_refused() -> None:
    with pytest.raises(RankingInputError, match="'lr'"):
        plot_measures(collection(), ["c3"], color_by="lr")


def test_colour_groups_sort_values_and_label_missing() -> None:
    from gscore.ranking.plots import colour_groups

    assert colour_groups([64, 32, None, 32, "x"]) == [
        ("32", [1, 3]),
        ("64", [0]),
        ("x", [4]),
        ("(not set)", [2]),
    ]
    assert colour_groups([[1, 2], [1, 2]]) == [("(1, 2)", [0, 1])]


def test_many_numeric_values_get_a_colour_bar() -> None:
    records = [
        ModelRecord(f"m{k}", {"lr": 0.001 * (k + 1)}, {"c3": float(k)}, 0.5 + 0.01 * k) for k in range(30)
    ]
    assert png_size(plot_measures(records, ["c3"], color_by="lr")) == PANEL_SIZE_PX


def test_orientation_label() -> None:
    from gscore.ranking.plots import orientation_label

    assert orientation_label("c3") == "c3 (higher predicts better generalization)"
    assert orientation_label("random_sharpness") == "random_sharpness (lower predicts better generalization)"


def test_tau_text_with_and_without_an_interval() -> None:
    from gscore.ranking.plots import coefficient_interval, tau_text

    assert tau_text({"tau": 0.5312}) == "tau = 0.53"
    assert tau_text({"tau": None}) == "tau n/a"
    entry = {
        "tau": 0.53,
        "psi": {"bs": 0.4, "total": 0.4},
        "ci_low": {"tau": 0.21, "bs": 0.1},
        "ci_high": {"tau": 0.8, "bs": 0.6},
    }
    assert tau_text(entry) == "tau = 0.53 [0.21, 0.80]"
    assert coefficient_interval(entry, "bs") == (0.1, 0.6)
    assert coefficient_interval(entry, "total") is None
    assert tau_text({"tau": 0.5, "ci_low": 0.25, "ci_high": 0.75}) == "tau = 0.50 [0.25, 0.75]"
    assert coefficient_interval({"tau": 0.5, "ci_low": 0.25, "ci_high": 0.75}, "bs") is None


def test_titles_show_the_ranking_they_are_given() -> None:
    """`gscore rank --plot` passes its own ranking (protocol, resamples, seed): the PNG is the one drawn from
    it, not from a ranking recomputed with the defaults."""
    from gscore.ranking.kendall import rank_collection

    records = [
        ModelRecord(r.name, r.hyperparameters, r.scores, r.test_accuracy, 0.9 if i % 2 else 1.0)
        for i, r in enumerate(collection())
    ]
    default = rank_collection(records, measures=["c3"])
    everyone = rank_collection(records, measures=["c3"], min_train_accuracy=0.0)
    assert default["measures"]["c3"]["tau"] != everyone["measures"]["c3"]["tau"]
    assert plot_measures(records, ["c3"], ranking=default) == plot_measures(records, ["c3"])
    assert plot_measures(records, ["c3"], ranking=everyone) != plot_measures(records, ["c3"])
