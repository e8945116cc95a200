"""Main-head logits -> full-resolution trainId prediction, exactly as upstream but fast.

Upstream (ADVENT ``eval_single`` and the seed's ``intrada_postprocess.py``) upsamples the float32
[19, 65, 129] logits to [19, 1024, 2048] with ``nn.Upsample(mode='bilinear', align_corners=True)``
and takes ``np.argmax`` over the classes. :func:`upsample_argmax_reference` does exactly that.

:func:`upsample_argmax` gives the same map without ever building the 19x1024x2048 tensor:

* Bilinear interpolation with align_corners=True is separable. Every output pixel lies in one
  low-resolution *cell* (two adjacent source rows x two adjacent source columns), and its value for
  a class is a convex combination of that class's 4 corner logits. So a class whose largest corner
  is below another class's smallest corner cannot win anywhere in the cell, nor can one whose 4
  corners are all <= those of a lower-index class (exact: see _cell_candidates). Most cells (region
  interiors) keep a single candidate and are filled directly; only boundary ("contested") cells
  are interpolated (sparse path), batched by candidate count, each for the classes that can still
  win in it, with a running argmax, so no [classes, H, W] array exists.
* Where most cells of a row of cells are contested (noisy logits), the dense path interpolates
  every candidate class over the whole row: a float32 matmul gives approximate values with a
  proven error bound, and only pixels whose best and second-best values are within twice the
  bound (where rounding could decide) are recomputed exactly (:mod:`intrada.evaluation.postprocess_dense`).
  A measured cost model picks the path per row of cells. Cost depends on the data: see
  docs/performance.md.
* Exact values reproduce torch's float32 arithmetic: the same source coordinates
  (``scale = (in - 1) / (out - 1)`` in float32, ``src = scale * dst``), the same weights, the
  width pass inside the height pass, and the fused multiply-adds of torch's vectorised CPU kernel
  (AVX2 / AVX512), so values and the argmax (first maximum wins) are bit-identical to torch on
  those CPUs; on torch 2.13 for outputs with height + width >= 129 (smaller ones take a torch path
  whose values differ by an ulp on some pixels). The arithmetic is in :mod:`intrada.evaluation.bilinear`.
"""
from __future__ import annotations

import numpy as np

from ..core import protocol
from .bilinear import Axis, fma, source_axis
from ..core.checks import find_nonfinite
from .postprocess_dense import fill_dense_rows

LABEL_SIZE: tuple[int, int] = (protocol.LABEL_H, protocol.LABEL_W)

# Rounding makes the convex-combination argument hold only approximately: a class whose corners
# are all below another's can still *tie* with it after float32 rounding (e.g. one ulp apart), and
# np.argmax gives a tie to the lower class index. So a class is pruned only when it loses by more
# than this relative margin, ~30x the worst-case rounding error of the two interpolation passes.
_PRUNE_MARGIN = 2.0 ** -18

# A row of cells is filled densely when its sparse work (values interpolated exactly, contested
# cells x candidates) exceeds DENSE_CROSSOVER x its dense work (all row pixels x candidate classes
# of the row): a dense value costs ~1/4 of a sparse one. Measured with
# benchmarks/calibrate_dense_crossover.py; figures in docs/performance.md.
DENSE_CROSSOVER = 0.25


def _check_logits(logits: np.ndarray) -> np.ndarray:
    if not isinstance(logits, np.ndarray) or logits.ndim != 3:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(f"logits must be a numpy array [classes, height, width], got {shape}")
    if logits.shape[0] < 1 or logits.shape[0] > 255:
        raise ValueError(f"logits have {logits.shape[0]} classes; the uint8 prediction holds 1..255")
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    bad = find_nonfinite(logits)
    if bad is not None:
        # np.argmax would let a NaN win; the dump reader rejects such files with a clear message.
        raise ValueError(f"logits contain {bad.count} NaN/Inf values")
    return logits


def upsample_argmax_reference(logits: np.ndarray, size: tuple[int, int] = LABEL_SIZE) -> np.ndarray:
    """The upstream procedure, literally: torch bilinear upsample (align_corners=True) then argmax.

    ``logits`` float32 [C, h, w]; returns int64 [H, W] with (H, W) = ``size``. Slow (~0.5 s and
    ~160 MB per Cityscapes image); used by tests and benchmarks as the ground truth.
    """
    import torch  # heavy and only needed here; the fast path must not import it in every worker

    logits = _check_logits(logits)
    with torch.no_grad():
        up = torch.nn.functional.interpolate(torch.from_numpy(logits)[None], size=tuple(size),
                                             mode=protocol.UPSAMPLE_MODE,
                                             align_corners=protocol.ALIGN_CORNERS)
        hwc = up[0].numpy().transpose(1, 2, 0)
        return np.argmax(hwc, axis=2)


