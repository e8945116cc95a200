"""Where two class maps differ: per-class IoU deltas over a split, and per-image disagreement.

A parity gate says *that* two backends (ONNX Runtime vs an om, recorded dumps or OpenVINO) differ;
these objects say *where*:

* :class:`ClassDelta` puts two dataset-level scores side by side (as ``SegmentationScore.to_json()``
  writes them, or the scores themselves): per-class IoU of each side and the difference, largest
  |delta| first. Pure: it only reads the two scores.
* :func:`disagreement` compares the two main-head class maps of one image at full label resolution
  (1024x2048, the exact upsample + argmax of the evaluation) and counts which reference class
  became which candidate class.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

import numpy as np

from ..core import protocol
from ..evaluation.metrics import SegmentationScore, confusion_matrix
from ..evaluation.postprocess import upsample_argmax

# |delta| below this is rounding noise at the two decimals the report prints
_SHOWN = 0.005


class _HasJson(Protocol):
    def to_json(self) -> dict[str, Any]: ...


ScoreLike = Union[Mapping[str, Any], SegmentationScore, _HasJson]


def _score_dict(score: ScoreLike, what: str) -> Mapping[str, Any]:
    if isinstance(score, Mapping):
        data = score
    elif hasattr(score, "to_json"):
        data = score.to_json()  # SegmentationScore, EvalResult
    else:
        raise TypeError(f"{what}: expected a score dict or a SegmentationScore, got {type(score).__name__}")
    for key in ("per_class_iou", "class_names"):
        if key not in data:
            raise ValueError(f"{what}: score has no {key!r} (keys: {', '.join(sorted(data))})")
    if len(data["per_class_iou"]) != len(data["class_names"]):
        raise ValueError(f"{what}: {len(data['per_class_iou'])} IoUs for {len(data['class_names'])} classes")
    return data


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _signed(delta: float) -> str:
    """+1.23 / -1.23, and 0.00 (not -0.00) for what rounds to zero."""
    return "0.00" if abs(delta) < _SHOWN else f"{delta:+.2f}"


@dataclass(frozen=True)
class ClassRow:
    """One class: IoU in percent on each side (None = absent from ground truth and prediction)."""

    index: int
    name: str
    reference: float | None
    candidate: float | None

    @property
    def delta(self) -> float | None:
        """candidate - reference in IoU points; None unless both sides scored the class."""
        if self.reference is None or self.candidate is None:
            return None
        return self.candidate - self.reference

    @property
    def note(self) -> str:
        if self.reference is None and self.candidate is None:
            return "absent from both"
        if self.reference is None:
            return "scored by the candidate only"
        if self.candidate is None:
            return "scored by the reference only"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.name, "train_id": self.index, "reference": self.reference,
                "candidate": self.candidate, "delta": self.delta, "note": self.note}


@dataclass(frozen=True)
class ClassDelta:
    """Per-class IoU of a reference and a candidate evaluated on the same images."""

    reference_label: str
    candidate_label: str
    rows: tuple[ClassRow, ...]  # trainId order
    reference_miou: float | None
    candidate_miou: float | None
    reference_images: int | None
    candidate_images: int | None
    # True / False when both scores carry their confusion matrix (same per-class ground-truth
    # pixel counts?); None when that cannot be checked
    same_ground_truth: bool | None

    @classmethod
    def from_scores(cls, reference: ScoreLike, candidate: ScoreLike, *, reference_label: str = "reference",
                    candidate_label: str = "candidate") -> "ClassDelta":
        ref = _score_dict(reference, reference_label)
        cand = _score_dict(candidate, candidate_label)
        if list(ref["class_names"]) != list(cand["class_names"]):
            raise ValueError(f"{candidate_label} and {reference_label} scores have different classes: "
                             f"{list(cand['class_names'])} vs {list(ref['class_names'])}")
        rows = tuple(ClassRow(i, str(n), _opt_float(r), _opt_float(c)) for i, (n, r, c) in
                     enumerate(zip(ref["class_names"], ref["per_class_iou"], cand["per_class_iou"])))
        same_gt = None
        if ref.get("confusion_matrix") is not None and cand.get("confusion_matrix") is not None:
            same_gt = bool(np.array_equal(np.asarray(ref["confusion_matrix"]).sum(axis=1),
                                          np.asarray(cand["confusion_matrix"]).sum(axis=1)))
        return cls(reference_label, candidate_label, rows, _opt_float(ref.get("miou")),
                   _opt_float(cand.get("miou")), ref.get("num_images"), cand.get("num_images"), same_gt)

    @property
    def miou_delta(self) -> float | None:
        if self.reference_miou is None or self.candidate_miou is None:
            return None
        return self.candidate_miou - self.reference_miou

    @property
    def ranked(self) -> list[ClassRow]:
        """Largest |delta| first; classes without a delta (absent on a side) last, in class order."""
        with_delta = sorted((r for r in self.rows if r.delta is not None), key=lambda r: (-abs(r.delta or 0.0), r.index))
        return with_delta + [r for r in self.rows if r.delta is None]

    def worst(self, n: int = 5) -> list[ClassRow]:
        """The n largest drops (candidate below reference by at least 0.005 IoU points), worst first."""
        drops = [r for r in self.rows if r.delta is not None and r.delta <= -_SHOWN]
        return sorted(drops, key=lambda r: (r.delta or 0.0, r.index))[:n]

    def best(self, n: int = 5) -> list[ClassRow]:
        """The n largest gains, largest first."""
        gains = [r for r in self.rows if r.delta is not None and r.delta >= _SHOWN]
        return sorted(gains, key=lambda r: (-(r.delta or 0.0), r.index))[:n]

    def _caveat(self) -> str:
        if self.same_ground_truth is False:
            return (f"; WARNING: the two scores count different ground truth ({self.reference_images} vs "
                    f"{self.candidate_images} images), so the deltas compare different pixels")
        return ""

    def report(self, n: int = 5) -> str:
        """One line: the mIoU change, then the largest per-class drops and gains."""
        head = f"{self.candidate_label} vs {self.reference_label}: mIoU {_pct(self.candidate_miou)} vs " \
               f"{_pct(self.reference_miou)}"
        if self.miou_delta is not None:
            head += f" ({_signed(self.miou_delta)})"
        drops, gains = self.worst(n), self.best(n)
        if not drops and not gains:
            largest = max((abs(r.delta) for r in self.rows if r.delta is not None), default=0.0)
            head += f"; no per-class IoU changes by 0.01 or more (largest |delta| {largest:.3g})"
        if drops:
            head += "; largest per-class IoU drops: " + ", ".join(f"{r.name} {r.delta:+.2f}" for r in drops)
        if gains:
            head += "; gains: " + ", ".join(f"{r.name} {r.delta:+.2f}" for r in gains)
        one_sided = [r for r in self.rows if r.note and r.note != "absent from both"]
        if one_sided:
            head += "; " + ", ".join(f"{r.name} {r.note}" for r in one_sided)
        return head + self._caveat()

    def markdown(self) -> str:
        """A table, largest |delta| first, then the mIoU row."""
        lines = [f"| class | {self.reference_label} IoU | {self.candidate_label} IoU | delta |", "|---|---:|---:|---:|"]
        for r in self.ranked:
            delta = _signed(r.delta) if r.delta is not None else f"n/a ({r.note})"
            lines.append(f"| {r.name} | {_pct(r.reference)} | {_pct(r.candidate)} | {delta} |")
        md = "n/a" if self.miou_delta is None else f"**{_signed(self.miou_delta)}**"
        lines.append(f"| **mIoU** | {_pct(self.reference_miou)} | {_pct(self.candidate_miou)} | {md} |")
        caveat = self._caveat()
        if caveat:
            lines += ["", caveat.lstrip("; ")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference_label, "candidate": self.candidate_label,
                "reference_miou": self.reference_miou, "candidate_miou": self.candidate_miou,
                "miou_delta": self.miou_delta, "reference_images": self.reference_images,
                "candidate_images": self.candidate_images, "same_ground_truth": self.same_ground_truth,
                "classes": [r.as_dict() for r in self.ranked]}


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# --- one image ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Disagreement:
    """Pixel counts of reference class (rows) -> candidate class (columns) on the main-head maps of
    one image (or several, merged with ``+``); the off-diagonal entries are the disagreements."""

    pairs: np.ndarray  # int64 [C, C]
    images: int = 1
    class_names: tuple[str, ...] = protocol.CLASS_NAMES

    @property
    def pixels(self) -> int:
        return int(self.pairs.sum())

    @property
    def disagreeing(self) -> int:
        return self.pixels - int(np.trace(self.pairs))

    @property
    def fraction(self) -> float:
        return self.disagreeing / self.pixels if self.pixels else 0.0

    def top_pairs(self, n: int = 5) -> list[tuple[str, str, int]]:
        """(reference class, candidate class, pixels) of the n most frequent changes."""
        off = self.pairs.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:n]
        rows, cols = np.unravel_index(order, off.shape)
        return [(self.class_names[r], self.class_names[c], int(off[r, c])) for r, c in zip(rows, cols) if off[r, c] > 0]

    def __add__(self, other: "Disagreement") -> "Disagreement":
        if not isinstance(other, Disagreement):
            return NotImplemented
        if other.class_names != self.class_names:
            raise ValueError("cannot merge disagreements over different classes")
        return Disagreement(self.pairs + other.pairs, self.images + other.images, self.class_names)

    def report(self, n: int = 3) -> str:
        text = f"{self.disagreeing:,} of {self.pixels:,} pixels differ ({self.fraction:.2%})"
        top = self.top_pairs(n)
        if top:
            text += ": " + ", ".join(f"{r}->{c} {_share(k, self.pixels)}" for r, c, k in top)
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "pixels": self.pixels, "disagreeing": self.disagreeing,
                "fraction": self.fraction,
                "top_pairs": [{"reference": r, "candidate": c, "pixels": k} for r, c, k in self.top_pairs(10)]}


def _share(count: int, total: int) -> str:
    """A percentage where it shows at two decimals, else the pixel count."""
    return f"{count / total:.2%}" if count >= total * 1e-4 else f"{count:,} px"


def class_map(values: np.ndarray, size: tuple[int, int] = (protocol.LABEL_H, protocol.LABEL_W)) -> np.ndarray:
    """uint8 [H, W] class map from main-head logits [C, h, w] (the evaluation's exact upsample +
    argmax) or from a class map [H, W] (passed through)."""
    values = np.asarray(values)
    if values.ndim == 3:
        return upsample_argmax(values, size)
    if values.ndim == 2 and np.issubdtype(values.dtype, np.integer):
        return values
    raise ValueError(f"expected logits [classes, h, w] or an integer class map [H, W], got {values.dtype} "
                     f"{list(values.shape)}")


def disagreement(reference: np.ndarray, candidate: np.ndarray,
                 class_names: Sequence[str] = protocol.CLASS_NAMES) -> tuple[np.ndarray, Disagreement]:
    """(bool mask [H, W] of pixels whose classes differ, counts) for one image.

    Each side is main-head logits [C, 65, 129] (upsampled to 1024x2048 exactly as the evaluation
    does) or a class map already at label resolution.
    """
    ref, cand = class_map(reference), class_map(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"class maps differ in shape: reference {ref.shape}, candidate {cand.shape}")
    n = len(class_names)
    for what, m in (("reference", ref), ("candidate", cand)):
        if m.size and int(m.max()) >= n:
            raise ValueError(f"{what} class map holds {int(m.max())}, expected 0..{n - 1}")
    pairs = confusion_matrix(ref.astype(np.uint8, copy=False), cand.astype(np.uint8, copy=False), n)
    return ref != cand, Disagreement(pairs, 1, tuple(class_names))


def disagreement_over(reference: Any, candidate: Any, names: Sequence[str]) -> Disagreement:
    """:func:`disagreement` of the main heads of two stored output sets (anything with
    ``read(name, head)``, e.g. :class:`intrada.dataset.dumps.DumpSet`), merged over ``names``."""
    total: Disagreement | None = None
    for name in names:
        _, d = disagreement(reference.read(name, "main"), candidate.read(name, "main"))
        total = d if total is None else total + d
    if total is None:
        raise ValueError("disagreement_over needs at least one name")
    return total
