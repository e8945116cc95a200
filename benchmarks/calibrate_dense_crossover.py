"""Measure intrada.evaluation.postprocess.DENSE_CROSSOVER: CPU time of upsample_argmax per crossover setting.

The cost model fills a row of cells densely when its sparse work exceeds ``crossover`` x its dense
work. This script times ``upsample_argmax`` (process CPU time, so other jobs on a shared machine
distort it less than wall time; min over repeats, settings interleaved) on the benchmark's
street-scene logits with per-cell Gaussian noise of several strengths (0 = the smooth kind, 3 =
the benchmark's cell_noise kind) and on pure noise, for several crossovers; ``inf`` is the sparse
path alone, ``0`` the dense path alone. Every result is checked equal to the sparse path's.
Run: ``PYTHONPATH=lib python benchmarks/calibrate_dense_crossover.py`` (~1-2 min).
"""
from __future__ import annotations

import math
import time

import numpy as np
from bench_postprocess import NOISE_SIGMA, _sample  # the benchmark's scene generator

from intrada.evaluation.postprocess import DENSE_CROSSOVER, upsample_argmax

CROSSOVERS = (math.inf, 0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6)
NOISE = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)
SEEDS = (0, 1, 2)
REPEATS = 4


def main() -> None:
    images: dict[str, list[np.ndarray]] = {}
    for seed in SEEDS:
        smooth = _sample(seed)[1]
        rng = np.random.default_rng(seed + 20_000)
        for sigma in NOISE:
            images.setdefault(f"smooth + noise {sigma:g}", []).append(
                (smooth + sigma * rng.standard_normal(smooth.shape)).astype(np.float32))
        images.setdefault("pure noise", []).append((NOISE_SIGMA * rng.standard_normal(smooth.shape)).astype(np.float32))
    best = {(k, i, c): math.inf for k, xs in images.items() for i in range(len(xs)) for c in CROSSOVERS}
    for _ in range(REPEATS):
        for kind, xs in images.items():
            for i, x in enumerate(xs):
                expected = upsample_argmax(x, dense_crossover=math.inf)
                for c in CROSSOVERS:
                    start = time.process_time()
                    out = upsample_argmax(x, dense_crossover=c)
                    best[kind, i, c] = min(best[kind, i, c], time.process_time() - start)
                    assert np.array_equal(out, expected), (kind, i, c)
    print(f"CPU ms per image (min of {REPEATS}), mean over {len(SEEDS)} images; default crossover {DENSE_CROSSOVER}")
    print(f"{'logits':>22s} " + " ".join(f"{c:>6g}" for c in CROSSOVERS))
    total = dict.fromkeys(CROSSOVERS, 0.0)
    for kind, xs in images.items():
        row = []
        for c in CROSSOVERS:
            ms = 1000 * sum(best[kind, i, c] for i in range(len(xs))) / len(xs)
            total[c] += ms
            row.append(ms)
        print(f"{kind:>22s} " + " ".join(f"{ms:6.1f}" for ms in row))
    print(f"{'sum':>22s} " + " ".join(f"{total[c]:6.1f}" for c in CROSSOVERS))


if __name__ == "__main__":
    main()
