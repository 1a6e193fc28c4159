"""Benchmark: the cost of each peer measure relative to one forward pass over the same probe set.

On the VGG-9 spec (width 32, BatchNorm after every conv) with N random 32x32 probe images (default 1,000)
labelled with the model's own predictions (so that the margin is positive) and an initial model of the
same spec (another seed), prints for each peer measure the cost of its function alone (``measure.compute(ctx, params)`` on a context whose extraction pass, when
the measure reads one, is already done: what the measure adds to a run whose pass c1-c4 share), divided
by one bare forward pass over the probe set (inference mode, same batches). Then whole runs: the default
set (c1-c4 and the cheap baselines) against c1-c4 alone.

    python benchmarks/bench_peer_measures.py [--samples 1000] [--device cpu|cuda] [--repeats 3] [--threads 1]

On a CPU the cost is the process's CPU time (``time.process_time``) with one torch thread, so that other
work on a shared machine does not change it; on CUDA, wall-clock. Each figure is the fastest of
``--repeats`` runs after one warm-up run (imports, allocator).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import timed  # benchmarks/timing.py (scripts run from this folder)

import gscore
from gscore.inputs.datasets import ProbeSet
from gscore.measures.context import MeasureContext, ProbeKey
from gscore.measures.table import CLUSTERING_MEASURES, DEFAULT_MEASURES, MEASURES, family_members
from gscore.models import build_model

SPEC = {"family": "vgg", "depth": 9, "width": 32, "num_classes": 10}
PEER_FAMILIES = ("norm", "representation", "spectral")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time without spinning)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    n = args.samples
    x = torch.rand(n, 3, 32, 32, generator=generator)
    torch.manual_seed(1)
    initial = build_model(SPEC).eval()
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    with torch.no_grad():  # "trained": BatchNorm statistics that fold to something
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.2, 0.2)
    on_device = model.to(device)
    with torch.no_grad():  # labels the model fits (a positive margin) in several classes
        logits = torch.cat([model(x[start : start + 512]) for start in range(0, n, 512)])
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.bias -= logits.mean(0)  # centred logits: every class predicted somewhere
        y = torch.cat([model(x[start : start + 512]).argmax(1) for start in range(0, n, 512)])
    sub = 2 * y + torch.arange(n) % 2

    def forward_pass() -> None:
        with torch.inference_mode():
            for start in range(0, n, args.batch_size):
                on_device(x[start : start + args.batch_size].to(device))

    def seconds(fn: Callable[[], object]) -> float:
        """The fastest of the repeats: CPU seconds of this process on a CPU, wall-clock on CUDA."""
        fn()  # warm-up (imports, allocator)
        if device.type == "cuda":
            return min(timed(fn, device)[1] for _ in range(args.repeats))
        best = math.inf
        for _ in range(args.repeats):
            started = time.process_time()
            fn()
            best = min(best, time.process_time() - started)
        return best

    def run(measures: list[str]) -> None:
        result = gscore.score(
            model, (x, y, sub), measures, batch_size=args.batch_size, device=str(device), initial=initial
        )
        bad = {m: s["reason"] for m, s in result.status.items() if s["status"] != "ok"}
        if bad:
            raise SystemExit(f"not ok: {bad}")

    forward = seconds(forward_pass)
    unit = "wall-clock s" if device.type == "cuda" else "CPU s"
    print(
        f"VGG-9 width 32, N = {n} images 3x32x32, device {device}, {torch.get_num_threads()} torch thread(s)"
    )
    print(f"one forward pass over the probe set: {forward:.3f} {unit}\n")
    probe = ProbeSet(name="bench", split="train", x=x, y=y, sub=sub, num_classes=int(y.max()) + 1)

    def own_cost(name: str) -> float:
        """The measure function alone, on a context whose extraction pass (if it reads one) is done."""
        measure = MEASURES[name]
        params = dict(measure.parameters)
        ctx = MeasureContext(
            model=model,
            device=device,
            dataset=None,
            data_dir=Path("."),
            probe=probe,
            probe_key=ProbeKey("train", None, 0),
            samples_per_class=None,
            batch_size=args.batch_size,
            seed=0,
            plan=[(measure, params)],
            initial_model=initial,
        )
        if measure.needs & {"logits", "last_linear"}:
            ctx.activations()
        cached = dict(ctx.cache)  # nothing the measures share yet: each is timed from scratch
        return seconds(
            lambda: (ctx.cache.clear(), ctx.cache.update(cached), measure.compute(ctx, dict(params)))
        )

    extraction = seconds(lambda: run(["margin"]))
    print(
        f"a margin-only run (the shared extraction pass with logits, checks, the model copy): {extraction:.3f} "
        f"{unit} ({extraction / forward:.2f}x forward)\n"
    )
    print(f"{'measure':32s} {'own ' + unit:>14s} {'x forward':>10s}")
    for family in PEER_FAMILIES:
        for name in family_members(family):
            cost = own_cost(name)
            print(f"{name:32s} {cost:14.4f} {cost / forward:10.3f}")
    clustering = seconds(lambda: run(list(CLUSTERING_MEASURES)))
    default = seconds(lambda: run(list(DEFAULT_MEASURES)))
    print(
        f"\nc1-c4 alone {clustering:.3f} ({clustering / forward:.2f}x forward); the default set (c1-c4 + "
        f"margin, the norm measures, davies_bouldin) {default:.3f} ({default / forward:.2f}x forward): "
        f"+{(default - clustering) / forward:.2f} forward passes"
    )


if __name__ == "__main__":
    main()
