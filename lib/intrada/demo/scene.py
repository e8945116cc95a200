"""The demo submission's synthetic Cityscapes val split (see :mod:`intrada.demo`).

:func:`make_cityscapes` writes ``n_images`` 2048x1024 images in the official layout. Each label
map is a Voronoi partition with a street-scene layout (sky and buildings on top, road and
sidewalk at the bottom, an ego-vehicle strip), every one of the 19 train classes in every image
plus regions of ignored label ids. Each class region is painted in its palette colour
(``protocol.PALETTE_RGB``) with a per-region tint, a smooth colour field and per-pixel noise;
ignored regions get unrelated colours.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import protocol
from ..core.atomic import atomic_path

DEMO_SEED: int = 0
DEMO_IMAGES: int = 8
# The official val cities; image i goes to DEMO_CITIES[i % 3].
DEMO_CITIES: tuple[str, ...] = tuple(protocol.VAL_CITIES)

TRAIN_ID_TO_LABEL_ID: dict[int, int] = {t: i for i, t in protocol.LABEL_ID_TO_TRAIN_ID.items()}
IGNORED_LABEL_IDS: tuple[int, ...] = tuple(
    i for i in range(protocol.MAX_LABEL_ID + 1) if i not in protocol.LABEL_ID_TO_TRAIN_ID)
EGO_VEHICLE_ID: int = 1  # Cityscapes "ego vehicle", ignored by evaluation
# Ignored ids for void cells inside the scene (the ego vehicle only appears as the bottom strip).
_SCENE_IGNORED_IDS: tuple[int, ...] = tuple(i for i in IGNORED_LABEL_IDS if i != EGO_VEHICLE_ID)

# --- synthetic images ------------------------------------------------------------------------
# The layout is drawn on a grid 4x coarser than the label and upsampled, so region borders are
# 4-px staircases; cost is 1/16 of a full-resolution Voronoi.
_GRID = 4
_N_CELLS = 40
# Seeds at least 30 grid px (120 label px = 7.5 output strides of the network) apart: each region is
# many times larger than the 16-px cell that one logit covers at label resolution, so borders are a
# small fraction of the pixels.
_MIN_SEED_DIST = 30
# Voronoi distances with x compressed: cells come out wider than tall, like street scenes.
_X_ASPECT = 0.6
_IGNORED_CELL_FRACTION = 0.1
# Colour noise, in uint8 grey levels per channel. Per-pixel noise is mostly averaged away by the
# 2x bicubic downscale and the network's max pool (see _Builder.stem); the per-region tint and the
# smooth field survive and set the error rate (bus and train palettes are only 20 levels apart).
_REGION_TINT = 3.0
_FIELD_SIGMA = 5.0
_FIELD_GRID = (8, 16)  # smooth field control points (rows, cols), bilinearly interpolated
_PIXEL_SIGMA = 10.0

# Class priors per band of the scene (by a cell's seed height): train ids with weights.
_TOP = {10: 6.0, 2: 3.0, 8: 2.0, 5: 0.7, 6: 0.7, 7: 0.7}
_MIDDLE = {2: 2.0, 3: 1.0, 4: 1.0, 8: 1.5, 9: 0.7, 5: 0.8, 6: 0.6, 7: 0.6, 11: 1.0, 12: 0.6,
           13: 1.5, 14: 0.6, 15: 0.5, 16: 0.5, 17: 0.5, 18: 0.6}
_BOTTOM = {0: 6.0, 1: 3.0, 9: 1.0, 13: 1.0, 11: 0.4, 17: 0.3, 18: 0.3}


@dataclass(frozen=True)
class DemoSample:
    """One generated val image: ``rgb`` uint8 (1024, 2048, 3), ``label_ids`` uint8 (1024, 2048)."""

    name: str
    city: str
    rgb: np.ndarray
    label_ids: np.ndarray


def _sample_rng(seed: int, index: int) -> np.random.Generator:
    # Image i depends only on (seed, i): a split of 2 images is the first 2 of a split of 8.
    return np.random.default_rng([seed, index])


def _voronoi_seeds(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(n, 2) float (y, x) seeds, pairwise at least _MIN_SEED_DIST apart (dart throwing)."""
    seeds: list[tuple[float, float]] = []
    for _ in range(_N_CELLS * 50):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        if all((y - sy) ** 2 + (x - sx) ** 2 >= _MIN_SEED_DIST ** 2 for sy, sx in seeds):
            seeds.append((y, x))
            if len(seeds) == _N_CELLS:
                break
    return np.array(seeds)


