"""Per-layer statistics of one PyTorch / ONNX Runtime tensor pair: the rows of :mod:`intrada.diagnosis.layerdiff`.

:func:`compare_layer` computes the parity gate's statistics (:mod:`intrada.parity.compare`) for one pair
of tensors and judges them against per-layer :class:`~intrada.parity.compare.Limits`. Graph outputs use the
gate's own :class:`~intrada.parity.compare.TensorStats` (which adds the class-map agreement); intermediate
tensors take a few torch passes over one reused buffer (:class:`Scratch`), with the squared norms
summed in float64 so the cosine near 1 is not lost to float32 rounding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from ..parity.compare import Limits, TensorStats
from .layermap import Point


@dataclass(frozen=True)
class LayerRow:
    """Statistics of one compared tensor (PyTorch = reference, ONNX Runtime = candidate)."""

    index: int
    layer: str
    onnx_node: str
    op: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    p99_abs: float
    reference_absmax: float
    cosine: float
    rel_euclidean: float
    nonfinite: int
    argmax_agreement: float | None  # graph outputs only (class axis -3)
    failures: tuple[str, ...] = ()

    @property
    def max_abs_over_scale(self) -> float:
        return self.max_abs / self.reference_absmax if self.reference_absmax > 0 else self.max_abs

    @property
    def diverged(self) -> bool:
        return bool(self.failures)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape), "max_abs_over_scale": self.max_abs_over_scale,
                "diverged": self.diverged, "failures": list(self.failures)}



def _failures(row: LayerRow, limits: Limits, ref_nonfinite: int) -> tuple[str, ...]:
    out = []
    if ref_nonfinite:
        out.append(f"{ref_nonfinite} NaN/Inf values in the PyTorch reference")
    if row.nonfinite:
        out.append(f"{row.nonfinite} NaN/Inf values")
    if limits.max_abs_over_scale is not None and not row.max_abs_over_scale <= limits.max_abs_over_scale:
        out.append(f"max|d|/scale {row.max_abs_over_scale:.3g} > {limits.max_abs_over_scale:.3g}")
    if limits.min_cosine is not None and not row.cosine >= limits.min_cosine:
        out.append(f"cosine {row.cosine:.7f} < {limits.min_cosine:g}")
    if limits.max_rel_euclidean is not None and not row.rel_euclidean <= limits.max_rel_euclidean:
        out.append(f"rel. euclidean {row.rel_euclidean:.3g} > {limits.max_rel_euclidean:g}")
    if (row.argmax_agreement is not None and limits.min_argmax_agreement is not None
            and not row.argmax_agreement >= limits.min_argmax_agreement):
        out.append(f"argmax agreement {row.argmax_agreement:.5%} < {limits.min_argmax_agreement:.3%}")
    return tuple(out)


class Scratch:
    """A reusable float32 buffer, grown to the largest tensor: a fresh 70 MB temporary per layer
    would spend much of the comparison time faulting in pages."""

    def __init__(self) -> None:
        self._buf = torch.empty(0)

    def get(self, n: int) -> torch.Tensor:
        if self._buf.numel() < n:
            self._buf = torch.empty(0)  # free the old one first
            self._buf = torch.empty(n)
        return self._buf[:n]


def _finite(flat: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(values with NaN/Inf zeroed, how many there were)."""
    bad = int(flat.numel() - int(torch.isfinite(flat).sum()))
    return (torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0) if bad else flat), bad


def _sq_norm(flat: torch.Tensor, row: int = 1024) -> float:
    """|x|^2 from float32 norms of 1024-value rows summed in float64: one pass, ~1e-9 relative
    (a single float32 vector_norm over 10^7 values is 1e-4 off)."""
    m = flat.numel() // row * row
    r = torch.linalg.vector_norm(flat[:m].view(-1, row), dim=1).double() if m else torch.zeros(0, dtype=torch.float64)
    tail = float(torch.linalg.vector_norm(flat[m:].double())) if m < flat.numel() else 0.0
    return float((r * r).sum()) + tail * tail


_P99_SAMPLES = 1 << 18


def compare_layer(index: int, point: Point, reference: torch.Tensor, candidate: np.ndarray,
                  limits: Limits, scratch: Scratch | None = None) -> LayerRow:
    """One row. Intermediate tensors: a few torch passes over one reused buffer; graph outputs:
    the parity gate's own :class:`TensorStats` (which adds the argmax agreement)."""
    ref = reference.detach()
    shape = tuple(ref.shape)
    if tuple(candidate.shape) != shape:
        nan = float("nan")
        return LayerRow(index, point.label, point.onnx_node, point.op, shape, nan, nan, nan, nan, nan, nan, 0, None,
                        (f"shape {list(candidate.shape)}, PyTorch {list(shape)}",))
    if point.output_index is not None:
        s = TensorStats(point.label)
        s.update(ref.numpy(), candidate)
        row = LayerRow(index, point.label, point.onnx_node, point.op, shape, s.max_abs, s.mean_abs, s.p99_abs,
                       s.ref_absmax, s.cosine, s.rel_euclidean, s.nonfinite, s.argmax_agreement)
        return _judged(row, limits, s.ref_nonfinite)
    n = ref.numel()
    if n == 0:
        return _judged(LayerRow(index, point.label, point.onnx_node, point.op, shape, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0,
                                0, None), limits, 0)
    a = ref.float().reshape(-1)
    lo, hi = (float(v) for v in torch.aminmax(a))
    ref_bad = 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        a, ref_bad = _finite(a)
        lo, hi = (float(v) for v in torch.aminmax(a))
    b = torch.from_numpy(np.ascontiguousarray(candidate, dtype=np.float32)).reshape(-1)
    d = (scratch or Scratch()).get(n)
    torch.sub(a, b, out=d).abs_()
    max_abs = float(d.max())
    bad = 0
    if not np.isfinite(max_abs):  # a is finite here, so b is not
        b, bad = _finite(b)
        torch.sub(a, b, out=d).abs_()
        max_abs = float(d.max())
    mean_abs = float(d.sum()) / n  # torch's float32 sum is a cascade sum: ~1e-7 relative
    # the percentile on a regular subsample: 1 in 7 as TensorStats, at most 2^18 values
    p99 = float(np.percentile(d[:: max(7, n // _P99_SAMPLES)].numpy(), 99))
    nd, na, nb = (_sq_norm(t) ** 0.5 for t in (d, a, b))
    # cos = 1 - (|d|^2 - (|a| - |b|)^2) / (2 |a| |b|): no cancellation near 1, unlike a.b / (|a||b|)
    cosine = 1.0 - (nd * nd - (na - nb) ** 2) / (2 * na * nb) if na > 0 and nb > 0 else float(na == nb)
    rel = nd / na if na > 0 else float(nd > 0)
    row = LayerRow(index, point.label, point.onnx_node, point.op, shape, max_abs, mean_abs, p99, max(-lo, hi),
                   min(cosine, 1.0), rel, bad, None)
    return _judged(row, limits, ref_bad)


def _judged(row: LayerRow, limits: Limits, ref_nonfinite: int) -> LayerRow:
    return replace(row, failures=_failures(row, limits, ref_nonfinite))