def _cell_candidates(logits: np.ndarray) -> np.ndarray:
    """bool [C, h, w]: class c can win somewhere in cell (i, j) spanning rows i..i' and cols j..j'.

    Cell (i, j) has corners at rows (i, min(i + 1, h - 1)) and columns (j, min(j + 1, w - 1)), so
    the last row / column of cells is degenerate, matching i1 == i0 at the border.
    """
    nxt_r = np.concatenate([logits[:, 1:], logits[:, -1:]], axis=1)
    lo_r = np.minimum(logits, nxt_r)
    hi_r = np.maximum(logits, nxt_r)
    lo = np.minimum(lo_r, np.concatenate([lo_r[:, :, 1:], lo_r[:, :, -1:]], axis=2))
    hi = np.maximum(hi_r, np.concatenate([hi_r[:, :, 1:], hi_r[:, :, -1:]], axis=2))
    best_floor = lo.max(axis=0)
    scale = np.maximum(np.abs(hi).max(axis=0), np.abs(lo).max(axis=0))
    cand = hi >= best_floor - _PRUNE_MARGIN * scale
    # Dominance, exact despite rounding: interpolation with weights >= 0 is monotone in every
    # corner, in float32 too, so a class whose 4 corners are all <= those of a lower-index class w
    # is <= w at every pixel and loses ties to it. w = the best-floor class (first on ties).
    ci, cj = np.nonzero(cand.sum(axis=0) > 1)
    corners = np.stack([logits[:, ci, cj], nxt_r[:, ci, cj], *(a[:, ci, np.minimum(cj + 1, a.shape[2] - 1)]
                                                              for a in (logits, nxt_r))])  # (4, C, n)
    w = corners.min(axis=0).argmax(axis=0)
    dominated = (corners <= corners[:, w, np.arange(ci.size)][:, None]).all(axis=0)
    cand[:, ci, cj] &= ~(dominated & (np.arange(logits.shape[0])[:, None] > w))
    return cand


