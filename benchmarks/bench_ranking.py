"""Benchmark: bootstrap intervals of ``rank_collection`` (vectorized) against a per-resample Python loop.

Prints, in one run, for a collection of N models (default 100) on a full grid of three axes with one
measure that follows test accuracy with noise:
  (a) ``rank_collection(..., n_resamples=B)`` (default B = 1,000): wall time, best of 3;
  (b) the same with ``n_resamples=0`` (the point estimates only), so (a) - (b) is the intervals' cost;
  (c) a reference bootstrap of tau alone that expands each resample and loops over its pairs in Python
      (``--loop-resamples`` resamples, default 50), scaled to B resamples;
  and the ratio c / (a - b).

    python benchmarks/bench_ranking.py [--models 100] [--resamples 1000] [--loop-resamples 50]
"""

from __future__ import annotations

import argparse
import itertools
import random
import time

import numpy as np

from gscore.ranking.kendall import ModelRecord, rank_collection


def collection(n_models: int, seed: int = 0) -> list[ModelRecord]:
    rng = random.Random(seed)
    records = []
    for index in range(n_models):
        test = rng.uniform(0.5, 0.9)
        hyperparameters = {"a": index % 4, "b": (index // 4) % 5, "run": index // 20}
        records.append(ModelRecord(f"m{index}", hyperparameters, {"c3": test + rng.gauss(0, 0.1)}, test, 1.0))
    return records


def best_of(repeats: int, call) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def loop_bootstrap_tau(records: list[ModelRecord], resamples: int, seed: int = 0) -> list[float]:
    """Resample models, then count concordant pairs of distinct models with two Python loops."""
    rng = np.random.default_rng(seed)
    measure = [r.scores["c3"] for r in records]
    target = [r.test_accuracy for r in records]
    taus = []
    for _ in range(resamples):
        members = rng.integers(0, len(records), len(records)).tolist()
        total, pairs = 0, 0
        for i, j in itertools.combinations(members, 2):
            if i == j:
                continue
            pairs += 1
            dm, dt = measure[i] - measure[j], target[i] - target[j]  # type: ignore[operator]
            total += ((dm > 0) - (dm < 0)) * ((dt > 0) - (dt < 0))
        taus.append(total / pairs)
    return taus


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--loop-resamples", type=int, default=50)
    args = parser.parse_args()
    records = collection(args.models)
    with_intervals = best_of(3, lambda: rank_collection(records, n_resamples=args.resamples))
    point_only = best_of(3, lambda: rank_collection(records, n_resamples=0))
    started = time.perf_counter()
    loop_bootstrap_tau(records, args.loop_resamples)
    loop = (time.perf_counter() - started) * args.resamples / args.loop_resamples
    entry = rank_collection(records, n_resamples=args.resamples)["measures"]["c3"]
    intervals = with_intervals - point_only
    print(
        f"{args.models} models, {args.resamples} resamples, axes a (4), b (5), run ({-(-args.models // 20)})"
    )
    print(f"(a) rank_collection with intervals : {with_intervals * 1e3:8.1f} ms")
    print(
        f"(b) rank_collection, no intervals  : {point_only * 1e3:8.1f} ms   intervals cost {intervals * 1e3:.1f} ms"
    )
    print(
        f"(c) Python-loop bootstrap of tau   : {loop * 1e3:8.1f} ms   (scaled from {args.loop_resamples} resamples)"
    )
    print(f"ratio c / (a - b): {loop / max(intervals, 1e-9):.0f}x")
    print(f"tau = {entry['tau']:.3f} [{entry['ci_low']['tau']:.3f}, {entry['ci_high']['tau']:.3f}]")


if __name__ == "__main__":
    main()
