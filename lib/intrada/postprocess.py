"""Main-head logits -> full-resolution trainId prediction, exactly as upstream but fast.

Upstream (ADVENT ``eval_single`` and the seed's ``intrada_postprocess.py``) upsamples the float32
[19, 65, 129] logits to [19, 1024, 2048] with ``nn.Upsample(mode='bilinear', align_corners=True)``
and takes ``np.argmax`` over the classes. :func:`upsample_argmax_reference` does exactly that.

:func:`upsample_argmax` gives the same map without ever building the 19x1024x2048 tensor:

* Bilinear interpolation with align_corners=True is separable. Every output pixel lies in one
  low-resolution *cell* (two adjacent source rows x two adjacent source columns), and its value for
  a class is a convex combination of that class's 4 corner logits. So a class whose largest corner
  is below another class's smallest corner cannot win anywhere in the cell. Most cells (region
  interiors) keep a single candidate and are filled directly; only boundary ("contested") cells
  are interpolated, each only for the classes that can still win in it. Contested cells are
  batched by candidate count, so a few vectorised passes do the work; within a cell the
  interpolation is separable (width pass on the two source rows, then height pass) and the argmax
  is a running comparison, so no [classes, H, W] array exists.
* Cost: ~8 ms per Cityscapes-size image for segmenter-like logits (~10% of cells contested,
  ~2.2 candidates each) against ~300 ms for the reference; the worst case (pure noise, every cell
  contested by many classes) is ~0.25 s, no slower than the reference.
* The interpolation of the remaining pixels reproduces torch's float32 arithmetic: the same source
  coordinates (``scale = (in - 1) / (out - 1)`` in float32, ``src = scale * dst``), the same weights,
  the width pass inside the height pass, and the fused multiply-adds that torch's vectorised CPU
  kernel (AVX2 / AVX512) compiles to. Values are therefore bit-identical to torch on those CPUs,
  and the argmax (first maximum wins, like ``np.argmax``) matches pixel for pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import protocol
from .checks import find_nonfinite

LABEL_SIZE: tuple[int, int] = (protocol.LABEL_H, protocol.LABEL_W)

# Rounding makes the convex-combination argument hold only approximately: a class whose corners
# are all below another's can still *tie* with it after float32 rounding (e.g. one ulp apart), and
# np.argmax gives a tie to the lower class index. So a class is pruned only when it loses by more
# than this relative margin, ~30x the worst-case rounding error of the two interpolation passes.
_PRUNE_MARGIN = 2.0 ** -18


@dataclass(frozen=True)
class _Axis:
    """Source index pair and weights of every output position along one axis (torch's formula)."""

    i0: np.ndarray  # int64 lower source index
    i1: np.ndarray  # int64 upper source index (== i0 on the last source row / column)
    w0: np.ndarray  # float32 weight of i0 (1 - lambda)
    w1: np.ndarray  # float32 weight of i1 (lambda)
    starts: np.ndarray  # int64 [in_size + 1]: output positions of cell k are starts[k]:starts[k+1]
    counts: np.ndarray  # int64 [in_size]: output positions per cell (0 only when downsampling)
    cell_pos: np.ndarray  # int64 [in_size, span]: each cell's positions, padded with its last one


@lru_cache(maxsize=8)
def _axis(in_size: int, out_size: int) -> _Axis:
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
    return _Axis(i0, i1, w0, lam, starts, counts, cell_pos)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` with one rounding, like the FMA instruction torch's kernel uses.

    A product of two float32 is exact in float64, so only the final sum rounds twice (float64,
    then float32); that double rounding can differ from a true FMA in astronomically rare cases.
    """
    return (a.astype(np.float64) * b + c).astype(np.float32)


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


def upsample_values(logits: np.ndarray, size: tuple[int, int] = LABEL_SIZE,
                    classes: np.ndarray | None = None) -> np.ndarray:
    """Full float32 upsampled logits [len(classes), H, W], bit-identical to torch (FMA CPUs).

    Materialises the tensor, so it is for tests and small sizes; :func:`upsample_argmax` uses the
    same arithmetic on the pixels that need it.
    """
    logits = _check_logits(logits)
    if classes is not None:
        logits = logits[np.asarray(classes)]
    ax_h = _axis(logits.shape[1], size[0])
    ax_w = _axis(logits.shape[2], size[1])
    # torch evaluates w-pass inside h-pass: t = fma(s[i0], w0, s[i1] * w1) per axis.
    t = _fma(logits[:, :, ax_w.i0], ax_w.w0, logits[:, :, ax_w.i1] * ax_w.w1)
    return _fma(t[:, ax_h.i0, :], ax_h.w0[:, None], t[:, ax_h.i1, :] * ax_h.w1[:, None])


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
    return hi >= best_floor - _PRUNE_MARGIN * scale


def upsample_argmax(logits: np.ndarray, size: tuple[int, int] = LABEL_SIZE) -> np.ndarray:
    """Same map as :func:`upsample_argmax_reference` as uint8 [H, W], without the full tensor.

    Region interiors (cells with one possible winner) cost one expansion of the cell map. Contested
    cells are processed together, grouped by their number of candidates k: each group gathers its
    cells' corner logits for their own k candidates and interpolates only those, so the cost is
    about (pixels in contested cells) x (mean candidates there), not x 19.
    """
    logits = _check_logits(logits)
    _, h, w = logits.shape
    ax_h, ax_w = _axis(h, int(size[0])), _axis(w, int(size[1]))

    cand = _cell_candidates(logits)
    n_cand = cand.sum(axis=0)
    # argmax of a one-hot column is its only True; contested cells are overwritten below.
    cell_winner = cand.argmax(axis=0).astype(np.uint8)
    # Each cell covers a contiguous block of output pixels, so expanding the cell map is two
    # np.repeat calls (much faster than a 2-D fancy-index gather).
    pred = np.repeat(np.repeat(cell_winner, ax_w.counts, axis=1), ax_h.counts, axis=0)

    contested = (n_cand > 1) & (ax_h.counts[:, None] > 0) & (ax_w.counts[None, :] > 0)
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


_MAX_VALUES = 2_000_000


def _fill_contested(pred: np.ndarray, flat: np.ndarray, cand: np.ndarray, ci: np.ndarray, cj: np.ndarray,
                    k: int, hw: tuple[int, int], ax_h: _Axis, ax_w: _Axis) -> None:
    """Interpolate and argmax the k candidate classes of cells (ci, cj), writing into ``pred``."""
    h, w = hw
    n = ci.size
    # (k, n) candidate classes per cell, ascending, so a strict '>' below keeps the lowest class on
    # exact ties, as np.argmax does
    classes = np.nonzero(cand[:, ci, cj].T)[1].reshape(n, k).T
    rows, cols = ax_h.cell_pos[ci], ax_w.cell_pos[cj]  # (n, span_h), (n, span_w) output positions
    x0, x1 = ax_w.i0[cols], ax_w.i1[cols]
    wx0, wx1 = ax_w.w0[cols], ax_w.w1[cols]
    r1 = ax_h.i1[rows[:, 0]]  # the upper source row is constant within a cell (lower one is ci)
    base0 = (classes * (h * w) + ci * w)[:, :, None]  # (k, n, 1) flat offsets of the two source rows
    base1 = (classes * (h * w) + r1 * w)[:, :, None]
    # width pass on both source rows, (k, n, span_w); torch: t = fma(s[x0], w0, s[x1] * w1)
    t0 = _fma(flat[base0 + x0], wx0, flat[base0 + x1] * wx1).astype(np.float64)
    t1 = _fma(flat[base1 + x0], wx0, flat[base1 + x1] * wx1)
    # height pass, (k, n, span_h, span_w), rounded once like an FMA: fma(t0, wy0, t1 * wy1)
    val = t0[:, :, None, :] * ax_h.w0[rows].astype(np.float64)[:, :, None]
    val += t1[:, :, None, :] * ax_h.w1[rows][:, :, None]
    val32 = val.astype(np.float32)
    best = val32[0]
    rank = np.zeros(best.shape, np.intp)
    for r in range(1, k):
        win = val32[r] > best
        np.copyto(best, val32[r], where=win)
        rank[win] = r
    winner = classes.T[np.arange(n)[:, None, None], rank].astype(np.uint8)
    pred[rows[:, :, None], cols[:, None, :]] = winner
