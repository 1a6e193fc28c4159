"""Benchmark: the cost of each peer measure relative to one forward pass over the same probe set.

On the VGG-9 spec (width 32, BatchNorm after every conv) with N random 32x32 probe images (default 2,000)
labelled with the model's own predictions (so that the margin is positive), and an initial model of the same spec (another seed), prints for each peer measure the time
of a ``gscore.score`` run computing it alone (``meta.seconds.total``: extraction, the measure, everything
but the model copy) and its own time (``meta.seconds[name]``: what it adds when the extraction pass is
shared with c1-c4), each divided by one bare forward pass over the probe set (inference mode, same batches);
then the default set (c1-c4 and the cheap baselines) against c1-c4 alone, which share one extraction pass.

    python benchmarks/bench_peer_measures.py [--samples 2000] [--device cpu|cuda] [--repeats 3]

Each figure is the fastest of ``--repeats`` runs after one warm-up run (imports, allocator): on a
machine shared with other work the minimum is the least disturbed figure.
"""

from __future__ import annotations

import argparse

import torch
from timing import timed  # benchmarks/timing.py (scripts run from this folder)

import gscore
from gscore.measures.table import CLUSTERING_MEASURES, DEFAULT_MEASURES, family_members
from gscore.models import build_model

SPEC = {"family": "vgg", "depth": 9, "width": 32, "num_classes": 10}
PEER_FAMILIES = ("norm", "representation", "spectral")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)

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

    def fastest_seconds(fn) -> float:  # noqa: ANN001
        fn()  # warm-up
        return min(timed(fn, device)[1] for _ in range(args.repeats))

    forward = fastest_seconds(forward_pass)
    print(f"VGG-9 width 32, N = {n} images 3x32x32, device {device}, {torch.get_num_threads()} torch threads")
    print(f"one forward pass over the probe set: {forward:.3f} s\n")

    def run(measures: list[str]) -> tuple[float, float]:
        """(the run's seconds, the measure's own seconds: the run without its extraction pass)."""
        result = gscore.score(
            model,
            (x, y, sub),
            measures,
            batch_size=args.batch_size,
            device=str(device),
            initial=initial,
        )
        bad = {m: s["reason"] for m, s in result.status.items() if s["status"] != "ok"}
        if bad:
            print(f"  (not ok: {bad})")
        seconds = result.meta["seconds"]
        return seconds["total"], sum(seconds.get(name, 0.0) for name in measures)

    print(f"{'measure':32s} {'run s':>8s} {'x forward':>10s} {'own s':>8s} {'own x fwd':>10s}")
    for family in PEER_FAMILIES:
        for name in family_members(family):
            run([name])  # warm-up
            runs = [run([name]) for _ in range(args.repeats)]
            total = min(t for t, _ in runs)
            own = min(o for _, o in runs)
            print(f"{name:32s} {total:8.3f} {total / forward:10.2f} {own:8.3f} {own / forward:10.2f}")
    clustering = min(run(list(CLUSTERING_MEASURES))[0] for _ in range(args.repeats))
    default = min(run(list(DEFAULT_MEASURES))[0] for _ in range(args.repeats))
    print(
        f"\nc1-c4 alone {clustering:.3f} s ({clustering / forward:.2f}x forward); the default set (c1-c4 + "
        f"margin, the norm measures, davies_bouldin) {default:.3f} s ({default / forward:.2f}x forward): "
        f"+{default - clustering:.3f} s, +{(default - clustering) / forward:.2f} forward passes"
    )


if __name__ == "__main__":
    main()
