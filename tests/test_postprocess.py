"""The fast exact upsample+argmax against torch's F.interpolate(bilinear, align_corners=True).

Every exactness test runs each fill path: ``dense`` and ``sparse`` forced through
``dense_crossover`` (0 and inf), and ``auto``, the cost model's per-row choice.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from intrada.evaluation import postprocess_dense
from intrada.core import protocol
from intrada.evaluation.bilinear import fma, source_axis
from intrada.evaluation.postprocess import DENSE_CROSSOVER, LABEL_SIZE, contest_profile, upsample_argmax, upsample_argmax_reference


def upsample_values(logits: np.ndarray, size: tuple[int, int] = LABEL_SIZE,
                    classes: np.ndarray | None = None) -> np.ndarray:
    """The oracle of the exact path: full float32 upsampled logits [len(classes), H, W], bit-identical to
    torch (FMA CPUs), with the arithmetic upsample_argmax uses; materialises the tensor (small sizes)."""
    logits = np.asarray(logits, dtype=np.float32)
    if classes is not None:
        logits = logits[np.asarray(classes)]
    ax_h = source_axis(logits.shape[1], size[0])
    ax_w = source_axis(logits.shape[2], size[1])
    # torch evaluates w-pass inside h-pass: t = fma(s[i0], w0, s[i1] * w1) per axis.
    t = fma(logits[:, :, ax_w.i0], ax_w.w0, logits[:, :, ax_w.i1] * ax_w.w1)
    return fma(t[:, ax_h.i0, :], ax_h.w0[:, None], t[:, ax_h.i1, :] * ax_h.w1[:, None])

FULL = (protocol.LABEL_H, protocol.LABEL_W)
PATHS = {"dense": 0.0, "auto": DENSE_CROSSOVER, "sparse": math.inf}
# torch 2.13's CPU kernel rounds like the FMA model of intrada.evaluation.postprocess only for outputs with
# height + width >= 129 (measured; smaller ones take a path whose values differ by an ulp on some
# pixels, which decides near ties differently). Small torch comparisons of ties use such sizes;
# the protocol's 1024x2048 is far above.


def _torch_up(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    with torch.no_grad():
        return torch.nn.functional.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear",
                                               align_corners=True)[0].numpy()


def _torch_argmax(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.argmax(_torch_up(logits, size), axis=0)


def _smooth_logits(seed: int, shape: tuple[int, int, int] = protocol.OUTPUT_SHAPE_CHW,
                   coarse: tuple[int, int] = (6, 11)) -> np.ndarray:
    """Segmenter-like logits: per class a smooth random field (coarse grid, linearly resized with
    np.interp) so classes own regions and meet along curves, plus a little pixel noise."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    grid = rng.normal(0, 4, (c, *coarse))
    ys = np.linspace(0, coarse[0] - 1, h)
    xs = np.linspace(0, coarse[1] - 1, w)
    rows = np.stack([[np.interp(xs, np.arange(coarse[1]), g[r]) for r in range(coarse[0])] for g in grid])
    out = np.stack([[np.interp(ys, np.arange(coarse[0]), rows[k][:, x]) for x in range(w)] for k in range(c)])
    out = out.transpose(0, 2, 1) + rng.normal(0, 0.3, (c, h, w))
    return out.astype(np.float32)


def _assert_all_paths(logits: np.ndarray, size: tuple[int, int], expected: np.ndarray) -> None:
    for name, crossover in PATHS.items():
        ours = upsample_argmax(logits, size, dense_crossover=crossover)
        assert ours.dtype == np.uint8 and ours.shape == expected.shape
        diff = int(np.count_nonzero(ours != expected))
        assert diff == 0, f"{name} path: {diff} of {expected.size} pixels differ"


