"""Tensor parity between two runners' stored outputs: rich, truthy result objects.

Running and judging are separate: runners write outputs once, these functions only read arrays.
Statistics follow Polygraphy (max / mean / p99 absolute difference) and msquickcmp (cosine
similarity, relative Euclidean distance, KL divergence), plus what matters for segmentation: the
argmax agreement of the class maps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..core import protocol
from ..core.checks import count_nonfinite


@dataclass(frozen=True)
class Limits:
    """Pass criteria; None disables a criterion. Values come from thresholds.toml."""

    max_abs_over_scale: float | None = None  # max |a - b| / max |reference|
    min_cosine: float | None = None
    max_rel_euclidean: float | None = None
    max_kl: float | None = None
    min_argmax_agreement: float | None = None


@dataclass
class TensorStats:
    """Accumulates difference statistics over several images of one output head."""

    name: str
    _abs: list[np.ndarray] = field(default_factory=list, repr=False)
    dot: float = 0.0
    norm_a2: float = 0.0
    norm_b2: float = 0.0
    diff2: float = 0.0
    ref_absmax: float = 0.0
    kl_sum: float = 0.0
    positions: int = 0  # pixels (for KL and argmax)
    argmax_equal: int = 0
    nonfinite: int = 0
    ref_nonfinite: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """reference/candidate: float32 [..., C, H, W] with the class axis at -3."""
        if reference.shape != candidate.shape:
            raise ValueError(f"{self.name}: shape {candidate.shape} != reference {reference.shape}")
        a = reference.astype(np.float64)
        b = candidate.astype(np.float64)
        # NaN/Inf are counted (each is a failure) and then read as 0 so the statistics stay finite
        self.ref_nonfinite += count_nonfinite(a)
        self.nonfinite += count_nonfinite(b)
        np.nan_to_num(a, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.nan_to_num(b, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        d = np.abs(a - b)
        # keep a subsample for the percentile: 1 in 7 values bounds memory on 500 images
        self._abs.append(d.ravel()[::7].astype(np.float32))
        self.dot += float((a * b).sum())
        self.norm_a2 += float((a * a).sum())
        self.norm_b2 += float((b * b).sum())
        self.diff2 += float(((a - b) ** 2).sum())
        self.ref_absmax = max(self.ref_absmax, float(np.abs(a).max()))
        self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_abs += float(d.sum())
        self.count += d.size
        pa = _softmax(a, axis=-3)
        pb = _softmax(b, axis=-3)
        kl = (pa * (np.log(pa + 1e-30) - np.log(pb + 1e-30))).sum(axis=-3)
        self.kl_sum += float(kl.sum())
        self.positions += kl.size
        self.argmax_equal += int((a.argmax(axis=-3) == b.argmax(axis=-3)).sum())

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / max(self.count, 1)

    @property
    def p99_abs(self) -> float:
        return float(np.percentile(np.concatenate(self._abs), 99)) if self._abs else 0.0

    @property
    def cosine(self) -> float:
        denom = np.sqrt(self.norm_a2) * np.sqrt(self.norm_b2)
        return float(self.dot / denom) if denom > 0 else (1.0 if self.norm_a2 == self.norm_b2 else 0.0)

    @property
    def rel_euclidean(self) -> float:
        return float(np.sqrt(self.diff2) / np.sqrt(self.norm_a2)) if self.norm_a2 > 0 else float(self.diff2 > 0)

    @property
    def kl(self) -> float:
        return self.kl_sum / max(self.positions, 1)

    @property
    def argmax_agreement(self) -> float:
        return self.argmax_equal / max(self.positions, 1)

    @property
    def max_abs_over_scale(self) -> float:
        return self.max_abs / self.ref_absmax if self.ref_absmax > 0 else self.max_abs

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "output": self.name, "max_abs": self.max_abs, "mean_abs": self.mean_abs, "p99_abs": self.p99_abs,
            "reference_absmax": self.ref_absmax, "max_abs_over_scale": self.max_abs_over_scale,
            "cosine": self.cosine, "rel_euclidean": self.rel_euclidean, "kl": self.kl,
            "argmax_agreement": self.argmax_agreement, "nonfinite": self.nonfinite,
        }


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class ParityResult:
    """Truthy when every checked criterion holds; ``report()`` is the one-line assertion message."""

    reference: str
    candidate: str
    images: int
    outputs: list[TensorStats]
    limits: Limits
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.failures = list(self._judge())

    def _judge(self) -> Iterable[str]:
        lim = self.limits
        for s in self.outputs:
            if s.ref_nonfinite:
                yield f"{s.name}: {s.ref_nonfinite} NaN/Inf values in the reference"
            if s.nonfinite:
                yield f"{s.name}: {s.nonfinite} NaN/Inf values"
            if lim.max_abs_over_scale is not None and not s.max_abs_over_scale <= lim.max_abs_over_scale:
                yield f"{s.name}: max|diff|/scale {s.max_abs_over_scale:.3g} > {lim.max_abs_over_scale:g}"
            if lim.min_cosine is not None and not s.cosine >= lim.min_cosine:
                yield f"{s.name}: cosine {s.cosine:.6f} < {lim.min_cosine:g}"
            if lim.max_rel_euclidean is not None and not s.rel_euclidean <= lim.max_rel_euclidean:
                yield f"{s.name}: rel. euclidean {s.rel_euclidean:.3g} > {lim.max_rel_euclidean:g}"
            if lim.max_kl is not None and not s.kl <= lim.max_kl:
                yield f"{s.name}: KL {s.kl:.3g} > {lim.max_kl:g}"
        main = self.outputs[-1]
        if lim.min_argmax_agreement is not None and not main.argmax_agreement >= lim.min_argmax_agreement:
            yield f"{main.name}: argmax agreement {main.argmax_agreement:.5%} < {lim.min_argmax_agreement:.3%}"

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        stats = "; ".join(
            f"{s.name}: max|d| {s.max_abs:.3g} (scale {s.ref_absmax:.3g}), mean {s.mean_abs:.3g}, p99 {s.p99_abs:.3g}, "
            f"cos {s.cosine:.6f}, argmax {s.argmax_agreement:.4%}" for s in self.outputs)
        verdict = "PASS" if self.passed else "FAIL (" + "; ".join(self.failures) + ")"
        return f"{self.candidate} vs {self.reference} on {self.images} images: {verdict} | {stats}"

    def as_dict(self) -> dict[str, object]:
        return {"reference": self.reference, "candidate": self.candidate, "images": self.images,
                "passed": self.passed, "failures": self.failures, "outputs": [s.as_dict() for s in self.outputs]}


def compare_outputs(reference: str, candidate: str,
                    pairs: Iterable[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]],
                    limits: Limits) -> ParityResult:
    """``pairs`` yields ((ref_aux, ref_main), (cand_aux, cand_main)) per image."""
    aux, main = TensorStats("aux"), TensorStats("main")
    n = 0
    for (ra, rm), (ca, cm) in pairs:
        aux.update(ra, ca)
        main.update(rm, cm)
        n += 1
    return ParityResult(reference, candidate, n, [aux, main], limits)


def compare_stored(reference: str, candidate: str, ref: Any, cand: Any, names: Sequence[str],
                   limits: Limits) -> ParityResult:
    """Parity of two stored output sets (anything with ``read(name, head)`` and ``has_aux``, e.g.
    :class:`intrada.dataset.dumps.DumpSet`) on ``names``: both heads where the candidate has the aux head
    (some device recordings keep only the main head, the one that is evaluated), the main head
    always, argmax included."""
    heads = ["aux", "main"] if getattr(cand, "has_aux", True) else ["main"]
    stats = [TensorStats(h) for h in heads]
    for name in names:
        for s, head in zip(stats, heads):
            s.update(ref.read(name, head), cand.read(name, head))
    return ParityResult(reference, candidate, len(names), stats, limits)


def swapped_heads(reference: str, candidate: str, ref: Any, cand: Any, names: Sequence[str],
                  limits: Limits) -> str | None:
    """When the candidate's two heads are the reference's in the other order (an export that lists
    its outputs main first: the protocol takes outputs by position, index 1 = main), one line saying
    so; None otherwise. A stored-output check, so the gate can say where without a layer diff."""
    if not getattr(cand, "has_aux", True) or not names:
        return None
    crossed = compare_outputs(reference, f"{candidate} (heads crossed)",
                              (((ref.read(n, "aux"), ref.read(n, "main")), (cand.read(n, "main"), cand.read(n, "aux")))
                               for n in names), limits)
    if not crossed:
        return None
    return (f"{candidate}'s output {protocol.AUX_OUTPUT_INDEX} is the main head and output "
            f"{protocol.MAIN_OUTPUT_INDEX} the aux head ({reference}'s heads, crossed, agree within the limits on "
            f"{len(names)} image{'s' if len(names) != 1 else ''}): the outputs are in the wrong order")
