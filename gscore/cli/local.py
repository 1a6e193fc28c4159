"""Local verbs: ``gscore score`` (one checkpoint), ``gscore demo``, ``gscore rank-file`` (offline rankings of
a JSON file; ``rank`` is its deprecated old name)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gscore.errors import GScoreError, SpecError
from gscore.measures.table import CLUSTERING_MEASURES, DEFAULT_MEASURES, FAMILIES, MEASURES


def parse_json_or_file(text: str, what: str) -> Any:
    """A JSON string, or the path of a file holding JSON."""
    candidate = Path(text)
    if not text.lstrip().startswith(("{", "[")) and candidate.is_file():
        text = candidate.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} is neither valid JSON nor a readable JSON file: {exc}", field=what) from None


def parse_param_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["c1.k=10", "random_sharpness.draws=5"]`` -> ``{"c1": {"k": 10}, ...}`` (values parsed as JSON)."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        name_key, sep, raw = item.partition("=")
        measure, dot, key = name_key.partition(".")
        if not sep or not dot or not measure or not key:
            raise SpecError(f"--param expects MEASURE.KEY=VALUE, got {item!r}", field="param")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(measure, {})[key] = value
    return params


def _progress_printer(enabled: bool):  # -> ProgressCallback
    """A tqdm bar per stage on stderr (extraction in samples, sharpness in bisection steps)."""
    if not enabled:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "load":
            return
        bar = bars.get(stage)
        if bar is None:
            unit = "img" if stage == "extract" else "step"
            bar = bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, leave=False)
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def format_scores_table(result: dict[str, Any]) -> str:
    """A readable table of scores with orientation and status, warnings under their measure, then one
    line of meta, the notes and the warnings about the whole result."""
    lines = [f"{'measure':<26} {'value':>12}  meaning"]
    statuses = result.get("status", {})
    for name, value in result["scores"].items():
        info = MEASURES.get(name)
        direction = "higher = better generalization" if (info and info.orientation > 0) else "lower = better"
        title = info.title if info else ""
        status = statuses.get(name, {})
        if value is None:
            lines.append(f"{name:<26} {status.get('status', 'n/a'):>12}  {status.get('reason') or ''}")
        else:
            lines.append(f"{name:<26} {value:>12.6g}  {title} ({direction})")
        lines += [f"{'':<26} {'warning':>12}  {warning}" for warning in status.get("warnings", [])]
    meta = result["meta"]
    parts = [f"samples {meta['samples']}", f"classes {meta['classes']}"]
    if "probe_accuracy" in meta:
        parts.append(f"{meta['split']} accuracy {meta['probe_accuracy']:.4f}")
    if "neurons" in meta:
        parts += [f"neurons {meta['neurons']}", f"layers {meta['layers']}"]
    parts.append(f"device {meta['device']}")
    parts += [f"{stage} {seconds:.2f}s" for stage, seconds in meta["seconds"].items()]
    lines.append("")
    lines.append(" | ".join(parts))
    lines += [f"note: {note}" for note in meta.get("notes", [])]
    lines += [f"warning: {warning}" for warning in meta.get("result_warnings", [])]
    return "\n".join(lines)


def check_dump_target(path: Path, measures: list[str] | None) -> None:
    """Refuse a --dump-activations target before any work is done: no activation measure among
    ``measures`` (None: the default set, which always has one), or no writable directory to write to."""
    if measures is not None and not any(m in CLUSTERING_MEASURES for m in measures):
        raise SpecError("--dump-activations needs an activation measure (c1-c4)", field="dump-activations")
    directory = path.parent
    if path.is_dir():
        raise SpecError(
            f"--dump-activations: {path} is a directory; give a file name", field="dump-activations"
        )
    if not directory.is_dir():
        raise SpecError(f"--dump-activations: no such directory {directory}", field="dump-activations")
    if not os.access(directory, os.W_OK):
        raise SpecError(
            f"--dump-activations: directory {directory} is not writable", field="dump-activations"
        )


def dump_activations(outcome: Any, path: Path) -> None:
    """Write pre [N,M] float32, layer_of [M], layer_names, y and (when present) sub as an .npz to exactly
    ``path`` (no suffix added), atomically."""
    import numpy as np

    acts = outcome.activations
    if acts is None:
        raise SpecError("--dump-activations needs an activation measure (c1-c4)", field="dump-activations")
    arrays = {
        "pre": acts.pre.detach().float().cpu().numpy(),
        "layer_of": acts.layer_of.cpu().numpy(),
        "layer_names": np.array(acts.layer_names),
        "y": outcome.y.cpu().numpy(),
    }
    if outcome.sub is not None:
        arrays["sub"] = outcome.sub.cpu().numpy()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GScoreError(f"could not write the activations to {path}: {exc.strerror or exc}") from None


def add_model_source_arguments(parser: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """``checkpoint`` (optional), ``--arch`` and ``--model FILE.onnx``: what ``score`` and ``submit`` score
    (``model_source`` turns them into a ScoreRequest's checkpoint and arch)."""
    parser.add_argument("checkpoint", nargs="?", help=checkpoint_help)
    parser.add_argument("--arch", help="architecture spec: JSON text or a path to a JSON file")
    parser.add_argument(
        "--model",
        metavar="FILE.onnx",
        help='an ONNX model (architecture and weights) instead of checkpoint + --arch; arch {"family": "onnx"}',
    )
    parser.add_argument(
        "--initial-checkpoint",
        metavar="FILE",
        help="the same architecture at its initialization (for distance_to_init and layer_rotation)",
    )


def model_source(checkpoint: str | None, arch: str | None, model: str | None) -> dict[str, Any]:
    """``{"checkpoint": Path, "arch": spec}`` for a ScoreRequest: a checkpoint with ``--arch``, or an
    ONNX file with ``--model`` (arch ``{"family": "onnx"}``; an ``--arch`` given with it may only set
    ``input``)."""
    if model is not None:
        if checkpoint is not None:
            raise SpecError(
                "give either a checkpoint (with --arch) or --model FILE.onnx, not both", field="model"
            )
        spec = {"family": "onnx"}
        if arch is not None:
            given = parse_json_or_file(arch, "arch")
            if not isinstance(given, dict) or given.get("family", "onnx") != "onnx":
                raise SpecError(
                    'with --model the arch is {"family": "onnx"}; --arch may only set "input"', field="arch"
                )
            spec.update(given)
        return {"checkpoint": Path(model), "arch": spec}
    if checkpoint is None:
        raise SpecError("give a checkpoint file (with --arch) or --model FILE.onnx", field="checkpoint")
    if arch is None:
        raise SpecError(
            "--arch is required with a checkpoint (only --model FILE.onnx needs none)", field="arch"
        )
    return {"checkpoint": Path(checkpoint), "arch": parse_json_or_file(arch, "arch")}


def cmd_score(args: argparse.Namespace) -> int:
    from gscore.pipeline import ScoreRequest, run
    from gscore.settings import get_settings

    settings = get_settings()

    measures = [m.strip() for m in args.measures.split(",") if m.strip()] if args.measures else None
    dump = Path(args.dump_activations) if args.dump_activations else None
    if dump is not None:
        check_dump_target(dump, measures)
    request = ScoreRequest(
        **model_source(args.checkpoint, args.arch, args.model),
        dataset=args.dataset,
        split=args.split,
        measures=measures,
        params=parse_param_overrides(args.param),
        samples_per_class=args.samples_per_class,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        data_dir=Path(args.data_dir) if args.data_dir else settings.resolved_datasets_dir,
        max_model_bytes=settings.max_upload_bytes,
        initial_checkpoint=Path(args.initial_checkpoint) if args.initial_checkpoint else None,
    )
    outcome = run(request, progress=_progress_printer(not args.no_progress))
    # scores first: a failed dump (disk full) must not lose them
    if args.json:
        print(json.dumps(outcome.result, indent=2), flush=True)
    else:
        print(format_scores_table(outcome.result), flush=True)
    if dump is not None:
        dump_activations(outcome, dump)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gscore.demo import run_demo

    result = run_demo(Path(args.out), epochs=args.epochs, seed=args.seed, log=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_scores_table(result))
    return 0


RANK_FILE_VERB = "rank-file"
DEPRECATED_RANK_VERB = (
    "rank"  # the old name of rank-file, too close to `ranking NAME` (a server's collection)
)


def measures_help() -> str:
    """The measure table for ``gscore score --help``: each measure with what it is, its orientation and
    its hierarchy need, by family (a family name selects all of its measures), and the default set."""
    lines = [
        "measures (--measures NAME,FAMILY,...; `all` for every one; default: "
        f"{', '.join(DEFAULT_MEASURES)}, c1/c2 only on a dataset with a label hierarchy):"
    ]
    families = [*FAMILIES, ""]  # "": measures selectable by their name only
    for family in families:
        members = [m for m in MEASURES.values() if m.family == family]
        if not members:
            continue
        lines.append(f" {family or 'other'}:")
        for measure in members:
            direction = "higher" if measure.orientation > 0 else "lower"
            hierarchy = "; needs a label hierarchy" if measure.needs_hierarchy else ""
            lines.append(
                f"  {measure.name:<25} {measure.title}: {direction} predicts better generalization{hierarchy}"
            )
    lines.append("parameters: --param MEASURE.KEY=VALUE; `GET /v1/measures` lists every default")
    return "\n".join(lines)


def cmd_rank(args: argparse.Namespace) -> int:
    from gscore.cli.ranking_options import output_format, ranking_arguments, render
    from gscore.ranking.kendall import load_rank_file, rank_collection

    if args.verb == DEPRECATED_RANK_VERB:
        print(
            f"gscore: note: `gscore {DEPRECATED_RANK_VERB} FILE` is now `gscore {RANK_FILE_VERB} FILE` "
            "(`gscore ranking NAME` ranks a server's collection); the old name will go",
            file=sys.stderr,
        )
    records = load_rank_file(args.file)
    result = rank_collection(records, **ranking_arguments(args))
    if not result["measures"]:
        print(
            f"gscore {RANK_FILE_VERB}: no model in {args.file} has scores (a 'scores' object per model)",
            file=sys.stderr,
        )
    if args.plot:
        from gscore.ranking.plots import write_plots

        paths = write_plots(
            records,
            list(result["measures"]),
            Path(args.plot),
            target=args.target,
            color_by=args.color_by,
            ranking=result,
        )
        print(f"wrote {len(paths)} plot(s) to {args.plot}", file=sys.stderr)
    sys.stdout.write(render(result, output_format(args), args.top))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from gscore.cli.ranking_options import add_ranking_options, add_ranking_selection

    p = sub.add_parser(
        "score",
        help="score one checkpoint locally (c1-c4, sharpness, ...)",
        epilog=measures_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source_arguments(p, ".safetensors or PyTorch state_dict file (with --arch)")
    p.add_argument(
        "--dataset", required=True, help="digits, cifar10, cifar100, cifar100-coarse, or an .npz path"
    )
    p.add_argument("--data-dir", help="where built-in datasets are installed (default: settings)")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument(
        "--measures",
        help="comma-separated names or families, e.g. c1,c2 or norm,c1 or all (default: c1-c4 where possible, "
        "margin, the norm measures and davies_bouldin; every measure is listed below)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="MEASURE.KEY=VALUE",
        help="measure parameter, e.g. c1.k=10 (repeatable)",
    )
    p.add_argument("--samples-per-class", type=int, help="seeded class-balanced subset of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", action="store_true", help="print {scores, meta} as JSON on stdout")
    p.add_argument("--dump-activations", metavar="OUT.npz", help="write the extracted pre-activations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="train a small CNN on digits superclasses, save it, and score it")
    p.add_argument("--out", default="gscore-demo", help="directory for the checkpoint and spec")
    p.add_argument(
        "--epochs", type=int, default=150, help="at most this many epochs; training stops at 99.5%% accuracy"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        RANK_FILE_VERB,
        aliases=[DEPRECATED_RANK_VERB],
        help="offline: rank the models of a JSON file and compute (granulated) Kendall coefficients "
        f"(`{DEPRECATED_RANK_VERB}` is its deprecated old name; `ranking NAME` asks a server)",
    )
    p.add_argument(
        "file",
        help='JSON list of {"name", "hyperparameters", "test_accuracy", "train_accuracy", "scores"}, '
        "e.g. the models.json of experiments/digits_zoo.py",
    )
    add_ranking_selection(p)
    add_ranking_options(p)
    p.set_defaults(func=cmd_rank)