def test_values_bit_identical_to_torch_full_size() -> None:
    logits = np.random.default_rng(0).normal(0, 5, protocol.OUTPUT_SHAPE_CHW).astype(np.float32)
    classes = np.array([0, 7, 18])
    ours = upsample_values(logits, FULL, classes=classes)
    ref = _torch_up(logits, FULL)[classes]
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    # Same source coordinates, weights and FMA order as torch's vectorised CPU kernel: equal bits.
    # (A CPU whose torch kernel has no FMA would differ by an ulp on some pixels; see postprocess.)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("in_hw,out_hw", [
    ((65, 129), (1024, 2048)),  # the protocol
    ((5, 7), (17, 33)),  # upsampling, small
    ((9, 4), (40, 41)),
    ((65, 129), (30, 70)),  # downsampling: some cells get no output row
    ((3, 6), (1, 5)),  # single output row: torch uses scale 0
    ((1, 1), (4, 4)),
])
def test_argmax_matches_torch_on_random_logits(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    logits = np.random.default_rng(sum(in_hw) + sum(out_hw)).normal(0, 3, (19, *in_hw)).astype(np.float32)
    _assert_all_paths(logits, out_hw, _torch_argmax(logits, out_hw))


@pytest.mark.parametrize("kind,seed", [("smooth", 0), ("smooth", 1), ("smooth", 2), ("cell_noise", 3),
                                       ("pure_noise", 4)])
def test_argmax_bit_identical_to_reference_at_full_size(kind: str, seed: int) -> None:
    smooth = _smooth_logits(seed)
    noise = 3 * np.random.default_rng(seed).normal(size=smooth.shape)
    logits = {"smooth": smooth, "cell_noise": smooth + noise, "pure_noise": noise}[kind].astype(np.float32)
    ref = upsample_argmax_reference(logits)
    assert ref.shape == FULL
    assert len(np.unique(ref)) > 5  # the fixture really has several regions
    _assert_all_paths(logits, FULL, ref)


def test_paths_match_the_exact_model_on_random_small_cases() -> None:
    # torch-free, so any size: every path against the argmax of the full float32 model, on
    # continuous, integer (exact ties), one-ulp, tiny (subnormal products) and huge logits
    rng = np.random.default_rng(11)
    for case in range(60):
        c, h, w = int(rng.integers(2, 20)), int(rng.integers(1, 10)), int(rng.integers(1, 12))
        size = (int(rng.integers(1, 60)), int(rng.integers(1, 90)))
        base = rng.normal(size=(c, h, w))
        one = np.broadcast_to(base[0].astype(np.float32), (c, h, w))  # all classes within one ulp
        ulp = np.nextafter(one, np.where(rng.random((c, h, w)) < 0.5, -np.inf, np.inf).astype(np.float32))
        logits = [base, np.round(base), base * 1e-38, base * 1e37,
                  np.where(rng.random((c, h, w)) < 0.5, one, ulp)][case % 5].astype(np.float32)
        expected = np.argmax(upsample_values(logits, size), axis=0)
        _assert_all_paths(logits, size, expected)


def test_reference_is_the_upstream_procedure() -> None:
    logits = _smooth_logits(5, (19, 9, 17))
    # nn.Upsample module (ADVENT / the seed) on [1, C, h, w], HWC transpose, np.argmax(axis=2)
    up = torch.nn.Upsample(size=(33, 65), mode="bilinear", align_corners=True)
    with torch.no_grad():
        seed = np.argmax(up(torch.from_numpy(logits[None]))[0].numpy().transpose(1, 2, 0), axis=2)
    np.testing.assert_array_equal(upsample_argmax_reference(logits, (33, 65)), seed)


def test_exact_ties_go_to_the_lowest_class_like_np_argmax() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (19, 9, 13)).astype(np.float32)
    logits[11] = logits[4] = logits.max(axis=0) + 1  # 4 and 11 tie everywhere and beat the rest
    logits[15] = logits[4]
    assert (upsample_argmax(logits, (40, 90)) == 4).all()
    _assert_all_paths(logits, (40, 90), _torch_argmax(logits, (40, 90)))
    const = np.zeros((19, 4, 5), np.float32)
    _assert_all_paths(const, (10, 12), np.zeros((10, 12), np.uint8))


def test_rounding_ties_are_not_pruned() -> None:
    # Class 5 sits one ulp above class 2 at every corner, so in exact arithmetic 5 wins everywhere
    # and a pruning rule without a rounding margin would drop class 2. But after float32 rounding
    # both interpolate to the same value on many pixels, where np.argmax picks class 2.
    logits = np.full((19, 3, 4), 1.745, np.float32) - 10
    logits[2] = np.float32(1.745)
    logits[5] = np.nextafter(logits[2], np.float32(np.inf))
    ref = _torch_argmax(logits, (200, 300))
    assert set(np.unique(ref)) == {2, 5}
    _assert_all_paths(logits, (200, 300), ref)


def _near_tie_logits(seed: int) -> np.ndarray:
    """Classes 2 and 5 alternate as winners by one ulp from corner to corner."""
    base = np.random.default_rng(seed).normal(0, 1, (9, 17)).astype(np.float32) * 100
    logits = np.stack([base] * 19) - 50
    logits[2] = base
    logits[5] = np.nextafter(base, np.float32(np.inf))
    logits[5, ::2, ::3] = np.nextafter(base[::2, ::3], np.float32(-np.inf))
    return logits