def _weighted_choice(rng: np.random.Generator, prior: dict[int, float]) -> int:
    keys = list(prior)
    p = np.array([prior[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _cell_labels(rng: np.random.Generator, seed_y: np.ndarray, h: int) -> np.ndarray:
    """A labelId per cell: scene-like priors by height, every train class at least once."""
    n = len(seed_y)
    horizon = rng.uniform(0.3, 0.45) * h
    ground = horizon + rng.uniform(0.15, 0.25) * h

    def band(y: float) -> dict[int, float]:
        return _TOP if y < horizon else _MIDDLE if y < ground else _BOTTOM

    train = np.full(n, -1, dtype=np.int64)
    free = list(rng.permutation(n))
    # Reserve one cell per class, preferring a cell in a band where the class is plausible.
    for k in rng.permutation(protocol.NUM_CLASSES):
        fitting = [c for c in free if k in band(float(seed_y[c]))]
        cell = fitting[0] if fitting else free[0]
        free.remove(cell)
        train[cell] = k
    n_ignored = max(1, round(_IGNORED_CELL_FRACTION * n))
    label_ids = np.empty(n, dtype=np.uint8)
    for i, cell in enumerate(free):
        if i < n_ignored:
            label_ids[cell] = rng.choice(_SCENE_IGNORED_IDS)
        else:
            train[cell] = _weighted_choice(rng, band(float(seed_y[cell])))
    for cell in range(n):
        if train[cell] >= 0:
            label_ids[cell] = TRAIN_ID_TO_LABEL_ID[int(train[cell])]
    return label_ids


def _layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cell index map at label resolution, labelId per cell), the last cell being the ego strip."""
    gh, gw = protocol.LABEL_H // _GRID, protocol.LABEL_W // _GRID
    seeds = _voronoi_seeds(rng, gh, gw)
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    # Nearest seed, one seed at a time: (gh, gw) float32 buffers instead of an (n, gh, gw) cube.
    best = np.full((gh, gw), np.inf, dtype=np.float32)
    cells = np.zeros((gh, gw), dtype=np.int32)
    for i, (sy, sx) in enumerate(seeds):
        d = (ys - sy) ** 2 + (_X_ASPECT * (xs - sx)) ** 2
        closer = d < best
        best[closer] = d[closer]
        cells[closer] = i
    cell_ids = _cell_labels(rng, seeds[:, 0], gh)
    # Ego-vehicle strip along the bottom with a bonnet-shaped top edge, as in real Cityscapes.
    ego_top = gh - rng.uniform(0.06, 0.1) * gh + 0.04 * gh * ((xs[0] / gw - 0.5) * 2) ** 2
    cells[ys >= ego_top[None, :]] = len(seeds)
    cell_ids = np.append(cell_ids, np.uint8(EGO_VEHICLE_ID))
    full = np.repeat(np.repeat(cells, _GRID, axis=0), _GRID, axis=1)
    return full, cell_ids


def _smooth_field(rng: np.random.Generator) -> np.ndarray:
    """float32 (H, W, 3) low-frequency colour noise, std _FIELD_SIGMA."""
    out = np.empty((protocol.IMAGE_H, protocol.IMAGE_W, 3), dtype=np.float32)
    for c in range(3):
        coarse = rng.normal(0.0, _FIELD_SIGMA, size=_FIELD_GRID).astype(np.float32)
        img = Image.fromarray(coarse, mode="F").resize((protocol.IMAGE_W, protocol.IMAGE_H),
                                                       Image.Resampling.BILINEAR)
        out[:, :, c] = np.asarray(img)
    return out


def demo_sample(index: int, seed: int = DEMO_SEED) -> DemoSample:
    """Generate image ``index`` of the demo split in memory (no files)."""
    rng = _sample_rng(seed, index)
    city = DEMO_CITIES[index % len(DEMO_CITIES)]
    name = f"{city}_{index:06d}_{int(rng.integers(0, 1_000_000)):06d}"
    cells, cell_ids = _layout(rng)
    train_lut = protocol.label_lookup_table()
    colours = np.empty((len(cell_ids), 3), dtype=np.float32)
    for c, label_id in enumerate(cell_ids):
        t = int(train_lut[label_id])
        if t == protocol.IGNORE_INDEX:
            colours[c] = rng.uniform(0, 255, size=3)  # void regions: any colour, scored as ignored
        else:
            tint = rng.normal(0, _REGION_TINT, 3)
            colours[c] = np.asarray(protocol.PALETTE_RGB[t], dtype=np.float32) + tint
    img = colours[cells]
    img += _smooth_field(rng)
    img += rng.normal(0.0, _PIXEL_SIGMA, size=img.shape).astype(np.float32)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return DemoSample(name, city, rgb, cell_ids[cells])


def _write_png_atomic(array: np.ndarray, mode: str, path: Path) -> None:
    # Written beside the target under a name no Cityscapes glob matches, then renamed, so a reader
    # never sees a half-written PNG.
    with atomic_path(path) as tmp:
        Image.fromarray(array, mode=mode).save(tmp, format="PNG", compress_level=1)


def make_cityscapes(root: str | os.PathLike[str], *, n_images: int = DEMO_IMAGES,
                    seed: int = DEMO_SEED) -> list[Path]:
    """Write the demo val split under ``root`` in the official Cityscapes layout.

    Image i depends only on (seed, i). Files of the same names are replaced (each PNG is written
    to a hidden temporary name and renamed); other files under ``root`` are left alone. Returns the
    image paths sorted by (city, name), the order of ``cityscapes.list_samples``.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    root = Path(root)
    images: list[tuple[str, str, Path]] = []
    for index in range(n_images):
        s = demo_sample(index, seed)
        image_dir = root / "leftImg8bit" / "val" / s.city
        label_dir = root / "gtFine" / "val" / s.city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        image_path = image_dir / f"{s.name}{protocol.IMAGE_SUFFIX}"
        _write_png_atomic(s.label_ids, "L", label_dir / f"{s.name}{protocol.LABEL_SUFFIX}")
        _write_png_atomic(s.rgb, "RGB", image_path)
        images.append((s.city, image_path.name, image_path))
    return [p for _, _, p in sorted(images)]
