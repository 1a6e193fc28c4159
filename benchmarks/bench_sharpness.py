"""Benchmark: random_sharpness (1/sigma') with batched copies (vmap) versus one copy at a time.

Prints, in one run, on the VGG-9 spec (width 32, 10 classes, random init, eval mode) with N random 32x32
probe images (default 2,000) labelled by the model's own predictions (so the base accuracy is 1 and the
measure is defined; the timing does not depend on the pixels):
  (a) wall time of ``random_sharpness(..., batched=True)``: ``draws`` noisy copies per pass via vmap,
  (b) wall time of ``random_sharpness(..., batched=False)``: the same noise, one copy at a time,
  and the ratio b/a. Both use ``tolerance=0`` (no early stop within tolerance) and the same seed, so they
  run the same bisection (checked: same scale, same number of evaluations) and do identical work: the
  early stop of the draws once the error is certainly too high (which the one-by-one route can take after
  any draw, the batched one only after a pass) is switched off here unless ``--early-stop``.

    python benchmarks/bench_sharpness.py [--samples 2000] [--draws 10] [--steps 15] [--batch-size 500]
                                         [--kernels-only] [--device cpu|cuda] [--repeats 1]

The full setting is heavy on a CPU (VGG-9 costs ~0.1 GFLOP per image, one evaluation is draws x N images):
use e.g. ``--samples 200 --draws 10 --steps 2`` there.
"""

from __future__ import annotations

import argparse

import torch
from timing import timed  # benchmarks/timing.py (scripts run from this folder)

from gscore.measures import sharpness
from gscore.measures.sharpness import SharpnessResult, random_sharpness
from gscore.models import build_model

VGG9 = {"family": "vgg", "depth": 9, "width": 32, "num_classes": 10}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=2000, help="probe images (default 2000)")
    parser.add_argument("--draws", type=int, default=10, help="Monte-Carlo draws per evaluation")
    parser.add_argument("--steps", type=int, default=15, help="bisection steps")
    parser.add_argument("--batch-size", type=int, default=500, help="images per forward pass of one copy")
    parser.add_argument("--copies-per-pass", type=int, default=None, help="default: all draws at once")
    parser.add_argument("--kernels-only", action="store_true", help="1/sigma'' (batch-statistics mode)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--early-stop",
        action="store_true",
        help="keep the early stop of the draws (as in production): the two routes then do different work",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time each variant this many times, alternating; report the fastest",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if not args.early_stop:  # every draw of every evaluation, in both routes (identical work)
        full_error = sharpness._random_error
        sharpness._random_error = lambda *a, **kw: full_error(*a, **{**kw, "threshold": None})

    torch.manual_seed(args.seed)
    model = build_model(VGG9).eval().to(device)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.samples, 3, 32, 32, generator=generator)
    with torch.no_grad():
        y = torch.cat([model(chunk.to(device)).argmax(1).cpu() for chunk in x.split(args.batch_size)])
    print(
        f"VGG-9 w=32 on {device}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{args.samples} probe images, {args.draws} draws, {args.steps} bisection steps, "
        f"batch {args.batch_size}, kernels_only={args.kernels_only}, torch threads {torch.get_num_threads()}"
    )

    def run(batched: bool, steps: int, samples: int) -> SharpnessResult:
        return random_sharpness(
            model,
            x[:samples],
            y[:samples],
            kernels_only=args.kernels_only,
            draws=args.draws,
            steps=steps,
            tolerance=0.0,
            seed=args.seed,
            batch_size=args.batch_size,
            device=device,
            copies_per_pass=args.copies_per_pass,
            batched=batched,
        )

    for batched in (True, False):  # warm-up: allocator, kernels, vmap tracing paths
        run(batched, steps=1, samples=min(args.samples, 2 * args.draws))
    batched_times: list[float] = []
    looped_times: list[float] = []
    for _ in range(args.repeats):  # alternate, so that load from other processes hits both alike
        batched_result, seconds = timed(lambda: run(True, args.steps, args.samples), device)
        batched_times.append(seconds)
        looped_result, seconds = timed(lambda: run(False, args.steps, args.samples), device)
        looped_times.append(seconds)
    batched_seconds, looped_seconds = min(batched_times), min(looped_times)

    same = (batched_result.scale, batched_result.diagnostics["evaluations"]) == (
        looped_result.scale,
        looped_result.diagnostics["evaluations"],
    )
    evaluations = batched_result.diagnostics["evaluations"]
    print(
        f"sigma' = {batched_result.scale:.6g} (1/sigma' = {batched_result.value:.4g}), "
        f"{batched_result.steps} bisection steps, {evaluations} evaluations of {args.draws} x {args.samples} "
        f"images; batched and one-by-one agree: {same}"
    )
    print(
        f"(a) batched (vmap, {args.copies_per_pass or args.draws} copies per pass): {batched_seconds:8.2f} s "
        f"({batched_seconds / evaluations:.2f} s per evaluation)"
    )
    print(
        f"(b) one copy at a time:                 {looped_seconds:8.2f} s "
        f"({looped_seconds / evaluations:.2f} s per evaluation)"
    )
    if args.repeats > 1:
        print(
            f"all runs (s): batched {[round(t, 2) for t in batched_times]}, "
            f"one by one {[round(t, 2) for t in looped_times]}"
        )
    print(f"ratio b/a: {looped_seconds / batched_seconds:.2f}x")
    if not same:
        raise SystemExit("batched and one-by-one runs disagree")


if __name__ == "__main__":
    main()
