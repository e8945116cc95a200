"""torch's float32 bilinear upsampling (``align_corners=True``), reproduced in numpy.

:func:`source_axis` gives, for every output position along one axis, the two source indices and
their weights exactly as aten computes them (``scale = (in - 1) / (out - 1)`` in float32,
``src = scale * dst``), plus the output positions of each source cell; :func:`fma` rounds
``a * b + c`` once, like the fused multiply-add of torch's vectorised CPU kernel. The exact paths of
:mod:`intrada.evaluation.postprocess` and :mod:`intrada.evaluation.postprocess_dense` are built from these two.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Axis:
    """Source index pair and weights of every output position along one axis (torch's formula)."""

    i0: np.ndarray  # int64 lower source index
    i1: np.ndarray  # int64 upper source index (== i0 on the last source row / column)
    w0: np.ndarray  # float32 weight of i0 (1 - lambda)
    w1: np.ndarray  # float32 weight of i1 (lambda)
    starts: np.ndarray  # int64 [in_size + 1]: output positions of cell k are starts[k]:starts[k+1]
    counts: np.ndarray  # int64 [in_size]: output positions per cell (0 only when downsampling)
    cell_pos: np.ndarray  # int64 [in_size, span]: each cell's positions, padded with its last one


@lru_cache(maxsize=8)
def source_axis(in_size: int, out_size: int) -> Axis:
    # aten area_pixel_compute_scale / compute_source_index_and_lambda with align_corners=True, all
    # in float32 (opmath of float): scale = float(in - 1) / (out - 1); src = scale * dst;
    # i0 = trunc(src); lambda = clamp(src - i0, 0, 1); i1 = i0 + (i0 < in - 1).
    if out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    else:
        scale = np.float32(0.0)
    src = np.float32(scale) * np.arange(out_size, dtype=np.float32)
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    w0 = (np.float32(1) - lam).astype(np.float32)
    # i0 is non-decreasing, so the output positions of each cell form one contiguous run.
    starts = np.searchsorted(i0, np.arange(in_size + 1), side="left").astype(np.int64)
    counts = np.diff(starts)
    # A fixed span lets all cells be processed as one array; padding repeats a real position, so
    # padded entries compute and write exactly the value of that position again.
    span = max(int(counts.max()), 1)
    offsets = np.minimum(np.arange(span)[None, :], np.maximum(counts - 1, 0)[:, None])
    cell_pos = np.minimum(starts[:-1, None] + offsets, max(out_size - 1, 0))
    for arr in (i0, i1, w0, lam, starts, counts, cell_pos):
        arr.setflags(write=False)
    return Axis(i0, i1, w0, lam, starts, counts, cell_pos)


def fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` with one rounding, like the FMA instruction torch's kernel uses.

    A product of two float32 is exact in float64, so only the final sum rounds twice (float64,
    then float32); that double rounding can differ from a true FMA in astronomically rare cases.
    """
    return (a.astype(np.float64) * b + c).astype(np.float32)

