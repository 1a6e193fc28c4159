"""Tests of gscore.plots: valid PNGs of the documented pixel size, one file per measure."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gscore.plots import PANEL_SIZE_PX, figure_size_px, plot_measures, write_plots
from gscore.ranking import ModelRecord, RankingInputError

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
    assert png_size(data) == (1200, 350)
    gap = plot_measures(collection(), ["c3"], target="generalization_gap")
    assert png_size(gap) == (400, 350)


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
    assert png_size(plot_measures(records, ["c3", "c4"])) == (800, 350)
    assert png_size(plot_measures(records[:1], ["c3"])) == PANEL_SIZE_PX  # a lone point at 1e308
