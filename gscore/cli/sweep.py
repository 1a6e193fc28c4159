"""``gscore sweep submit MANIFEST``: a whole collection from one CSV/JSON manifest (gscore.sweeps)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _sweep_submit(args: argparse.Namespace) -> int:
    from gscore.cli.local import parse_json_or_file, parse_param_overrides
    from gscore.cli.ranking_options import output_format, render
    from gscore.cli.remote import _client, _existing_file_or_json

    arch = parse_json_or_file(_existing_file_or_json(args.arch, "--arch"), "arch")
    measures = [m.strip() for m in args.measures.split(",") if m.strip()] if args.measures else None
    ranking_options = {
        "min_train_accuracy": args.min_train_accuracy,
        "level": args.level,
        "n_resamples": args.resamples,
        "seed": args.seed,
    }
    with _client(args) as client:
        outcome = client.submit_sweep(
            Path(args.manifest),
            arch=arch,
            dataset=args.dataset,
            collection=args.collection,
            split=args.split,
            measures=measures,
            params=parse_param_overrides(args.param),
            samples_per_class=args.samples_per_class,
            seed=args.seed,
            notify_url=args.notify_url,
            wait=args.wait,
            progress=not args.no_progress,
            ranking=ranking_options,
        )
    if not args.wait:
        if output_format(args) == "json":
            print(json.dumps(outcome, indent=2))
        else:
            for job in outcome:
                print(f"{job['id']} {job['state']:10s} {job['model_name']}")
        return 0
    sys.stdout.write(render(outcome, output_format(args), args.top))
    if outcome.get("not_scored") and output_format(args) == "table":
        names = ", ".join(f"{m['name']} ({m['state']})" for m in outcome["not_scored"])
        print(f"\nnot scored, left out: {names}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from gscore.cli.ranking_options import add_ranking_options
    from gscore.cli.remote import _add_url_option, _client_errors

    p = subparsers.add_parser("sweep", help="submit a whole collection from one CSV or JSON manifest")
    verbs = p.add_subparsers(dest="sweep_verb", metavar="VERB")
    verbs.required = True
    q = verbs.add_parser(
        "submit",
        help="submit every row of MANIFEST (resumable: a rerun sends only what is missing)",
        description="Columns: checkpoint (a path relative to the manifest), model_name, test_accuracy, "
        "train_accuracy, initial_checkpoint (optional); every other column is a hyperparameter.",
    )
    q.add_argument("manifest", metavar="MANIFEST", help="a .csv or .json manifest, one row per checkpoint")
    q.add_argument("--arch", required=True, help="architecture spec: JSON text or a path to a JSON file")
    q.add_argument("--dataset", required=True, help="a built-in dataset or a name uploaded to the server")
    q.add_argument("--collection", required=True)
    q.add_argument("--split", default="train", choices=["train", "test"])
    q.add_argument("--measures", help="comma-separated names or families, e.g. c1,c2,c3,c4 or norm,c1 or all")
    q.add_argument("--param", action="append", default=[], metavar="MEASURE.KEY=VALUE")
    q.add_argument("--samples-per-class", type=int)
    q.add_argument("--notify-url", help="webhook of every job: the server POSTs a signed event when it ends")
    q.add_argument("--wait", action="store_true", help="wait for every job, then print the ranking")
    q.add_argument("--no-progress", action="store_true")
    add_ranking_options(q)  # of the final ranking (--wait); --seed seeds the probe and the bootstrap
    _add_url_option(q)
    q.set_defaults(func=_client_errors(_sweep_submit))
