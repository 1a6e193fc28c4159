"""The paper's experiment at small scale: a hyperparameter grid of small CNNs on the digits superclasses.

Trains every configuration of a grid shaped like the paper's appendix A.1 (scaled to 8x8 digits),
saves each checkpoint, submits it to a running gscore service with its hyperparameters and test
accuracy into one collection, waits for the scores, and prints the granulated Kendall table
(rows measures, columns hyperparameters and the total), like the paper's Table 1.

    GSCORE_TORCH_THREADS=1 make run &             # or any running service
    .venv/bin/python experiments/digits_zoo.py --url http://127.0.0.1:8000 [--quick] [--out zoo/] \
        [--summary-file summary.md]

Grid (default; `--quick` is a 6-model subset for the tests). As in the paper, co-varying pairs are
not crossed: weight decay only with the middle learning rate, dropout only without augmentation,
width and depth not increased together; learning rates are divided by 100 for Adam:
  (learning_rate, weight_decay): (0.01, 0), (0.32, 0), (0.1, 0), (0.1, 5e-4)
  batch_size: 32, 128          optimizer: sgd (momentum 0.9), adam
  (dropout, augmentation): (0, yes), (0, no), (0.2, no), (0.4, no)   [augmentation: 1-pixel shifts]
  (width, depth): (16, 2), (24, 2), (16, 3)
The default grid (96 models, see `default_grid`) crosses everything at (width, depth) = (16, 2) and adds
the width and depth variants at the SGD, batch-32 corner; `--full` runs all 192.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LR_WD = [(0.01, 0.0), (0.32, 0.0), (0.1, 0.0), (0.1, 5e-4)]
DROPOUT_AUG = [(0.0, True), (0.0, False), (0.2, False), (0.4, False)]
WIDTH_DEPTH = [(16, 2), (24, 2), (16, 3)]
RESULT_KEYS = ("scores", "status", "meta")
DEFAULT_MEASURES = ["all"]  # every measure of the table (expanded by gscore.measures.table)


@dataclass(frozen=True)
class Config:
    learning_rate: float
    weight_decay: float
    batch_size: int
    optimizer: str
    dropout: float
    augmentation: bool
    width: int
    depth: int

    @property
    def name(self) -> str:
        return (
            f"lr{self.learning_rate}-wd{self.weight_decay}-bs{self.batch_size}-{self.optimizer}"
            f"-do{self.dropout}-{'aug' if self.augmentation else 'noaug'}-w{self.width}-d{self.depth}"
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "dropout": self.dropout,
            "augmentation": self.augmentation,
            "width": self.width,
            "depth": self.depth,
        }

    def arch(self) -> dict[str, Any]:
        return {
            "family": "cnn",
            "in_channels": 1,
            "width": self.width,
            "depth": self.depth,
            "num_classes": 5,
            "dropout": self.dropout,
        }


def full_grid() -> list[Config]:
    return [
        Config(lr, wd, bs, opt, do, aug, w, d)
        for (lr, wd), bs, opt, (do, aug), (w, d) in itertools.product(
            LR_WD, [32, 128], ["sgd", "adam"], DROPOUT_AUG, WIDTH_DEPTH
        )
    ]


def default_grid() -> list[Config]:
    """Every pair of the paper's grid, crossed with batch size and optimizer, width/depth at x1 or one step up.

    192 models take too long on 2 CPU cores; this keeps every axis varied with groups on every axis:
    (lr, wd) x batch size x optimizer x (dropout, aug) at width/depth (16, 2), plus the width and
    depth variants at the SGD, batch-32 corner.
    """
    base = [c for c in full_grid() if (c.width, c.depth) == (16, 2)]
    extra = [
        c
        for c in full_grid()
        if (c.width, c.depth) != (16, 2) and c.optimizer == "sgd" and c.batch_size == 32
    ]
    return base + extra


def quick_grid() -> list[Config]:
    """Six models, two groups on each of several axes: for the test suite."""
    return [
        Config(0.1, 0.0, 32, "sgd", 0.0, False, 8, 2),
        Config(0.01, 0.0, 32, "sgd", 0.0, False, 8, 2),
        Config(0.1, 5e-4, 32, "sgd", 0.0, False, 8, 2),
        Config(0.1, 0.0, 128, "sgd", 0.0, False, 8, 2),
        Config(0.1, 0.0, 32, "sgd", 0.2, False, 8, 2),
        Config(0.1, 0.0, 32, "sgd", 0.0, False, 12, 2),
    ]


def train_one(
    config: Config, data: dict[str, torch.Tensor], out_dir: Path, max_epochs: int, seed: int
) -> dict:
    """Train one configuration to ~100% training accuracy; save it; return its record."""
    from gscore.inputs.checkpoints.loading import save_safetensors
    from gscore.models import build_model
    from gscore.training import accuracy, random_shift, train_classifier

    torch.manual_seed(seed)
    model = build_model(config.arch())
    initial = out_dir / f"{config.name}.initial.safetensors"  # for distance_to_init and layer_rotation
    save_safetensors(model, initial)
    lr = config.learning_rate / 100 if config.optimizer == "adam" else config.learning_rate
    started = time.perf_counter()
    fit = train_classifier(
        model,
        data["x_train"],
        data["y_train"],
        epochs=max_epochs,
        lr=lr,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        augment=random_shift(1) if config.augmentation else None,
        seed=seed,
        stop_at_loss=1e-3,
        stop_at_accuracy=0.995,  # "about 100%": 1-pixel shifts leave a few 8x8 digits ambiguous
    )
    path = out_dir / f"{config.name}.safetensors"
    save_safetensors(model, path)
    return {
        "name": config.name,
        "checkpoint": str(path),
        "initial_checkpoint": str(initial),
        "arch": config.arch(),
        "hyperparameters": config.hyperparameters(),
        "train_accuracy": fit.train_accuracy,
        "test_accuracy": accuracy(model, data["x_test"], data["y_test"]),
        "epochs": fit.epochs,
        "seconds": time.perf_counter() - started,
    }


def load_digits_tensors() -> dict[str, torch.Tensor]:
    from gscore.inputs.datasets import load_probe_set

    train, test = load_probe_set("digits", "train"), load_probe_set("digits", "test")
    return {
        "x_train": torch.cat(list(train.batches(len(train)))),
        "y_train": train.y,
        "x_test": torch.cat(list(test.batches(len(test)))),
        "y_test": test.y,
    }


def _cell(measure: dict, key: str) -> str:
    """``0.43 [0.31, 0.53]``: a coefficient with its interval, ``–`` when it is undefined."""
    value = measure["tau"] if key == "tau" else measure["psi"][key]
    if value is None:
        return "–"
    low, high = (measure.get(side, {}).get(key) for side in ("ci_low", "ci_high"))
    return f"{value:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else "")


def summary_table(fitted: dict, everything: dict) -> str:
    """A markdown table of every measure, ordered by tau over all models (best first): its family, tau and
    total over all models, tau and total over the fitted ones, each with its interval."""
    from gscore.measures.table import MEASURES

    measures = everything["measures"]
    order = sorted(
        measures, key=lambda name: -(measures[name]["tau"] if measures[name]["tau"] is not None else -2)
    )
    lines = [
        f"| measure | family | tau, all ({everything['n_models']}) | total, all | "
        f"tau, fitted ({fitted['n_models'] - fitted['n_left_out']}) | total, fitted |",
        "|---|---|---|---|---|---|",
    ]
    for name in order:
        family = MEASURES[name].family if name in MEASURES else "–"
        row = [_cell(measures[name], "tau"), _cell(measures[name], "total")]
        row += [_cell(fitted["measures"][name], "tau"), _cell(fitted["measures"][name], "total")]
        lines.append(f"| {name} | {family} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a running gscore service")
    parser.add_argument("--out", default="digits-zoo", help="directory for checkpoints and results")
    parser.add_argument("--collection", default="digits-zoo")
    parser.add_argument("--quick", action="store_true", help="a 6-model grid (for tests)")
    parser.add_argument("--full", action="store_true", help="the full 192-model grid (slow on a CPU)")
    parser.add_argument(
        "--measures",
        default=",".join(DEFAULT_MEASURES),
        help="measures or families each job computes (default: all, every measure of the table)",
    )
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument(
        "--min-train-accuracy",
        type=float,
        default=0.99,
        help="the paper's protocol: rank only models at least this accurate on their training data",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the ranking JSON instead of the table")
    parser.add_argument("--table-file", help="also write the printed table to this file")
    parser.add_argument(
        "--summary-file", help="also write a markdown table of every measure, ordered by tau, to this file"
    )
    args = parser.parse_args(argv)

    from gscore.client import Client
    from gscore.ranking.kendall import format_ranking_table

    grid = quick_grid() if args.quick else full_grid() if args.full else default_grid()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = Client(args.url)
    from gscore.measures.table import expand_measure_names

    measures = expand_measure_names([m.strip() for m in args.measures.split(",") if m.strip()])
    data = load_digits_tensors()
    torch.set_num_threads(1)  # leave a core to the worker scoring the models already submitted

    started = time.perf_counter()
    records, job_ids = [], []
    for index, config in enumerate(grid, 1):
        record = train_one(config, data, out_dir, args.max_epochs, args.seed)
        job = client.submit(
            record["checkpoint"],
            record["arch"],
            "digits",
            measures=measures,
            collection=args.collection,
            model_name=record["name"],
            hyperparameters=record["hyperparameters"],
            test_accuracy=record["test_accuracy"],
            train_accuracy=record["train_accuracy"],
            initial=record["initial_checkpoint"],
        )
        records.append(record)
        job_ids.append(job["id"])
        print(
            f"[{index}/{len(grid)}] {record['name']}: train {record['train_accuracy']:.3f} "
            f"test {record['test_accuracy']:.3f} ({record['epochs']} epochs, {record['seconds']:.1f}s)",
            file=sys.stderr,
        )
    for record, job_id in zip(records, job_ids, strict=True):
        job = client.wait(job_id)
        if job["state"] != "succeeded":
            print(f"job {job_id} {job['state']}: {job.get('error')}", file=sys.stderr)
        # scores, per-measure status and meta beside the record: `gscore rank-file models.json` reproduces the table
        record.update({key: value for key, value in (job.get("result") or {}).items() if key in RESULT_KEYS})
    # the paper's protocol: only models that fitted their training data are ranked (min_train_accuracy);
    # the table of every model is printed beside it
    fitted = client.ranking(args.collection, measures=measures, min_train_accuracy=args.min_train_accuracy)
    everything = client.ranking(args.collection, measures=measures, min_train_accuracy=0.0)
    underfit = [r for r in records if r["train_accuracy"] < args.min_train_accuracy]
    (out_dir / "models.json").write_text(json.dumps(records, indent=2))
    (out_dir / "ranking.json").write_text(json.dumps(dict(fitted), indent=2))
    (out_dir / "ranking_all.json").write_text(json.dumps(dict(everything), indent=2))
    print(f"{len(grid)} models trained and scored in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    for record in underfit:
        print(
            f"not fitted within {args.max_epochs} epochs: {record['name']} "
            f"(train accuracy {record['train_accuracy']:.3f})",
            file=sys.stderr,
        )
    table = (
        f"Fitted models (train accuracy >= {args.min_train_accuracy}): {len(records) - len(underfit)} "
        f"of {len(records)}\n{format_ranking_table(dict(fitted))}\n\n"
        f"All {len(records)} models\n{format_ranking_table(dict(everything))}"
    )
    if args.table_file:
        Path(args.table_file).write_text(table + "\n")
    if args.summary_file:
        Path(args.summary_file).write_text(summary_table(dict(fitted), dict(everything)) + "\n")
    print(json.dumps({"fitted": dict(fitted), "all": dict(everything)}, indent=2) if args.json else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
