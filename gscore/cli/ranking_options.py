"""Options and output shared by ``gscore rank-file FILE`` (offline) and ``gscore ranking NAME`` (a collection)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gscore.ranking.kendall import DEFAULT_LEVEL, DEFAULT_MIN_TRAIN_ACCURACY, DEFAULT_RESAMPLES

FORMATS = ("table", "json", "csv")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_ranking_selection(parser: argparse.ArgumentParser) -> None:
    """What both ranking verbs rank and plot: the target, the measures, the plot folder and its colours."""
    parser.add_argument("--target", default="test_accuracy", choices=["test_accuracy", "generalization_gap"])
    parser.add_argument(
        "--measures",
        help="comma-separated names or families present in the collection, e.g. c1,c3 or norm,c1",
    )
    parser.add_argument("--plot", metavar="DIR", help="also write one measure-vs-accuracy PNG per measure")
    parser.add_argument(
        "--color-by", metavar="HYPERPARAMETER", help="colour the --plot points by it (a legend)"
    )


def add_ranking_options(parser: argparse.ArgumentParser) -> None:
    """The protocol, interval and output options of both ranking verbs (and of ``sweep submit --wait``)."""
    parser.add_argument(
        "--min-train-accuracy",
        type=float,
        default=DEFAULT_MIN_TRAIN_ACCURACY,
        help="models below this training accuracy (or without one) are listed but left out of the "
        f"coefficients (default {DEFAULT_MIN_TRAIN_ACCURACY}; 0 turns it off)",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=DEFAULT_LEVEL,
        help=f"bootstrap interval level (default {DEFAULT_LEVEL})",
    )
    parser.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_RESAMPLES,
        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES}; 0: no intervals)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--top", type=_positive_int, help="show the first K models of each measure's ranking")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table: coefficients and rankings; json: the whole document; csv: one row per measure and model",
    )
    parser.add_argument("--json", action="store_true", help="same as --format json")


def ranking_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ranking keyword arguments (target, measures, protocol, intervals) both verbs pass on."""
    measures = [m.strip() for m in args.measures.split(",") if m.strip()] if args.measures else None
    return {
        "target": args.target,
        "measures": measures,
        "min_train_accuracy": args.min_train_accuracy,
        "level": args.level,
        "n_resamples": args.resamples,
        "seed": args.seed,
    }


def output_format(args: argparse.Namespace) -> str:
    return "json" if args.json else args.format


def render(result: dict[str, Any], fmt: str, top: int | None) -> str:
    """The text a ranking verb prints for ``result`` in format ``fmt`` (``FORMATS``)."""
    from gscore.ranking.output import format_model_rankings, format_ranking_table, ranking_csv, top_rankings

    if fmt == "json":
        return json.dumps(top_rankings(result, top), indent=2) + "\n"
    if fmt == "csv":
        return ranking_csv(result, top)
    return format_ranking_table(result) + "\n" + format_model_rankings(result, top)
