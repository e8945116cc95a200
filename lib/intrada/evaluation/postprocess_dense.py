"""The dense fill path of :func:`intrada.evaluation.postprocess.upsample_argmax`: whole rows of cells at once.

Where most cells of a row of cells are contested (noisy logits), interpolating every candidate class
over the whole row is cheaper than cell by cell: a float32 matmul gives approximate values with a
proven error bound, and only pixels whose best and second-best values are within twice the bound
(where rounding could decide) are recomputed exactly with :mod:`intrada.evaluation.bilinear`'s arithmetic.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .bilinear import Axis, fma

# Error bound of the dense path's approximate values, relative to the largest |logit| involved
# (see fill_dense_rows); gaps up to twice this are recomputed exactly.
_DENSE_BOUND = 2.0 ** -19
# ... and the share of a row's pixels rechecked beyond which the row goes to the sparse path.
_DENSE_MAX_RECHECK = 1 / 16


def fill_dense_rows(pred: np.ndarray, logits: np.ndarray, cand: np.ndarray, cell_rows: np.ndarray,
                    ax_h: Axis, ax_w: Axis) -> np.ndarray:
    """Fill whole rows of cells, every candidate class; returns the rows filled.

    A float32 matmul [rows x 2 weights] @ [2 source rows x W] per class gives approximate values
    (several times cheaper than emulating torch's FMA); a running argmax keeps best and second
    best. Pixels where they are within twice the error bound are recomputed exactly (a row with
    over _DENSE_MAX_RECHECK of them is left to the sparse path); elsewhere the approximate winner
    beats all others by more than both errors, so it is torch's unique maximum. Bound (u = 2^-24,
    S = largest |logit| of the row's classes on its two source rows, weights in [0, 1] summing to
    ~1): torch's width pass fl(s0 w0 + fl(s1 w1)), ours, the length-2 float32 dot product (gamma_2,
    any order, FMA or not) and torch's height pass are each within ~2uS of the real value, so
    |approx - torch| <= 8uS; we take 2^-19 S = 32uS, plus 2^-140 for underflow (<= 2^-150 each)."""
    h = logits.shape[1]
    r1s = ax_h.i1[ax_h.starts[cell_rows]]
    src_rows = np.union1d(cell_rows, r1s)
    where = np.zeros(h, np.intp)
    where[src_rows] = np.arange(src_rows.size)
    s = logits[:, src_rows]
    # approximate width pass of every class on the source rows needed, (C, len(src_rows), W)
    t = np.take(s, ax_w.i0, axis=2) * ax_w.w0 + np.take(s, ax_w.i1, axis=2) * ax_w.w1  # C-ordered
    matmul_ok = _matmul_is_fp32()
    done = []
    for i, r1 in zip(cell_rows.tolist(), r1s.tolist()):
        a, b = int(ax_h.starts[i]), int(ax_h.starts[i + 1])
        classes = np.flatnonzero(cand[:, i].any(axis=1))
        tt = t[np.ix_(classes, [where[i], where[r1]])]  # (m, 2, W)
        wy = np.stack([ax_h.w0[a:b], ax_h.w1[a:b]], axis=1)  # (rows, 2)
        if matmul_ok:
            approx = np.matmul(wy, tt)  # (m, rows, W)
        else:
            approx = tt[:, :1] * wy[None, :, :1] + tt[:, 1:] * wy[None, :, 1:]
        idx, gap = _running_argmax(approx, classes)
        sr = logits[np.ix_(classes, [i, r1])]  # (m, 2, w)
        bound = _DENSE_BOUND * float(np.abs(sr).max()) + 2.0 ** -140
        near = gap <= 2 * bound
        n_near = int(np.count_nonzero(near))
        if n_near > _DENSE_MAX_RECHECK * near.size:
            continue  # mostly exact or near ties (e.g. constant logits): cheaper on the sparse path
        if n_near:
            ys, xs = np.nonzero(near)
            # exact: torch's width pass on the two source rows at these columns, then height pass
            ex = fma(sr[:, :, ax_w.i0[xs]], ax_w.w0[xs], sr[:, :, ax_w.i1[xs]] * ax_w.w1[xs])
            val = fma(ex[:, 0], ax_h.w0[ys + a], ex[:, 1] * ax_h.w1[ys + a])  # (m, n)
            idx[ys, xs] = classes[np.argmax(val, axis=0)]  # first maximum, like np.argmax
        pred[a:b] = idx
        done.append(i)
    return np.array(done, np.intp)


def _running_argmax(values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class of the largest of values[r] per pixel, lowest r on ties; best minus second best)."""
    best = values[0].copy()
    second = np.full(best.shape, -np.inf, np.float32)
    idx = np.full(best.shape, classes[0], np.uint8)
    low, win, upd = np.empty_like(best), np.empty(best.shape, bool), np.empty(best.shape, np.uint8)
    for r in range(1, classes.size):
        v = values[r]  # classes ascend: max(idx, win * c) updates idx without a masked copy
        np.greater(v, best, out=win)
        np.minimum(best, v, out=low)
        np.maximum(second, low, out=second)
        np.maximum(best, v, out=best)
        np.multiply(win, np.uint8(classes[r]), out=upd)
        np.maximum(idx, upd, out=idx)
    return idx, best - second


@lru_cache(maxsize=1)
def _matmul_is_fp32() -> bool:
    """Whether np.matmul meets the float32 error bound the dense path relies on. A BLAS can be set
    to reduced precision (e.g. oneMKL's MKL_BLAS_COMPUTE_MODE); then plain numpy arithmetic is used."""
    rng = np.random.default_rng(0)
    wy = rng.uniform(0, 1, (16, 2)).astype(np.float32)
    t = (1 + rng.uniform(0, 1, (3, 2, 2048))).astype(np.float32)
    exact = np.matmul(wy.astype(np.float64), t.astype(np.float64))  # all terms positive
    return bool((np.abs(np.matmul(wy, t) - exact) <= 2.0 ** -22 * exact).all())  # 2 x gamma_2

