"""intrada.parity.noise: the float32 noise floor (float32 vs float64 forward) and the limits derived from it.

The toy network (conftest) keeps the forward passes cheap; the demo checkpoint's floor, the
derived limit against faithful runtimes and against one-conv mutants are in test_layerdiff.py
(they share its real export).
"""
from __future__ import annotations

import copy
import tomllib
from typing import Any

import numpy as np
import pytest
import torch

from intrada.parity.compare import Limits, TensorStats
from intrada.core.errors import ThresholdsError
from intrada.parity.noise import MIN_FLOOR, NoiseFloor, centre_crop, derive_limits, measure_noise_floor
from intrada.gate.thresholds import DEFAULT_PATH, load, parse

OUTER = Limits(max_abs_over_scale=1e-3, min_cosine=0.99999, min_argmax_agreement=0.999)


def test_derive_limits_is_factor_times_floor_inside_the_outer_bound() -> None:
    d = derive_limits(1.45e-6, factor=10, outer=OUTER)
    assert d.limits.max_abs_over_scale == pytest.approx(1.45e-5) and not d.bound_by_outer
    assert d.limits.min_cosine == 0.99999 and d.limits.min_argmax_agreement == 0.999  # unchanged
    assert d.report() == "max|d|/scale limit 1.45e-05 = 10 x noise floor 1.45e-06, outer bound 0.001"
    # a bit-exact machine: the floor is raised to one float32 ulp, never a zero limit
    z = derive_limits(0.0, factor=10, outer=OUTER)
    assert z.limits.max_abs_over_scale == pytest.approx(10 * MIN_FLOOR) == pytest.approx(1.1920929e-6)
    assert "noise floor 0 (raised to 1.19e-07)" in z.report()
    # a noisy machine cannot loosen the gate beyond the fixed limit
    big = derive_limits(5e-4, factor=10, outer=OUTER)
    assert big.limits.max_abs_over_scale == 1e-3 and big.bound_by_outer and big.derived == pytest.approx(5e-3)
    assert big.report().startswith("max|d|/scale limit 0.001 = the outer bound (factor 10 x floor 0.0005 = 0.005")
    assert big.as_dict()["bound_by_outer"] is True and big.as_dict()["floor"] == 5e-4


@pytest.mark.parametrize("floor, factor, message", [(float("nan"), 10, "noise floor"), (-1.0, 10, "noise floor"),
                                                    (1e-6, 0.5, "factor"), (1e-6, float("inf"), "factor")])
def test_derive_limits_rejects_nonsense(floor: float, factor: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derive_limits(floor, factor=factor, outer=OUTER)


def test_limits_from_the_shipped_thresholds() -> None:
    t = load()
    d = t.derived_limits(1.45e-6)
    assert (d.factor, d.minimum) == (t.get("parity", "noise_factor"), t.get("parity", "noise_min_floor"))
    assert d.outer.max_abs_over_scale == t.get("parity", "max_abs_over_scale")
    assert d.limits.max_abs_over_scale == pytest.approx(1.45e-6 * t.get("parity", "noise_factor"))
    assert "2 (two faithful fp32" in t.source("parity", "noise_factor")


def _shipped() -> dict[str, Any]:
    with open(DEFAULT_PATH, "rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("key, value, message", [
    ("noise_factor", 0.5, r"parity\.noise_factor = 0\.5 must be finite and >= 1"),
    ("noise_min_floor", 0.0, r"parity\.noise_min_floor = 0\.0 must be finite and > 0"),
    ("noise_factor", None, r"missing required entry parity\.noise_factor"),
])
def test_thresholds_validate_the_noise_keys(key: str, value: float | None, message: str) -> None:
    data = _shipped()
    if value is None:
        del data["parity"][key]
    else:
        data["parity"][key] = {"value": value, "source": "test"}
    with pytest.raises(ThresholdsError, match=message):
        parse(DEFAULT_PATH, data)


