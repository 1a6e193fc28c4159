"""Calling the service: ``submit``, ``status``, ``collection``, ``cancel``, ``datasets``, ``ranking`` (HTTP, through
:class:`gscore.client.Client`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def _url(args: argparse.Namespace) -> str:
    return args.url or os.environ.get("GSCORE_URL", DEFAULT_URL)


def _client(args: argparse.Namespace) -> Any:
    """A client for ``--url`` with ``--api-key`` (default ``$GSCORE_API_KEY``, read by the client)."""
    from gscore.client import Client

    return Client(_url(args), api_key=getattr(args, "api_key", None))


def _number(value: Any, digits: int = 4) -> str:
    """A score or accuracy for a table: ``digits`` significant digits, ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}"


def _result_lines(result: dict[str, Any]) -> list[str]:
    """A job result as text: each measure's score (or status and reason) with its warnings, then the
    warnings about the whole result (a model that does not fit its training data)."""
    status = result.get("status") or {}
    lines = []
    for name, value in result["scores"].items():
        entry = status.get(name) or {}
        if value is None:
            reason = f": {entry['reason']}" if entry.get("reason") else ""
            lines.append(f"  {name:28s} {entry.get('status', 'not computed')}{reason}")
        else:
            lines.append(f"  {name:28s} {_number(value, 6)}")
        lines += [f"  {'':28s} warning: {warning}" for warning in entry.get("warnings") or []]
    lines += [f"  warning: {warning}" for warning in (result.get("meta") or {}).get("result_warnings", [])]
    return lines


def _print_job(job: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(job, indent=2))
    else:
        print(f"{job['id']} {job['state']}")
        if job.get("result"):
            print("\n".join(_result_lines(job["result"])))
        if job.get("error"):
            from gscore.errors import title_and_detail

            print(f"  {title_and_detail(job['error']['title'], job['error']['detail'])}", file=sys.stderr)
        if job.get("notification"):
            note = job["notification"]
            last = note["last_error"] or (f"answered {note['last_status_code']}" if note["attempts"] else "")
            print(f"  webhook {note['state']}, {note['attempts']} attempt(s)" + (f": {last}" if last else ""))
    return 0 if job["state"] in ("queued", "running", "succeeded") else 1