def upsample_argmax(logits: np.ndarray, size: tuple[int, int] = LABEL_SIZE, *,
                    dense_crossover: float = DENSE_CROSSOVER) -> np.ndarray:
    """Same map as :func:`upsample_argmax_reference` as uint8 [H, W], without the full tensor.

    Region interiors (cells with one possible winner) cost one expansion of the cell map. Each row
    of cells with contested cells is then filled exactly by the path the cost model finds cheaper
    (``dense_crossover``: 0 = always dense, ``inf`` = never): sparse (contested cells grouped by
    their number of candidates k, each interpolated for its k classes) or dense (every pixel of
    the row, for every class that can win anywhere in it).
    """
    logits = _check_logits(logits)
    _, h, w = logits.shape
    ax_h, ax_w = source_axis(h, int(size[0])), source_axis(w, int(size[1]))
    cand, n_cand, contested, dense_rows = _plan(logits, ax_h, ax_w, dense_crossover)
    # argmax of a one-hot column is its only True; contested cells are overwritten below.
    cell_winner = cand.argmax(axis=0).astype(np.uint8)
    # Each cell covers a contiguous block of output pixels, so expanding the cell map is two
    # np.repeat calls (much faster than a 2-D fancy-index gather).
    pred = np.repeat(np.repeat(cell_winner, ax_w.counts, axis=1), ax_h.counts, axis=0)
    if dense_rows.size:
        contested[fill_dense_rows(pred, logits, cand, dense_rows, ax_h, ax_w)] = False

    ci, cj = np.nonzero(contested)
    ks = n_cand[ci, cj]
    flat = logits.reshape(-1)
    block = ax_h.cell_pos.shape[1] * ax_w.cell_pos.shape[1]
    for k in np.unique(ks):
        sel = np.flatnonzero(ks == k)
        # bound the float64 working set (k x cells x block values) to ~16 MB
        step = max(1, _MAX_VALUES // (int(k) * block))
        for start in range(0, sel.size, step):
            part = sel[start:start + step]
            _fill_contested(pred, flat, cand, ci[part], cj[part], int(k), (h, w), ax_h, ax_w)
    return pred


def _plan(logits: np.ndarray, ax_h: Axis, ax_w: Axis,
          dense_crossover: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(candidates [C, h, w], their count [h, w], contested cells [h, w], dense cell rows)."""
    cand = _cell_candidates(logits)
    n_cand = cand.sum(axis=0)
    contested = (n_cand > 1) & (ax_h.counts[:, None] > 0) & (ax_w.counts[None, :] > 0)
    # work per row of cells in interpolated values per output row (both scale with its rows)
    sparse_work = (np.where(contested, n_cand, 0) * ax_w.counts[None, :]).sum(axis=1)
    dense_work = cand.any(axis=2).sum(axis=0) * int(ax_w.i0.size)
    dense_rows = np.flatnonzero((sparse_work > 0) & (dense_work * dense_crossover < sparse_work))
    return cand, n_cand, contested, dense_rows


def contest_profile(logits: np.ndarray, size: tuple[int, int] = LABEL_SIZE, *,
                    dense_crossover: float = DENSE_CROSSOVER) -> dict[str, float]:
    """What :func:`upsample_argmax` faces: share of contested cells, their mean number of candidate
    classes, share of rows of cells planned dense (a row with many exact ties may still go sparse)."""
    logits = _check_logits(logits)
    ax_h, ax_w = source_axis(logits.shape[1], int(size[0])), source_axis(logits.shape[2], int(size[1]))
    _, n_cand, contested, dense_rows = _plan(logits, ax_h, ax_w, dense_crossover)
    return {"contested_cells": float(contested.mean()),
            "mean_candidates": float(n_cand[contested].mean()) if contested.any() else 0.0,
            "dense_rows": dense_rows.size / max(int((ax_h.counts > 0).sum()), 1)}


_MAX_VALUES = 2_000_000


def _fill_contested(pred: np.ndarray, flat: np.ndarray, cand: np.ndarray, ci: np.ndarray, cj: np.ndarray,
                    k: int, hw: tuple[int, int], ax_h: Axis, ax_w: Axis) -> None:
    """Interpolate and argmax the k candidate classes of cells (ci, cj), writing into ``pred``.
    The n cells lie side by side, (span_h, n * span_w) per class: long inner loops for numpy."""
    h, w = hw
    n = ci.size
    classes = np.nonzero(cand[:, ci, cj].T)[1].reshape(n, k).T  # (k, n), ascending per cell
    rows, cols = ax_h.cell_pos[ci], ax_w.cell_pos[cj]  # (n, span_h), (n, span_w) output positions
    span_w = cols.shape[1]
    x0, x1 = ax_w.i0[cols].reshape(-1), ax_w.i1[cols].reshape(-1)  # (n * span_w,)
    wx0, wx1 = ax_w.w0[cols].reshape(-1), ax_w.w1[cols].reshape(-1)
    r1 = ax_h.i1[rows[:, 0]]  # the upper source row is constant within a cell (lower one is ci)
    base0 = np.repeat(classes * (h * w) + ci * w, span_w, axis=1)  # (k, n * span_w) source rows
    base1 = np.repeat(classes * (h * w) + r1 * w, span_w, axis=1)
    # width pass on both source rows; torch: t = fma(s[x0], w0, s[x1] * w1)
    t0 = fma(flat[base0 + x0], wx0, flat[base0 + x1] * wx1).astype(np.float64)
    t1 = fma(flat[base1 + x0], wx0, flat[base1 + x1] * wx1)
    # height pass, (k, span_h, n * span_w), rounded once like an FMA: fma(t0, wy0, t1 * wy1)
    wy0 = np.repeat(ax_h.w0[rows].T, span_w, axis=1)  # (span_h, n * span_w)
    wy1 = np.repeat(ax_h.w1[rows].T, span_w, axis=1)
    val = t0[:, None, :] * wy0.astype(np.float64)
    val += t1[:, None, :] * wy1
    val32 = val.astype(np.float32)
    best = val32[0]
    rank = np.zeros(best.shape, np.uint8)
    win, upd = np.empty(best.shape, bool), np.empty(best.shape, np.uint8)
    for r in range(1, k):  # strict '>': the lowest class keeps exact ties, as np.argmax
        np.greater(val32[r], best, out=win)
        np.maximum(best, val32[r], out=best)
        np.multiply(win, np.uint8(r), out=upd)  # ranks ascend: max(rank, win * r) is the update
        np.maximum(rank, upd, out=rank)
    winner = classes[rank, np.repeat(np.arange(n), span_w)[None, :]].astype(np.uint8)
    at = (rows.T[:, :, None] * pred.shape[1] + cols[None, :, :]).reshape(rows.shape[1], -1)
    pred.reshape(-1)[at] = winner  # a view: pred comes from np.repeat, C-contiguous
