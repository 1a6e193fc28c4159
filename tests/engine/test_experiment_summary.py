"""The digits experiment's markdown summary (the README's table): every measure, ordered by tau over all
models, with its family and intervals, on a hand-built pair of rankings."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import digits_zoo  # noqa: E402


def _measure(tau: float | None, total: float, low: float, high: float) -> dict:
    return {
        "tau": tau,
        "psi": {"total": total},
        "ci_low": {"tau": None if tau is None else tau - 0.1, "total": low},
        "ci_high": {"tau": None if tau is None else tau + 0.1, "total": high},
    }


def test_rows_follow_tau_over_all_models_with_intervals_and_families() -> None:
    everything = {
        "n_models": 5,
        "n_left_out": 0,
        "measures": {
            "c3": _measure(0.2, 0.1, 0.0, 0.3),
            "margin": _measure(0.6, 0.5, 0.4, 0.7),
            "mine": _measure(None, 0.0, -0.2, 0.2),
            "ww_alpha": _measure(-0.4, -0.3, -0.5, -0.1),
        },
    }
    fitted = {
        "n_models": 5,
        "n_left_out": 2,
        "measures": {name: _measure(0.25, 0.0, -0.1, 0.1) for name in everything["measures"]},
    }
    lines = digits_zoo.summary_table(fitted, everything).splitlines()
    assert lines[0] == "| measure | family | tau, all (5) | total, all | tau, fitted (3) | total, fitted |"
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == [
        "margin",
        "c3",
        "ww_alpha",
        "mine",
    ]
    assert (
        lines[2]
        == "| margin | norm | 0.60 [0.50, 0.70] | 0.50 [0.40, 0.70] | 0.25 [0.15, 0.35] | 0.00 [-0.10, 0.10] |"
    )
    assert lines[4].startswith("| ww_alpha | spectral | -0.40 [-0.50, -0.30] | -0.30 [-0.50, -0.10] |")
    assert lines[5].startswith(
        "| mine | – | – | 0.00 [-0.20, 0.20] |"
    )  # no tau: last; not in the table: no family