def _wait(client: Any, job_id: str, show_progress: bool) -> dict[str, Any]:
    from gscore.cli.progress import ProgressBar

    bar = ProgressBar() if show_progress else None
    try:
        return client.wait(job_id, poll=0.5, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def _existing_file_or_json(text: str, option: str) -> str:
    """``text`` itself when it is JSON text or an existing file; a path that does not exist is an error
    that says the file is missing (not that it is invalid JSON)."""
    from gscore.errors import SpecError

    stripped = text.lstrip()
    if stripped.startswith(("{", "[")) or Path(text).is_file():
        return text
    if Path(text).exists():
        raise SpecError(f"{option} {text!r} is not a file", field=option.lstrip("-"))
    raise SpecError(
        f"{option} file {text!r} is missing (no such file; give a JSON file's path or JSON text)",
        field=option.lstrip("-"),
    )


def _submit(args: argparse.Namespace) -> int:
    from gscore.cli.local import model_source, parse_json_or_file, parse_param_overrides

    hyperparameters = (
        parse_json_or_file(args.hyperparameters, "hyperparameters") if args.hyperparameters else None
    )
    arch_text = _existing_file_or_json(args.arch, "--arch") if args.arch is not None else None
    source = model_source(args.checkpoint, arch_text, args.model)  # checkpoint + --arch, or --model
    if not source["checkpoint"].is_file():
        from gscore.errors import CheckpointError

        what = "--model" if args.model else "checkpoint"
        raise CheckpointError(f"{what} file {str(source['checkpoint'])!r} is missing (no such file)")
    if args.initial_checkpoint is not None and not Path(args.initial_checkpoint).is_file():
        from gscore.errors import CheckpointError

        raise CheckpointError(
            f"--initial-checkpoint file {args.initial_checkpoint!r} is missing (no such file)"
        )
    from gscore.client import JobSubmission

    submission = JobSubmission(
        checkpoint=None if args.model else source["checkpoint"],
        arch=source["arch"],
        dataset=args.dataset,
        model=source["checkpoint"] if args.model else None,
        replace=args.replace,
        split=args.split,
        measures=args.measures.split(",") if args.measures else None,
        params=parse_param_overrides(args.param),
        samples_per_class=args.samples_per_class,
        seed=args.seed,
        collection=args.collection,
        model_name=args.model_name,
        hyperparameters=hyperparameters,
        test_accuracy=args.test_accuracy,
        train_accuracy=args.train_accuracy,
        notify_url=args.notify_url,
        initial=args.initial_checkpoint,
    )
    with _client(args) as client:
        job = client.submit_job(submission)
        if args.wait:
            job = _wait(client, job["id"], not args.no_progress)
    return _print_job(job, args.json)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = _wait(client, args.job, not args.no_progress) if args.wait else client.job(args.job)
    return _print_job(job, args.json)


def _hyperparameter(value: Any) -> str:
    """``0.1``, ``(0.1, 0.0005)`` for a paired value, ``(not set)`` for null."""
    if value is None:
        return "(not set)"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def _aligned(rows: list[list[str]]) -> str:
    """Rows of cells as left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def collection_table(collection: dict[str, Any]) -> str:
    """One row per model: name, state, every hyperparameter, the accuracies and scores (4 significant
    digits; ``-`` when missing)."""
    models = collection["models"]
    axes = list(dict.fromkeys(axis for model in models for axis in model.get("hyperparameters") or {}))
    measures = list(dict.fromkeys(name for model in models for name in model.get("scores") or {}))
    rows = [["model", "state", *axes, "test_acc", "train_acc", *measures]]
    for model in models:
        hyperparameters = model.get("hyperparameters") or {}
        scores = model.get("scores") or {}
        rows.append(
            [
                model["model_name"],
                model["state"],
                *(_hyperparameter(hyperparameters[a]) if a in hyperparameters else "-" for a in axes),
                _number(model.get("test_accuracy")),
                _number(model.get("train_accuracy")),
                *(_number(scores.get(m)) for m in measures),
            ]
        )
    return _aligned(rows)


def _collection(args: argparse.Namespace) -> int:
    with _client(args) as client:
        collection = client.collection(args.name)
    if args.json:
        print(json.dumps(collection, indent=2))
        return 0
    print(collection_table(collection))
    return 0


def _ranking(args: argparse.Namespace) -> int:
    from gscore.cli.ranking_options import output_format, ranking_arguments, render

    options = ranking_arguments(args)
    with _client(args) as client:
        ranking = client.ranking(args.name, **options)
        if args.plot:
            out_dir = Path(args.plot)
            out_dir.mkdir(parents=True, exist_ok=True)
            protocol = {key: options[key] for key in ("min_train_accuracy", "level", "n_resamples", "seed")}
            for measure in ranking["measures"]:
                (out_dir / f"{measure}.png").write_bytes(
                    client.plot(args.name, [measure], args.target, color_by=args.color_by, **protocol)
                )
            print(f"wrote {len(ranking['measures'])} plot(s) to {out_dir}", file=sys.stderr)
        if args.mlflow_experiment:
            from gscore.integrations.mlflow import log_collection_ranking

            protocol = {key: options[key] for key in ("min_train_accuracy", "level", "n_resamples", "seed")}
            run_id = log_collection_ranking(
                client, args.name, ranking, args.mlflow_experiment, target=args.target, color_by=args.color_by,
                protocol=protocol,
            )  # fmt: skip
            print(f"logged to MLflow experiment {args.mlflow_experiment!r}, run {run_id}", file=sys.stderr)
    fmt = output_format(args)
    sys.stdout.write(render(ranking, fmt, args.top))
    if ranking.get("not_scored") and fmt == "table":
        names = ", ".join(f"{m['name']} ({m['state']})" for m in ranking["not_scored"])
        print(f"\nnot scored yet, left out: {names}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(args.job)
    if args.json:
        print(json.dumps(job, indent=2))
    elif job["state"] == "cancelled":
        print(f"{job['id']} cancelled")
    else:  # a running job stops at its next cancellation check
        print(f"{job['id']} {job['state']}, cancel requested (it stops at its next check)")
    return 0


def _dataset_row(dataset: dict[str, Any]) -> list[str]:
    samples = dataset.get("samples") or {}
    return [
        dataset["name"],
        dataset["source"],
        "yes" if dataset["installed"] else "no",
        "-" if dataset.get("classes") is None else str(dataset["classes"]),
        "-" if dataset.get("subclasses") is None else str(dataset["subclasses"]),
        ", ".join(f"{split} {count}" for split, count in samples.items()) or "-",
        (dataset.get("sha256") or "")[:12] or "-",
    ]


def _datasets_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        datasets = client.datasets()
    if args.json:
        print(json.dumps(datasets, indent=2))
        return 0
    print("\t".join(["name", "source", "installed", "classes", "subclasses", "samples", "sha256"]))
    for dataset in datasets:
        print("\t".join(_dataset_row(dataset)))
    return 0


def _datasets_upload(args: argparse.Namespace) -> int:
    from gscore.errors import DatasetError

    path = Path(args.file)
    if not path.is_file():
        raise DatasetError(f"dataset file {args.file!r} is missing (no such file)")
    with _client(args) as client:
        dataset = client.upload_dataset(path, name=args.name)
    if args.json:
        print(json.dumps(dataset, indent=2))
        return 0
    row = _dataset_row(dataset)
    print(f"uploaded {row[0]}: {row[3]} classes, {row[4]} subclasses, samples {row[5]}, sha256 {row[6]}")
    print(f"score with: gscore submit CKPT --arch ARCH --dataset {row[0]}")
    return 0


def _client_errors(handler: Any) -> Any:
    """Service errors print the problem's title and detail, no traceback."""

    def run(args: argparse.Namespace) -> int:
        import httpx

        from gscore.client import ServiceError

        try:
            return handler(args)
        except ServiceError as exc:
            print(f"gscore: error: {exc}", file=sys.stderr)
            return 2
        except httpx.TransportError as exc:
            print(
                f"gscore: error: cannot reach {_url(args)} ({exc}); start a server with `gscore up`, or point "
                "--url / $GSCORE_URL at a running one",
                file=sys.stderr,
            )
            return 2

    return run


def _add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"server URL (default $GSCORE_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="API key sent as `Authorization: Bearer` (default $GSCORE_API_KEY)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from gscore.cli.local import add_model_source_arguments
    from gscore.cli.ranking_options import add_ranking_options, add_ranking_selection

    p = subparsers.add_parser("submit", help="upload a checkpoint or an .onnx model for scoring")
    add_model_source_arguments(p, "a state_dict checkpoint (with --arch); or use --model")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the collection's entry of the same --model-name (else re-using a name is refused)",
    )
    p.add_argument("--dataset", required=True, help="a built-in dataset or a name uploaded to the server")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--measures", help="comma-separated names or families, e.g. c1,c2,c3,c4 or norm,c1 or all")
    p.add_argument("--param", action="append", default=[], metavar="MEASURE.KEY=VALUE")
    p.add_argument("--samples-per-class", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--collection")
    p.add_argument("--model-name")
    p.add_argument("--hyperparameters", help="a flat JSON object (text or a file)")
    p.add_argument("--test-accuracy", type=float)
    p.add_argument("--train-accuracy", type=float)
    p.add_argument("--notify-url", help="webhook: the server POSTs a signed event here when the job ends")
    p.add_argument("--wait", action="store_true", help="wait for the result (progress bar on stderr)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    _add_url_option(p)
    p.set_defaults(func=_client_errors(_submit))

    p = subparsers.add_parser("status", help="a job's state, progress and result")
    p.add_argument("job")
    p.add_argument("--wait", action="store_true", help="wait until it finishes (progress bar on stderr)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    _add_url_option(p)
    p.set_defaults(func=_client_errors(_status))

    p = subparsers.add_parser(
        "collection", help="the models of a server's collection: hyperparameters, accuracies, scores"
    )
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    _add_url_option(p)
    p.set_defaults(func=_client_errors(_collection))

    p = subparsers.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    _add_url_option(p)
    p.set_defaults(func=_client_errors(_cancel))

    p = subparsers.add_parser("datasets", help="probe sets on the server: list, upload an .npz")
    verbs = p.add_subparsers(dest="datasets_verb", metavar="VERB")
    verbs.required = True
    q = verbs.add_parser("list", help="built-in datasets (installed or not) and uploaded ones")
    q.add_argument("--json", action="store_true")
    _add_url_option(q)
    q.set_defaults(func=_client_errors(_datasets_list))
    q = verbs.add_parser("upload", help="upload an .npz probe set (x, y; optional sub, x_test, y_test)")
    q.add_argument("file", metavar="FILE.npz")
    q.add_argument("--name", help="the dataset's name on the server (default: from the file name)")
    q.add_argument("--json", action="store_true")
    _add_url_option(q)
    q.set_defaults(func=_client_errors(_datasets_upload))

    p = subparsers.add_parser(
        "ranking",
        help="a server's collection NAME: Kendall table (rows measures, columns hyperparameters and total) "
        "and rankings (a JSON file offline: rank-file)",
    )
    p.add_argument("name")
    p.add_argument(
        "--mlflow-experiment",
        metavar="EXP",
        help="also log the ranking to this MLflow experiment (JSON, CSV, plots; coefficients as metrics; "
        "needs gscore[mlflow], store: $MLFLOW_TRACKING_URI)",
    )
    add_ranking_selection(p)
    add_ranking_options(p)
    _add_url_option(p)
    p.set_defaults(func=_client_errors(_ranking))
