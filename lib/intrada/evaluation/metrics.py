"""Segmentation metrics of the ADVENT / Cityscapes protocol, as small pure numpy stages.

Stages: :func:`check_maps` (validate) -> :func:`confusion_matrix` (one image or a batch, int64
19x19, rows = ground truth, columns = prediction, ground truth outside 0..18 ignored) ->
:func:`iou_from_confusion` (per-class TP / (TP + FP + FN), NaN where the class is absent from both)
-> :func:`mean_iou` (nanmean). :class:`ConfusionMatrix` streams them over a split and merges by
addition, so worker processes can each keep one.

The protocol is one confusion matrix over the whole split, never a per-image average
(upstream ``fast_hist`` accumulates into a single ``hist``). Upstream keeps ``hist`` in float64;
int64 counts give the same IoUs exactly (all counts are far below 2**53) and merge without loss.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..core import protocol


_CHUNK = 1 << 17  # pixels per bincount call in the uint8 fast path
_LANES = 4  # interleaved sub-histograms in the uint8 fast path


@lru_cache(maxsize=4)
def _lane_offsets(span: int) -> np.ndarray:
    offsets = np.tile((np.arange(_LANES) * span).astype(np.uint16), _CHUNK // _LANES)
    offsets.setflags(write=False)
    return offsets


def check_maps(gt: np.ndarray, pred: np.ndarray, num_classes: int = protocol.NUM_CLASSES) -> None:
    """Raise ValueError unless ``gt`` and ``pred`` are integer maps of one shape and every
    prediction is a class index (a prediction outside 0..C-1 is a bug upstream of the metric,
    whereas ground truth outside 0..C-1 is the ignore label)."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    for what, arr in (("ground truth", gt), ("prediction", pred)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{what} must hold integer class ids, got dtype {arr.dtype}")
    if pred.size:
        # unsigned maps cannot be negative; skipping min() saves a full pass on every image
        lo = 0 if np.issubdtype(pred.dtype, np.unsignedinteger) else int(pred.min())
        hi = int(pred.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"prediction values range {int(pred.min())}..{hi}, expected 0..{num_classes - 1}")