def test_dominated_classes_are_pruned_exactly() -> None:
    # Class 9 equals class 2 at most grid points and is one ulp below elsewhere: it is never above
    # class 2 anywhere (interpolation is monotone in every corner, in float32 too) and loses the
    # ties, so it is no candidate, although its largest corner beats class 2's smallest.
    rng = np.random.default_rng(12)
    logits = rng.normal(0, 1, (19, 9, 17)).astype(np.float32)
    logits[2] = logits.max() + 1 + rng.random((9, 17)).astype(np.float32)  # above every other class
    logits[9] = np.where(rng.random((9, 17)) < 0.7, logits[2], np.nextafter(logits[2], np.float32(-np.inf)))
    assert contest_profile(logits, (40, 90))["contested_cells"] == 0
    ref = _torch_argmax(logits, (40, 90))
    assert (ref == 2).all()
    _assert_all_paths(logits, (40, 90), ref)
    # all classes equal: nothing contested, class 0 everywhere, as np.argmax
    assert contest_profile(np.zeros((19, 65, 129), np.float32))["contested_cells"] == 0
    assert not upsample_argmax(np.zeros((19, 65, 129), np.float32)).any()


def test_near_ties_inside_cells() -> None:
    logits = _near_tie_logits(4)
    ref = _torch_argmax(logits, (130, 260))
    assert set(np.unique(ref)) == {2, 5}
    _assert_all_paths(logits, (130, 260), ref)


def test_dense_path_recheck_decides_near_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dense path's float32 matmul is off by an ulp or so; only the exact recheck of pixels
    # within its error bound makes it exact. Rows are kept on the dense path however many pixels
    # need the recheck (by default a row of mostly near ties goes to the sparse path).
    monkeypatch.setattr(postprocess_dense, "_DENSE_MAX_RECHECK", 1.0)
    logits = _near_tie_logits(4)
    ref = _torch_argmax(logits, (130, 260))
    np.testing.assert_array_equal(upsample_argmax(logits, (130, 260), dense_crossover=0), ref)
    monkeypatch.setattr(postprocess_dense, "_DENSE_BOUND", 0.0)  # without the bound, near ties come out wrong
    assert np.count_nonzero(upsample_argmax(logits, (130, 260), dense_crossover=0) != ref) > 100


@pytest.mark.parametrize("max_recheck", [postprocess_dense._DENSE_MAX_RECHECK, 1.0])
def test_dense_path_without_blas_is_exact_too(monkeypatch: pytest.MonkeyPatch, max_recheck: float) -> None:
    monkeypatch.setattr(postprocess_dense, "_matmul_is_fp32", lambda: False)
    monkeypatch.setattr(postprocess_dense, "_DENSE_MAX_RECHECK", max_recheck)
    for logits in (_near_tie_logits(5), np.random.default_rng(9).normal(0, 3, (19, 9, 17)).astype(np.float32)):
        _assert_all_paths(logits, (130, 260), _torch_argmax(logits, (130, 260)))


def test_reduced_precision_matmul_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    assert postprocess_dense._matmul_is_fp32.__wrapped__()  # this machine's BLAS: IEEE float32
    real = np.matmul

    def bf16_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # inputs rounded to bfloat16
        if a.dtype != np.float32:
            return real(a, b)
        bf16 = [(x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) for x in (a, b)]
        return real(*bf16)

    monkeypatch.setattr(np, "matmul", bf16_matmul)
    assert not postprocess_dense._matmul_is_fp32.__wrapped__()


def test_integer_logits_with_many_exact_ties() -> None:
    logits = np.random.default_rng(6).integers(0, 3, (19, 65, 129)).astype(np.float32)
    _assert_all_paths(logits, FULL, upsample_argmax_reference(logits))


def test_cost_model_goes_dense_where_cells_are_contested() -> None:
    noise = np.random.default_rng(8).normal(0, 3, protocol.OUTPUT_SHAPE_CHW).astype(np.float32)
    smooth = _smooth_logits(0)
    p_noise, p_smooth = contest_profile(noise), contest_profile(smooth)
    assert p_noise["contested_cells"] > 0.99 and p_noise["mean_candidates"] > 10
    assert p_noise["dense_rows"] == 1.0  # every row of cells
    assert p_smooth["contested_cells"] < 0.5 and p_smooth["dense_rows"] < 0.5
    # the two forced settings
    assert contest_profile(smooth, dense_crossover=math.inf)["dense_rows"] == 0.0
    assert contest_profile(smooth, dense_crossover=0.0)["dense_rows"] > p_smooth["dense_rows"]


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="classes, height, width"):
        upsample_argmax(np.zeros((19, 65), np.float32))
    bad = np.zeros((19, 4, 4), np.float32)
    bad[3, 1, 1] = np.nan
    bad[4, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 NaN/Inf"):
        upsample_argmax(bad)
    with pytest.raises(ValueError, match="uint8 prediction"):
        upsample_argmax(np.zeros((300, 2, 2), np.float32))
    # float64 input is accepted and treated as float32, as the dumps are
    x = np.random.default_rng(7).normal(size=(19, 5, 6))
    np.testing.assert_array_equal(upsample_argmax(x, (9, 11)), _torch_argmax(x.astype(np.float32), (9, 11)))
