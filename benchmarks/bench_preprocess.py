"""Issue 5 target 2: preprocessing a split must be >= 1.8x the straightforward single-process loop,
with byte-identical bins.

Generates N real-size (2048x1024) street-like PNGs (smooth gradients, flat blocks, sensor-like
noise; ~2.8 MB each, so decoding costs at least what a Cityscapes PNG costs), then
times in one run, alternating, ROUNDS times each:

* reference: the straightforward loop in one process: PIL open, convert('RGB'), BICUBIC resize to
  (1024, 512), float32, BGR, minus the float32 mean, CHW, tofile; in two spellings (the transposed
  view written directly, and copied to C order first), the target is asserted against the faster;
* ours: ``preprocess_split(samples, out, workers=2)``, pool start-up included.

Each side's best round is compared (the usual best-of-N, which filters out other load on the
machine; all rounds are printed, with CPU time per image, which other load barely moves).
Bins must be byte-identical.

Measured on the project's 2-core KVM Xeon (Python 3.11, Pillow 13), idle machine, 20 images:
C-order loop 1.12-1.13 s (56 ms/img), literal loop 1.60 s, preprocess_split(workers=2) 0.52-0.57 s:
1.99x-2.14x (2.8x-3.1x against the literal loop). Per image, ours costs 51-53 ms of CPU against
56 ms: Pillow's PNG decode (~33 ms) and resize (~14 ms) are most of both and cannot be trimmed
without changing bytes, so the ratio comes almost entirely from the second core. Other load on
the machine lowers it (1.1x-1.5x seen while other test suites ran); the wall times of every round
and the load average are printed for that reason.
Run: ``python -m pytest benchmarks/bench_preprocess.py -m bench -s`` (~15 s).
"""
from __future__ import annotations

import os
import resource
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from intrada.dataset.cityscapes import list_samples
from intrada.dataset.preprocess import _pool_context, preprocess_split

pytestmark = pytest.mark.bench

N_IMAGES = 20
ROUNDS = 3
WORKERS = 2
REQUIRED_RATIO = 1.8  # issue 5 target 2
NOISE = 2  # +-grey levels: PNGs of ~2.8 MB, a little above real leftImg8bit frames (~2.2 MB)
MEAN_BGR = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)  # spec section 4