def test_centre_crop() -> None:
    x = np.arange(2 * 3 * 8 * 10, dtype=np.float32).reshape(2, 3, 8, 10)
    c = centre_crop(x, (4, 6))
    assert c.shape == (2, 3, 4, 6) and c.flags.c_contiguous and c[0, 0, 0, 0] == x[0, 0, 2, 2]
    assert centre_crop(x, None) is x and centre_crop(x, (100, 100)).shape == x.shape


@pytest.fixture(scope="module")
def toy_floor(toy_model: torch.nn.Module, toy_batch: np.ndarray) -> NoiseFloor:
    return measure_noise_floor(toy_model, [toy_batch[0], toy_batch[1]])


def test_floor_is_float32_rounding(toy_model: torch.nn.Module, toy_batch: np.ndarray, toy_floor: NoiseFloor) -> None:
    assert toy_floor.images == 2 and [s.name for s in toy_floor.outputs] == ["aux", "main"]
    # float32 keeps 24 bits: a few ulps of the scale, never zero, never near a real difference
    assert MIN_FLOOR / 4 < toy_floor.max_abs_over_scale < 1e-5
    # the same numbers as an independent float64 copy of the module
    ref = copy.deepcopy(toy_model).double()
    stats = [TensorStats("aux"), TensorStats("main")]
    with torch.inference_mode():
        for x in toy_batch:
            r64 = ref(torch.from_numpy(x[None]).double())
            r32 = toy_model(torch.from_numpy(x[None]))
            for s, a, b in zip(stats, r64, r32):
                s.update(a.numpy(), b.numpy())
    assert toy_floor.max_abs_over_scale == pytest.approx(max(s.max_abs_over_scale for s in stats), rel=1e-12)
    assert next(toy_model.parameters()).dtype == torch.float32  # the caller's model is untouched
    assert toy_floor.report().startswith("float32 noise floor (float32 vs float64 forward, 2 images, torch ")
    assert toy_floor.as_dict()["max_abs_over_scale"] == toy_floor.max_abs_over_scale


def test_floor_from_stored_outputs_and_on_crops(toy_model: torch.nn.Module, toy_batch: np.ndarray,
                                                toy_floor: NoiseFloor) -> None:
    with torch.inference_mode():
        stored = [tuple(t.numpy() for t in toy_model(torch.from_numpy(x[None]))) for x in toy_batch]
    again = measure_noise_floor(toy_model, list(toy_batch), fp32_outputs=stored)
    assert again.max_abs_over_scale == toy_floor.max_abs_over_scale
    cropped = measure_noise_floor(toy_model, list(toy_batch), crop=(128, 256))
    assert cropped.crop == (128, 256) and "centre 128x256" in cropped.report()
    assert toy_floor.max_abs_over_scale / 4 < cropped.max_abs_over_scale < 4 * toy_floor.max_abs_over_scale
    with pytest.raises(ValueError, match="cannot be used with crop"):
        measure_noise_floor(toy_model, list(toy_batch), fp32_outputs=stored, crop=(128, 256))
    # outputs that are not the model's: refused, not silently compared
    with pytest.raises(ValueError, match="1 outputs per image, the model 2"):
        measure_noise_floor(toy_model, list(toy_batch), fp32_outputs=[s[:1] for s in stored])


def test_floor_sees_a_perturbed_float32_model(toy_model: torch.nn.Module, toy_batch: np.ndarray,
                                              toy_floor: NoiseFloor) -> None:
    """The float32 side is compared, not assumed: float32 outputs of other weights are far above."""
    other = copy.deepcopy(toy_model)
    with torch.no_grad():
        other.main_b.weight.mul_(1.0001)
    with torch.inference_mode():
        stored = [tuple(t.numpy() for t in other(torch.from_numpy(x[None]))) for x in toy_batch]
    moved = measure_noise_floor(toy_model, list(toy_batch), fp32_outputs=stored)
    assert moved.max_abs_over_scale > 10 * toy_floor.max_abs_over_scale