def confusion_matrix(gt: np.ndarray, pred: np.ndarray,
                     num_classes: int = protocol.NUM_CLASSES) -> np.ndarray:
    """int64 [C, C] counts: entry (g, p) = pixels with ground truth g predicted as p.

    Pixels whose ground truth is outside 0..C-1 (255 = ignore, or -1) are not counted.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    check_maps(gt, pred, num_classes)
    n = num_classes
    if gt.dtype == np.uint8 and pred.dtype == np.uint8 and _LANES * 256 * n <= np.iinfo(np.uint16).max:
        # Fast path for uint8 maps (the evaluation's case): code = gt * C + pred fits in uint16,
        # and every ignored gt (>= C) lands at a code >= C*C, so no mask pass is needed.
        # Segmentation maps have long runs of one code, and bincount's increments of one counter
        # then wait on each other; adding a lane offset that cycles with the pixel index spreads
        # neighbours over _LANES separate histograms (~1.7x faster). Chunks keep bincount's
        # internal int64 copy of the codes in cache.
        g, p = gt.reshape(-1), pred.reshape(-1)
        span = 256 * n
        lanes = _lane_offsets(span)
        counts = np.zeros(_LANES * span, np.int64)
        buf = np.empty(min(g.size, _CHUNK), np.uint16)
        for start in range(0, g.size, _CHUNK):
            code = buf[: min(_CHUNK, g.size - start)]
            np.multiply(g[start:start + _CHUNK], n, out=code, dtype=np.uint16)
            code += p[start:start + _CHUNK]
            code += lanes[: code.size]
            counts += np.bincount(code, minlength=_LANES * span)
        counts = counts.reshape(_LANES, span).sum(axis=0)[: n * n]
    else:
        g = gt.ravel().astype(np.int64)
        keep = (g >= 0) & (g < n)
        counts = np.bincount(g[keep] * n + pred.ravel()[keep].astype(np.int64), minlength=n * n)
    return counts.reshape(n, n).astype(np.int64, copy=False)


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """float64 [C] IoU = TP / (TP + FP + FN); NaN where the class is absent from both maps."""
    m = np.asarray(matrix)
    tp = np.diag(m).astype(np.float64)
    # Upstream order: diag / (row sum + column sum - diag)
    denom = m.sum(axis=1).astype(np.float64) + m.sum(axis=0).astype(np.float64) - tp
    out = np.full(tp.shape, np.nan)
    np.divide(tp, denom, out=out, where=denom > 0)
    return out


def mean_iou(iou: np.ndarray) -> float:
    """np.nanmean without its "mean of empty slice" warning; NaN when every class is NaN."""
    iou = np.asarray(iou, dtype=np.float64)
    valid = ~np.isnan(iou)
    if not valid.any():
        return math.nan
    return float(np.mean(iou[valid]))


@dataclass(frozen=True, eq=False)
class SegmentationScore:
    """The result of one evaluation: dataset-level IoUs in percent, the matrix they came from."""

    matrix: np.ndarray  # int64 [C, C], rows = ground truth
    num_images: int
    class_names: tuple[str, ...] = protocol.CLASS_NAMES
    iou: np.ndarray = field(init=False, repr=False)  # float64 [C] fractions, NaN = absent

    def __post_init__(self) -> None:
        if len(self.class_names) != self.matrix.shape[0]:
            raise ValueError(f"{len(self.class_names)} class names for a {self.matrix.shape[0]}-class matrix")
        object.__setattr__(self, "iou", iou_from_confusion(self.matrix))

    @property
    def miou(self) -> float:
        """Mean IoU in percent at full precision: nanmean(iou) * 100 in upstream's order."""
        return mean_iou(self.iou) * 100

    @property
    def miou_rounded(self) -> float:
        """What upstream prints: round(nanmean(iou) * 100, 2)."""
        return round(self.miou, protocol.MIOU_DECIMALS)

    @property
    def per_class_iou(self) -> list[float | None]:
        """Percent per trainId; None for a class absent from both ground truth and prediction."""
        return [None if math.isnan(v) else float(v) * 100 for v in self.iou]

    @property
    def pixels(self) -> int:
        """Labelled (non-ignored) pixels counted."""
        return int(self.matrix.sum())

    def table(self) -> str:
        """Per-class table like upstream's display (round(iou * 100, 2)), then the mIoU line."""
        width = max(len(n) for n in (*self.class_names, "mIoU"))
        lines = [f"{'class':<{width}}  {'IoU':>6}"]
        for name, value in zip(self.class_names, self.per_class_iou):
            text = "n/a" if value is None else f"{round(value, protocol.MIOU_DECIMALS):.2f}"
            lines.append(f"{name:<{width}}  {text:>6}")
        miou = "n/a" if math.isnan(self.miou) else f"{self.miou_rounded:.2f}"
        lines.append(f"{'mIoU':<{width}}  {miou:>6}   ({self.num_images} images, {self.pixels} labelled pixels)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; percentages at full precision, None for NaN."""
        miou = self.miou
        return {
            "miou": None if math.isnan(miou) else miou,
            "miou_rounded": None if math.isnan(miou) else self.miou_rounded,
            "per_class_iou": self.per_class_iou,
            "class_names": list(self.class_names),
            "num_images": self.num_images,
            "labelled_pixels": self.pixels,
            "confusion_matrix": self.matrix.tolist(),
        }


class ConfusionMatrix:
    """Streaming accumulator: int64 [C, C] state, ``update`` per image, mergeable by addition."""

    def __init__(self, num_classes: int = protocol.NUM_CLASSES, *,
                 matrix: np.ndarray | None = None, num_images: int = 0) -> None:
        self.num_classes = num_classes
        if matrix is None:
            self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        else:
            matrix = np.asarray(matrix)
            if matrix.shape != (num_classes, num_classes) or not np.issubdtype(matrix.dtype, np.integer):
                raise ValueError(f"matrix must be integer [{num_classes}, {num_classes}], got "
                                 f"{matrix.dtype} {matrix.shape}")
            self.matrix = matrix.astype(np.int64)  # a copy: the accumulator owns its state
        self.num_images = num_images

    def update(self, gt: np.ndarray, pred: np.ndarray, *, images: int | None = None) -> "ConfusionMatrix":
        """Add one image ([H, W]) or a batch ([N, H, W]); ``images`` overrides the image count
        (e.g. 0 when feeding one image in several chunks)."""
        gt = np.asarray(gt)
        self.matrix += confusion_matrix(gt, pred, self.num_classes)
        if images is None:
            images = gt.shape[0] if gt.ndim == 3 else 1
        self.num_images += images
        return self

    def add_matrix(self, matrix: np.ndarray, images: int = 1) -> "ConfusionMatrix":
        """Add counts computed elsewhere (a worker process)."""
        matrix = np.asarray(matrix)
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot add a {matrix.shape} matrix to a {self.matrix.shape} one")
        self.matrix += matrix.astype(np.int64, copy=False)
        self.num_images += images
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """A new accumulator holding both; neither input changes."""
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("can only merge confusion matrices with the same number of classes")
        return ConfusionMatrix(self.num_classes, matrix=self.matrix + other.matrix,
                               num_images=self.num_images + other.num_images)

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return self.merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return self.num_images == other.num_images and np.array_equal(self.matrix, other.matrix)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def score(self, class_names: Sequence[str] = protocol.CLASS_NAMES) -> SegmentationScore:
        return SegmentationScore(self.matrix.copy(), self.num_images, tuple(class_names))

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, num_images={self.num_images}, pixels={int(self.matrix.sum())})"


def score_maps(gt: np.ndarray, pred: np.ndarray, *, num_images: int | None = None,
               class_names: Sequence[str] = protocol.CLASS_NAMES) -> SegmentationScore:
    """One-shot: the score of one image [H, W] or a batch [N, H, W] of maps. Public as the functional
    twin of :class:`ConfusionMatrix` (torchmetrics' pairing of a one-shot function and a streaming
    accumulator), for scoring maps in memory; the gate streams dumps through the accumulator."""
    acc = ConfusionMatrix(len(class_names))
    acc.update(gt, pred, images=num_images)
    return acc.score(class_names)