def _street_like(seed: int, noise: int = NOISE) -> np.ndarray:
    """uint8 1024x2048x3: smooth sky/road gradients, flat facades and cars, and pixel noise
    (Cityscapes frames are noisy at pixel level, which is what makes their PNGs ~2 MB)."""
    rng = np.random.default_rng(seed)
    h, w = 1024, 2048
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 3), np.float32)
    phase = rng.uniform(0, 6, 3)
    for c in range(3):
        img[..., c] = 120 + 90 * np.sin(3 * x + phase[c] + 2 * y) * np.cos(2 * y - phase[c])
    for _ in range(40):  # flat rectangles of random colour
        y0, x0 = rng.integers(0, h - 64), rng.integers(0, w - 64)
        img[y0:y0 + rng.integers(32, 300), x0:x0 + rng.integers(32, 400)] = rng.integers(0, 256, 3)
    noisy = img + rng.integers(-noise, noise + 1, img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _write_png(args: tuple[int, str]) -> None:
    seed, path = args
    # zlib level 3 saves 4x faster than the default 6 here and decodes just as fast (measured: ~31 ms
    # both), so the timed part is unchanged while set-up stays short.
    Image.fromarray(_street_like(seed)).save(path, compress_level=3)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes_bench")
    jobs = []
    for i in range(N_IMAGES):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        d = root / "leftImg8bit" / "val" / city
        d.mkdir(parents=True, exist_ok=True)
        jobs.append((i, str(d / f"{city}_{i:06d}_000019_leftImg8bit.png")))
    with ProcessPoolExecutor(2, mp_context=_pool_context()) as ex:  # generation only; not timed
        list(ex.map(_write_png, jobs))
    return root


def _straightforward(samples: list, out: Path, *, contiguous: bool) -> None:
    """ADVENT's arithmetic in a plain loop. ``contiguous=False`` writes the transposed view directly,
    as the upstream line reads (numpy then writes element by element, slow); ``contiguous=True``
    copies to C order first, the faster of the two straightforward versions and the one the
    target is asserted against."""
    out.mkdir(parents=True, exist_ok=True)
    for s in samples:
        img = Image.open(s.image).convert("RGB").resize((1024, 512), Image.BICUBIC)
        arr = (np.asarray(img, np.float32)[:, :, ::-1] - MEAN_BGR).transpose(2, 0, 1)
        (np.ascontiguousarray(arr) if contiguous else arr).tofile(out / f"{s.name}.bin")


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pool's workers)."""
    self, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self.ru_utime + self.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = _cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _available_parallelism() -> float:
    """How much faster two CPU-bound processes finish two equal jobs than one process does: ~2.0 on
    an idle 2-core machine, ~1.0 when other work holds a core. Printed and quoted on failure, so a
    low ratio caused by a busy machine is told apart from a regression."""
    n = 3_000_000
    with ProcessPoolExecutor(2, mp_context=_pool_context()) as ex:
        list(ex.map(_spin, [1000, 1000]))  # start both workers before timing
        t0 = time.perf_counter()
        _spin(n), _spin(n)
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(ex.map(_spin, [n, n]))
        return serial / (time.perf_counter() - t0)


def test_preprocess_split_speed(split: Path, tmp_path: Path, bench_record: Any) -> None:
    samples = list_samples(split, require_labels=False)
    assert len(samples) == N_IMAGES
    dirs = {k: tmp_path / k for k in ("literal", "reference", "ours")}
    runs: dict[str, Callable[[], object]] = {
        "literal": lambda: _straightforward(samples, dirs["literal"], contiguous=False),
        "reference": lambda: _straightforward(samples, dirs["reference"], contiguous=True),
        "ours": lambda: preprocess_split(samples, dirs["ours"], workers=WORKERS),
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(ROUNDS):  # alternating, so load from elsewhere hits all sides alike
        for key, fn in runs.items():
            shutil.rmtree(dirs[key], ignore_errors=True)
            times[key].append(_timed(fn))

    for s in samples:
        name = f"{s.name}.bin"
        ours_bytes = (dirs["ours"] / name).read_bytes()
        assert ours_bytes == (dirs["reference"] / name).read_bytes() == (dirs["literal"] / name).read_bytes(), name

    parallelism = _available_parallelism()
    best = {k: min(times[k]) for k in runs}  # (wall, cpu) of the round with the best wall time
    ratio = best["reference"][0] / best["ours"][0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    png_mb = sum(s.image.stat().st_size for s in samples) / N_IMAGES / 1e6
    lines = [f"\npreprocess: {N_IMAGES} images 2048x1024 (PNG {png_mb:.1f} MB avg), {cores} cores, best of {ROUNDS}, "
             f"load average {os.getloadavg()[0]:.1f}, available parallelism {parallelism:.2f}x"]
    labels = {"literal": "straightforward loop, transposed view to tofile",
              "reference": "straightforward loop, C-order copy to tofile",
              "ours": f"preprocess_split(workers={WORKERS})"}
    for key, label in labels.items():
        wall, cpu = best[key]
        lines.append(f"  {label}: {wall:.2f} s ({1000 * wall / N_IMAGES:.1f} ms/img, {1000 * cpu / N_IMAGES:.1f} ms "
                     f"CPU/img); rounds {', '.join(f'{w:.2f}' for w, _ in times[key])}")
    lines.append(f"  ratio {ratio:.2f}x against the C-order loop (required >= {REQUIRED_RATIO}x), "
                 f"{best['literal'][0] / best['ours'][0]:.2f}x against the literal one; bins byte-identical")
    print("\n".join(lines))
    bench_record(f"preprocess_split({WORKERS} workers), {N_IMAGES} images, byte-identical bins", ratio,
                 reference="the single-process loop, C-order copy to tofile", required=REQUIRED_RATIO)
    assert ratio >= REQUIRED_RATIO, (
        f"preprocess_split is {ratio:.2f}x the straightforward loop, expected >= {REQUIRED_RATIO}x "
        f"({best['reference'][0]:.2f} s vs {best['ours'][0]:.2f} s for {N_IMAGES} images on {cores} cores, "
        f"load average {os.getloadavg()[0]:.1f}; two spinning processes ran {parallelism:.2f}x as fast as one, "
        f"and below ~1.9x means other load is taking a core)")
