"""Benchmark: the TwoNN intrinsic dimension of gscore.measures.intrinsic_dimension versus scikit-dimension.

Prints, in one run:
  (a) at N points (default 10,000), D = 512 (a ResNet's penultimate width): wall time and peak memory of
      ``intrinsic_dimension(features, resamples=20)`` (one chunked float64 distance pass, neighbour cache);
  (b) scikit-dimension's ``TwoNN(discard_fraction=0.1)`` fitted on each of the same 20 subsets (it builds
      each subset's distances again): total wall time and peak memory;
  the ratio b/a and the largest absolute difference between the 20 estimates of (a) and (b);
  (c) at D = 16,384 (the largest stage of a torchvision ResNet-18 on 32x32 inputs: 64 x 16 x 16): wall
      time and peak memory of one stage's estimate (20 resamples), i.e. the largest part of ``pid``.

Features: relu(Z W) with Z [N, 16] Gaussian and W [16, D] Gaussian (a 16-dimensional curved cloud, no
ties), float32 on ``--device``. Peak memory: CPU = the peak resident set size sampled every 5 ms during the
call minus the RSS before it; CUDA = ``torch.cuda.max_memory_allocated`` minus the memory before.

    python benchmarks/bench_intrinsic_dimension.py [--n 10000] [--n-large 10000] [--device cpu|cuda]
                                                   [--skip-large] [--skip-comparison] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from timing import timed  # benchmarks/timing.py (scripts run from this folder)

from gscore.measures.intrinsic_dimension import intrinsic_dimension, resample_subsets

T = TypeVar("T")
RESAMPLES, FRACTION = 20, 0.9
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def with_peak_memory(fn: Callable[[], T], device: torch.device) -> tuple[T, float, int]:
    """Run ``fn``; returns (result, seconds, peak extra bytes)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out, seconds = timed(fn, device)
        return out, seconds, torch.cuda.max_memory_allocated() - before
    before = _rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, seconds = timed(fn, device)
    finally:
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return out, seconds, peak[0] - before


def features(n: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 16, generator=generator)
    return torch.relu(latent @ torch.randn(16, dim, generator=generator)).to(device)


def mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="points of the D = 512 comparison")
    parser.add_argument("--n-large", type=int, default=10_000, help="points of the D = 16,384 timing")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-large", action="store_true", help="skip the D = 16,384 timing (c)")
    parser.add_argument("--skip-comparison", action="store_true", help="skip (a) and (b)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {RESAMPLES} resamples of {FRACTION:.0%}"
    )

    if not args.skip_comparison:
        compare_with_scikit_dimension(args.n, args.seed, device)
    if not args.skip_large:
        time_largest_stage(args.n_large, args.seed, device)


def compare_with_scikit_dimension(n: int, seed: int, device: torch.device) -> None:
    """(a) and (b)."""
    x = features(n, 512, seed, device)
    ours, ours_seconds, ours_bytes = with_peak_memory(
        lambda: intrinsic_dimension(x, resamples=RESAMPLES, fraction=FRACTION, seed=seed), device
    )
    print(
        f"(a) ours, N={n}, D=512: ID {ours.mean:.4f} +- {ours.std:.4f}, {ours_seconds:.2f} s, "
        f"peak +{mib(ours_bytes)} (an N x N float64 matrix would be {mib(8 * n**2)}), "
        f"{ours.exact_searches} exact searches"
    )

    import skdim  # dev extra: scikit-dimension

    host = x.cpu().numpy().astype(np.float64)
    subsets = resample_subsets(n, RESAMPLES, FRACTION, seed)

    def skdim_runs() -> list[float]:
        return [float(skdim.id.TwoNN(discard_fraction=0.1).fit(host[s]).dimension_) for s in subsets]

    theirs, theirs_seconds, theirs_bytes = with_peak_memory(skdim_runs, torch.device("cpu"))
    difference = float(np.max(np.abs(np.array(ours.estimates) - np.array(theirs))))
    print(
        f"(b) scikit-dimension TwoNN x{RESAMPLES} on the same subsets (CPU): ID {np.mean(theirs):.4f}, "
        f"{theirs_seconds:.2f} s, peak +{mib(theirs_bytes)}"
    )
    print(
        f"    ratio b/a = {theirs_seconds / ours_seconds:.1f}x, max |estimate difference| = {difference:.2e}"
    )


def time_largest_stage(n: int, seed: int, device: torch.device) -> None:
    """(c)."""
    large = features(n, 16_384, seed, device)
    stage, stage_seconds, stage_bytes = with_peak_memory(
        lambda: intrinsic_dimension(large, resamples=RESAMPLES, fraction=FRACTION, seed=seed), device
    )
    print(
        f"(c) ours, N={n}, D=16,384 (pid's largest stage): ID {stage.mean:.4f} +- {stage.std:.4f}, "
        f"{stage_seconds:.2f} s, peak +{mib(stage_bytes)} (features {mib(large.numel() * 4)})"
    )


if __name__ == "__main__":
    main()
