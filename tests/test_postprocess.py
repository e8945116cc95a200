"""The fast exact upsample+argmax against torch's F.interpolate(bilinear, align_corners=True)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from intrada import protocol
from intrada.postprocess import upsample_argmax, upsample_argmax_reference, upsample_values

FULL = (protocol.LABEL_H, protocol.LABEL_W)


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


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    assert a.shape == b.shape
    diff = int(np.count_nonzero(a != b))
    return 1 - diff / a.size, diff


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
    ours = upsample_argmax(logits, out_hw)
    assert ours.dtype == np.uint8 and ours.shape == out_hw
    agree, diff = _agreement(ours, _torch_argmax(logits, out_hw))
    assert diff == 0, f"{diff} pixels differ ({agree:.7%} agreement)"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_argmax_matches_reference_on_structured_logits(seed: int) -> None:
    logits = _smooth_logits(seed)
    ours = upsample_argmax(logits)
    ref = upsample_argmax_reference(logits)
    assert ref.shape == FULL
    agree, diff = _agreement(ours, ref)
    assert agree >= 0.99999, f"{diff} of {ref.size} pixels differ ({agree:.7%})"
    assert len(np.unique(ref)) > 5  # the fixture really has several regions


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
    ours = upsample_argmax(logits, (40, 70))
    assert (ours == 4).all()
    np.testing.assert_array_equal(ours, _torch_argmax(logits, (40, 70)))
    const = np.zeros((19, 4, 5), np.float32)
    assert (upsample_argmax(const, (10, 12)) == 0).all()


def test_rounding_ties_are_not_pruned() -> None:
    # Class 5 sits one ulp above class 2 at every corner, so in exact arithmetic 5 wins everywhere
    # and a pruning rule without a rounding margin would drop class 2. But after float32 rounding
    # both interpolate to the same value on many pixels, where np.argmax picks class 2.
    logits = np.full((19, 3, 4), 1.745, np.float32) - 10
    logits[2] = np.float32(1.745)
    logits[5] = np.nextafter(logits[2], np.float32(np.inf))
    ref = _torch_argmax(logits, (200, 300))
    assert set(np.unique(ref)) == {2, 5}
    np.testing.assert_array_equal(upsample_argmax(logits, (200, 300)), ref)


def test_near_ties_inside_cells() -> None:
    # Winners that alternate by one ulp from corner to corner.
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, (9, 17)).astype(np.float32) * 100
    logits = np.stack([base] * 19) - 50
    logits[2] = base
    logits[5] = np.nextafter(base, np.float32(np.inf))
    logits[5, ::2, ::3] = np.nextafter(base[::2, ::3], np.float32(-np.inf))
    ours = upsample_argmax(logits, (130, 260))
    ref = _torch_argmax(logits, (130, 260))
    assert set(np.unique(ref)) == {2, 5}
    np.testing.assert_array_equal(ours, ref)


def test_integer_logits_with_many_exact_ties() -> None:
    logits = np.random.default_rng(6).integers(0, 3, (19, 65, 129)).astype(np.float32)
    agree, diff = _agreement(upsample_argmax(logits), upsample_argmax_reference(logits))
    assert agree >= 0.99999, f"{diff} pixels differ ({agree:.7%})"


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
