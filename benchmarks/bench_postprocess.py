"""Dumps -> mIoU against the seed's postprocess, on three kinds of logits, bit-identical on each.

The fast postprocess (:func:`intrada.evaluation.postprocess.upsample_argmax`) costs what the logits make it
cost: cells where one class wins everywhere are nearly free, contested cells are interpolated. So
the benchmark times it on three kinds of main-head logits (19x65x129 float32, written as ais_bench
dumps, with street-scene 2048x1024 labelIds PNGs):

* ``smooth``: segmenter-like, smooth class fields over a street scene (~10% of cells contested);
* ``cell_noise``: the same plus independent Gaussian noise per logit cell (sigma 3; ~43% of cells
  contested by ~5 classes), the regime where per-cell work dominates;
* ``pure_noise``: independent Gaussian noise only (sigma 3; every cell contested by ~15 classes),
  the worst case.

For each kind, in one run:

* reference: ``evaluate_dumps_reference``, the seed's loop (read bin, torch bilinear upsample with
  align_corners=True, argmax, PIL label + lookup table, fast_hist), one process, torch's default
  threads (torch itself uses all cores for the upsample);
* ours, cold label cache: ``evaluate_dumps(workers=2)`` with an empty label cache (PNG decoding
  and worker start-up included);
* ours, warm label cache: the same again, labels read from the .npy cache (the gate's normal case);
* ours, warm, 1 process: ``workers=1``, the in-process cost;
* kernel: per image, ``upsample_argmax`` against ``upsample_argmax_reference`` (torch upsample +
  argmax), in this process; this is also the pixel-for-pixel check, and it times the sparse path
  alone (``dense_crossover=inf``) too, to show what the dense path buys.

Asserted on every kind: 0 differing pixels and confusion matrices identical to the reference's.
Speed targets are same-run ratios (CI reruns a failing benchmark once to tell noise from a
regression): smooth, warm cache >= 10x (issue 5 target 1; cold guarded at >= 5x); pure noise, the
worst case, no slower than the reference in every configuration (and its chosen paths >= 1.5x as
fast as the sparse path alone); the rest are regression guards (see TARGETS).
Run: ``python -m pytest benchmarks/bench_postprocess.py -m bench -s``.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from intrada.core import protocol
from intrada.dataset.cityscapes import list_samples
from intrada.dataset.dumps import DumpSet, write_dumps
from intrada.evaluation.evaluate import evaluate_dumps, evaluate_dumps_reference
from intrada.evaluation.postprocess import contest_profile, upsample_argmax, upsample_argmax_reference

pytestmark = pytest.mark.bench

KINDS = ("smooth", "cell_noise", "pure_noise")
N_IMAGES = {"smooth": 24, "cell_noise": 12, "pure_noise": 12}
NOISE_SIGMA = 3.0  # per-cell noise on smooth logits, and the scale of pure noise
# Same-run ratio targets (reference time / ours) per kind: warm label cache with 2 workers, cold
# label cache with 2 workers, warm with 1 process, and the in-process kernel; over_sparse_only is
# the sparse-only path's time / the chosen paths' (what the dense path buys on pure noise). Smooth
# warm is the claim (issue 5 target 1); pure noise must be no slower than the reference anywhere;
# the rest are regression guards at about half of the lowest this machine measured at load 4 to 8
# (docs/performance.md).
TARGETS = {
    "smooth": {"warm": 10.0, "cold": 5.0, "single": 10.0, "kernel": 20.0},
    "cell_noise": {"warm": 2.0, "cold": 1.5, "single": 3.0, "kernel": 3.0},
    "pure_noise": {"warm": 1.0, "cold": 1.0, "single": 1.0, "kernel": 1.0, "over_sparse_only": 1.5},
}
TRAIN_TO_LABEL = {t: l for l, t in protocol.LABEL_ID_TO_TRAIN_ID.items()}
EGO_VEHICLE_ID = 1  # a labelId without trainId


def _scene(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """trainIds (255 = ignore) of a random street scene, evaluated at normalised coordinates, so
    the same scene can be drawn at label and at logit resolution."""
    y, x = ys[:, None], xs[None, :]
    out = np.full((ys.size, xs.size), 10, np.uint8)  # sky
    edges = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, rng.integers(6, 14))), [1.0]])
    for a, b in zip(edges[:-1], edges[1:]):  # skyline of buildings, trees, walls, fences
        top = rng.uniform(0.05, 0.35) + 0.01 * np.sin(40 * x + rng.uniform(0, 6))
        out[((x >= a) & (x < b)) & (y > top)] = rng.choice([2, 2, 2, 8, 8, 3, 4])
    road_top = 0.55 + 0.02 * rng.standard_normal()
    out[np.broadcast_to(y > road_top, out.shape)] = 0
    sidewalk = (y > road_top) & ((x < 0.25 - (y - road_top) * 0.6) | (x > 0.75 + (y - road_top) * 0.6))
    out[sidewalk] = 1
    out[(y > road_top - 0.04) & (y <= road_top) & (x < rng.uniform(0.1, 0.4))] = 9  # terrain strip
    for _ in range(rng.integers(3, 9)):  # vehicles
        cx, cy, w, h = rng.uniform(0.05, 0.95), rng.uniform(road_top, 0.85), rng.uniform(0.03, 0.15), rng.uniform(0.03, 0.1)
        out[(abs(x - cx) < w / 2) & (abs(y - cy) < h / 2)] = rng.choice([13, 13, 13, 14, 15, 16])
    for _ in range(rng.integers(2, 10)):  # people, riders, their bikes
        cx, cy = rng.uniform(0.05, 0.95), rng.uniform(road_top - 0.05, 0.8)
        out[(abs(x - cx) < 0.006) & (abs(y - cy) < 0.05)] = rng.choice([11, 11, 12])
        out[(abs(x - cx) < 0.009) & (abs(y - cy - 0.05) < 0.015)] = rng.choice([18, 17])
    for _ in range(rng.integers(3, 10)):  # poles (thinner than one logit cell) with signs / lights
        cx = rng.uniform(0, 1)
        out[(abs(x - cx) < 0.0025) & (y > 0.2) & (y < rng.uniform(road_top, 0.75))] = 5
        out[(abs(x - cx) < 0.008) & (abs(y - 0.22) < 0.012)] = rng.choice([6, 7])
    out[np.broadcast_to(y > 0.92, out.shape)] = 255  # ego vehicle
    return out


def _blur(a: np.ndarray, passes: int = 2) -> np.ndarray:
    """[1 4 6 4 1]/16 binomial blur of [C, H, W] along H and W, edges replicated."""
    k = np.array([1, 4, 6, 4, 1], np.float32) / 16
    _, h, w = a.shape
    for _ in range(passes):
        p = np.pad(a, ((0, 0), (2, 2), (0, 0)), mode="edge")
        a = sum(k[i] * p[:, i:i + h] for i in range(5))
        p = np.pad(a, ((0, 0), (0, 0), (2, 2)), mode="edge")
        a = sum(k[i] * p[:, :, i:i + w] for i in range(5))
    return a


def _sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds uint8 [1024, 2048], main-head logits float32 [19, 65, 129]) of one scene."""
    h, w = protocol.LABEL_H, protocol.LABEL_W
    hi = _scene(np.random.default_rng(seed), (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w)
    label = np.zeros(hi.shape, np.uint8)  # 0 = unlabeled
    for train_id, label_id in TRAIN_TO_LABEL.items():
        label[hi == train_id] = label_id
    label[hi == 255] = EGO_VEHICLE_ID
    # logit grid point (i, j) sits on label pixel (i * 1023/64, j * 2047/128) (align_corners=True)
    c, lh, lw = protocol.OUTPUT_SHAPE_CHW
    lo = _scene(np.random.default_rng(seed), np.linspace(0, 1, lh), np.linspace(0, 1, lw))
    lo[lo == 255] = 0  # a segmenter calls the bonnet something; road here
    rng = np.random.default_rng(seed + 10_000)
    onehot = (lo[None] == np.arange(c)[:, None, None]).astype(np.float32)
    logits = 12 * _blur(onehot) + 3 * _blur(rng.standard_normal((c, lh, lw)).astype(np.float32), 1)
    logits += rng.uniform(-3, 1, (c, 1, 1))
    return label, logits.astype(np.float32)


def _logits(kind: str, seed: int, smooth: np.ndarray) -> np.ndarray:
    """Main-head logits of one image of ``kind`` (``smooth`` is that image's smooth logits)."""
    rng = np.random.default_rng(seed + 20_000)
    noise = NOISE_SIGMA * rng.standard_normal(smooth.shape)
    out = {"smooth": smooth, "cell_noise": smooth + noise, "pure_noise": noise}[kind]
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, DumpSet]]:
    """Per kind: (samples, their dumps). All kinds share the scenes' label PNGs."""
    root = tmp_path_factory.mktemp("cityscapes")
    cities = list(protocol.VAL_CITIES)
    smooth = []
    for i in range(max(N_IMAGES.values())):
        city = cities[i % len(cities)]
        name = f"{city}_{i:06d}_000019"
        for sub in ("leftImg8bit", "gtFine"):
            (root / sub / "val" / city).mkdir(parents=True, exist_ok=True)
        (root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png").touch()  # not read by evaluation
        label, logits = _sample(i)
        Image.fromarray(label).save(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png")
        smooth.append((name, logits))
    by_name = {s.name: s for s in list_samples(root)}
    out = {}
    for kind in KINDS:
        dumps = root / f"dumps_{kind}"
        for i, (name, logits) in enumerate(smooth[:N_IMAGES[kind]]):
            write_dumps(dumps, f"{name}_leftImg8bit", -logits, _logits(kind, i, logits))
        samples = [by_name[f"{name}_leftImg8bit"] for name, _ in smooth[:N_IMAGES[kind]]]
        out[kind] = (samples, DumpSet.open(dumps, samples))
    return out


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


@pytest.mark.parametrize("kind", KINDS)
def test_postprocess_speedup(kind: str, datasets: dict[str, tuple[list, DumpSet]], tmp_path: Path,
                             bench_record: Any) -> None:
    samples, dumps = datasets[kind]
    n = len(samples)
    cache = tmp_path / "labels"

    ref, t_ref = _timed(evaluate_dumps_reference, samples, dumps)
    cold, t_cold = _timed(evaluate_dumps, samples, dumps, workers=2, label_cache_dir=cache)
    warm, t_warm = _timed(evaluate_dumps, samples, dumps, workers=2, label_cache_dir=cache)
    single, t_single = _timed(evaluate_dumps, samples, dumps, workers=1, label_cache_dir=cache)
    assert (cold.label_cache_misses, warm.label_cache_hits, single.label_cache_hits) == (n, n, n)

    # Pixel-for-pixel check of every image against torch's upsample + argmax (not inside the timed
    # reference, which must not pay for keeping its predictions); timing it gives the kernel figures.
    # The sparse-only fast path (dense_crossover=inf, the algorithm before the dense path) is timed
    # too, to show what the dense path buys.
    # The first call on an image runs with cold caches, so the two fast calls take turns going first.
    differ, t_kernel, t_kernel_ref, t_sparse, profiles = 0, 0.0, 0.0, 0.0, []
    for i, s in enumerate(samples):
        logits = dumps.read(s.name)
        if i % 2:
            sparse, t_s = _timed(upsample_argmax, logits, dense_crossover=math.inf)
        ours, t = _timed(upsample_argmax, logits)
        if not i % 2:
            sparse, t_s = _timed(upsample_argmax, logits, dense_crossover=math.inf)
        theirs, t_r = _timed(upsample_argmax_reference, logits)
        differ += int(np.count_nonzero(ours != theirs)) + int(np.count_nonzero(sparse != theirs))
        t_kernel, t_kernel_ref, t_sparse = t_kernel + t, t_kernel_ref + t_r, t_sparse + t_s
        profiles.append(contest_profile(logits))
    profile = {k: float(np.mean([p[k] for p in profiles])) for k in profiles[0]}
    pixels = n * protocol.LABEL_H * protocol.LABEL_W

    ratios = {"warm": t_ref / t_warm, "cold": t_ref / t_cold, "single": t_ref / t_single,
              "kernel": t_kernel_ref / t_kernel, "over_sparse_only": t_sparse / t_kernel}
    same = {name: bool(np.array_equal(ref.score.matrix, r.score.matrix))
            for name, r in (("cold", cold), ("warm", warm), ("single", single))}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ms = 1000 / n
    print(f"\npostprocess benchmark [{kind}]: {n} images, labels {protocol.LABEL_W}x{protocol.LABEL_H} labelIds "
          f"PNG, logits {'x'.join(map(str, protocol.OUTPUT_SHAPE_CHW))} float32; contested cells "
          f"{profile['contested_cells']:.1%}, {profile['mean_candidates']:.1f} candidate classes each, rows of "
          f"cells filled densely {profile['dense_rows']:.0%}; {cores} cores, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  reference (seed loop, 1 process)    {t_ref:7.2f} s  {ms * t_ref:6.1f} ms/img")
    print(f"  ours, cold label cache, 2 workers   {t_cold:7.2f} s  {ms * t_cold:6.1f} ms/img  ratio {ratios['cold']:5.1f}x")
    print(f"  ours, warm label cache, 2 workers   {t_warm:7.2f} s  {ms * t_warm:6.1f} ms/img  ratio {ratios['warm']:5.1f}x")
    print(f"  ours, warm label cache, 1 process   {t_single:7.2f} s  {ms * t_single:6.1f} ms/img  ratio {ratios['single']:5.1f}x")
    print(f"  kernel: upsample_argmax {ms * t_kernel:6.1f} ms/img, torch upsample + argmax {ms * t_kernel_ref:6.1f} "
          f"ms/img  ratio {ratios['kernel']:5.1f}x; sparse path only {ms * t_sparse:6.1f} ms/img "
          f"(the chosen paths are {ratios['over_sparse_only']:.2f}x as fast)")
    print(f"  mIoU reference {ref.score.miou:.4f}  ours {warm.score.miou:.4f}; confusion matrices identical "
          f"(cold, warm, 1 process): {same}; {differ} of {pixels} pixels differ (chosen paths and sparse only)")

    what = {"warm": "2 workers, label cache filled", "cold": "2 workers, label cache empty",
            "single": "1 process, label cache filled", "kernel": "upsample + argmax alone, per image",
            "over_sparse_only": "chosen paths vs the sparse path alone"}
    for name, target in TARGETS[kind].items():
        reference = ("the sparse path alone" if name == "over_sparse_only" else
                     "torch upsample + argmax" if name == "kernel" else
                     "the seed's postprocess loop (torch upsample, argmax, fast_hist), 1 process")
        bench_record(f"dumps -> mIoU, {kind} logits ({n} images): {what[name]}", ratios[name], reference=reference,
                     required=target)
    assert differ == 0, f"[{kind}] {differ} of {2 * pixels} pixels differ from torch's upsample + argmax"
    assert all(same.values()), f"[{kind}] confusion matrix differs from the reference's: {same}"
    for name, target in TARGETS[kind].items():
        assert ratios[name] >= target, (f"[{kind}] {name}: only {ratios[name]:.2f}x the reference's speed "
                                        f"(target {target}x; {n} images)")
