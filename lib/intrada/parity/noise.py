"""The float32 rounding-noise floor of the model, measured in the same run, and parity limits derived
from it.

Two faithful float32 implementations of the same graph (PyTorch/oneDNN, ONNX Runtime/MLAS,
OpenVINO, another thread count) differ only by the order in which they round: each lies within a
few units of the same rounding error from the exact result. The floor estimates that error the
direct way: the model's float32 forward against a float64 forward of the same weights on the same
images, per output head, as ``max |diff| / max |reference|`` (the parity gate's statistic). A
limit of ``factor x floor`` then follows the model and the machine instead of a fixed number set
600x above the noise: a mutant that moves the logits by 7e-5 of their scale passes a fixed 1e-3,
and fails a derived ~2e-5.

Two guards keep the derivation from making the gate looser or meaningless: the fixed limit of the
thresholds file stays as the outer bound (``min``), and the floor is taken as at least one float32
ulp relative (2^-23), so a machine whose float64 and float32 outputs happened to agree bit for bit
does not produce a zero limit.

Measured with the demo checkpoint (torch 2.13, onnxruntime 1.32, OpenVINO 2026.4, 2-core Xeon):
see lib/intrada/data/thresholds.toml ([parity] noise_factor) and docs/diagnosis.md.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .compare import Limits, TensorStats

# One float32 ulp relative to the scale: below it a difference cannot be told from rounding.
MIN_FLOOR: float = 2.0 ** -23
# Where the gate measures the floor: the centre 256x512 of each parity image. The float64 forward
# costs 2-8 float32 forwards on CPU; on a quarter of the pixels it costs a quarter, and the floor
# stays the same (demo checkpoint, the 2 parity images: 1.42e-6 on 256x512 crops in 12.7 s, 1.45e-6
# on the full 512x1024 images in ~45 s; docs/diagnosis.md). A 128x256 crop is cheaper still but
# moves more from image to image (0.97e-6 .. 1.96e-6), so the gate keeps the larger one.
GATE_CROP: tuple[int, int] = (256, 512)


def _heads(out: Any) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def _head_names(n: int) -> list[str]:
    return ["aux", "main"] if n == 2 else [f"output {i}" for i in range(n)]


def centre_crop(image: np.ndarray, crop: tuple[int, int] | None) -> np.ndarray:
    """[N,C,H,W] -> its centre ``crop`` (h, w); the image itself when ``crop`` is None or larger."""
    if crop is None:
        return image
    h, w = image.shape[-2:]
    ch, cw = min(crop[0], h), min(crop[1], w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(image[..., y0:y0 + ch, x0:x0 + cw])


@dataclass
class NoiseFloor:
    """float32 vs float64 forward of the same model: per head, the parity gate's statistics."""

    images: int
    outputs: list[TensorStats]  # reference = float64, candidate = float32
    crop: tuple[int, int] | None = None
    seconds: float = 0.0
    torch_version: str = field(default_factory=lambda: torch.__version__)
    threads: int = field(default_factory=torch.get_num_threads)

    @property
    def max_abs_over_scale(self) -> float:
        """The floor: the largest max |diff| / max |reference| over the heads."""
        return max((s.max_abs_over_scale for s in self.outputs), default=0.0)

    @property
    def rel_euclidean(self) -> float:
        return max((s.rel_euclidean for s in self.outputs), default=0.0)

    def report(self) -> str:
        where = f"{self.images} image{'s' if self.images != 1 else ''}" + (
            f" (centre {self.crop[0]}x{self.crop[1]})" if self.crop else "")
        heads = ", ".join(f"{s.name} {s.max_abs_over_scale:.3g}" for s in self.outputs)
        return (f"float32 noise floor (float32 vs float64 forward, {where}, torch {self.torch_version}, "
                f"{self.threads} threads): max|d|/scale {self.max_abs_over_scale:.3g} ({heads}), "
                f"rel. euclidean {self.rel_euclidean:.3g}")

    def as_dict(self) -> dict[str, Any]:
        return {"method": "float32 vs float64 forward of the same model", "images": self.images,
                "crop": list(self.crop) if self.crop else None, "max_abs_over_scale": self.max_abs_over_scale,
                "rel_euclidean": self.rel_euclidean, "seconds": self.seconds, "torch": self.torch_version,
                "threads": self.threads, "outputs": [s.as_dict() for s in self.outputs]}


def measure_noise_floor(model: torch.nn.Module, images: Iterable[np.ndarray], *,
                        fp32_outputs: Iterable[Sequence[np.ndarray]] | None = None,
                        crop: tuple[int, int] | None = None) -> NoiseFloor:
    """Run ``model`` (float32, eval) and a float64 copy of its weights on each image ([C,H,W] or
    [N,C,H,W] float32) and compare the outputs.

    ``fp32_outputs``: the float32 outputs of the same images when the caller has them already (the
    gate's stored PyTorch outputs), which saves one forward per image; not with ``crop``.
    ``crop``: compare on the centre (h, w) of each image only. The rounding error of each output
    value depends on the dot-product lengths and the data, not on the image size, so a crop gives a
    floor of the same order at a fraction of the cost (demo: 128x256 crops 0.85e-6..2.0e-6 vs full
    images 1.1e-6..1.45e-6); the float64 forward costs 2-8 float32 forwards on CPU.
    """
    if fp32_outputs is not None and crop is not None:
        raise ValueError("fp32_outputs are full-image outputs; they cannot be used with crop")
    t0 = time.perf_counter()
    model.eval()
    # The float64 weights are passed per call: no copy of the module, and the caller's model is untouched.
    state = {k: (v.double() if v.is_floating_point() else v)
             for k, v in (*model.named_parameters(), *model.named_buffers())}
    stats: list[TensorStats] = []
    given = iter(fp32_outputs) if fp32_outputs is not None else None
    n = 0
    with torch.inference_mode():
        for image in images:
            x = np.asarray(image, dtype=np.float32)
            x = centre_crop(x[None] if x.ndim == 3 else x, crop)
            ref = _heads(torch.func.functional_call(model, state, (torch.from_numpy(x).double(),)))
            if given is not None:
                cand = [np.asarray(a) for a in next(given)]
            else:
                cand = [t.numpy() for t in _heads(model(torch.from_numpy(x)))]
            if len(cand) != len(ref):
                raise ValueError(f"fp32_outputs has {len(cand)} outputs per image, the model {len(ref)}")
            if not stats:
                stats = [TensorStats(name) for name in _head_names(len(ref))]
            for s, r, c in zip(stats, ref, cand):
                s.update(r.numpy(), c.reshape(r.shape).astype(np.float32, copy=False))
            n += 1
    del state
    return NoiseFloor(n, stats, crop, time.perf_counter() - t0)


@dataclass(frozen=True)
class DerivedLimits:
    """The limits the parity gate applies, with where the max|d|/scale limit comes from."""

    limits: Limits
    floor: float  # measured max |diff| / scale, float32 vs float64
    factor: float
    minimum: float
    outer: Limits

    @property
    def derived(self) -> float:
        """factor x floor, before the outer bound."""
        return self.factor * max(self.floor, self.minimum)

    @property
    def bound_by_outer(self) -> bool:
        return self.outer.max_abs_over_scale is not None and self.derived > self.outer.max_abs_over_scale

    def report(self) -> str:
        limit = self.limits.max_abs_over_scale
        floor = f"{self.floor:.3g}" if self.floor >= self.minimum else f"{self.floor:.3g} (raised to {self.minimum:.3g})"
        how = (f"the outer bound (factor {self.factor:g} x floor {floor} = {self.derived:.3g} is above it)"
               if self.bound_by_outer else f"{self.factor:g} x noise floor {floor}, outer bound "
               f"{self.outer.max_abs_over_scale:g}")
        return f"max|d|/scale limit {limit:.3g} = {how}"

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_over_scale": self.limits.max_abs_over_scale, "floor": self.floor, "factor": self.factor,
                "minimum_floor": self.minimum, "derived": self.derived, "bound_by_outer": self.bound_by_outer,
                "outer_max_abs_over_scale": self.outer.max_abs_over_scale,
                "min_cosine": self.limits.min_cosine, "min_argmax_agreement": self.limits.min_argmax_agreement}


def derive_limits(floor: NoiseFloor | float, *, factor: float, outer: Limits,
                  minimum: float = MIN_FLOOR) -> DerivedLimits:
    """``max_abs_over_scale = min(outer, factor * max(floor, minimum))``; the other criteria are the
    outer ones unchanged (cosine and argmax agreement sit at the resolution of float32 already)."""
    value = floor.max_abs_over_scale if isinstance(floor, NoiseFloor) else float(floor)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"noise floor must be finite and >= 0, got {value}")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor must be finite and >= 1, got {factor}")
    derived = factor * max(value, minimum)
    bound = outer.max_abs_over_scale
    limit = derived if bound is None else min(derived, bound)
    limits = Limits(max_abs_over_scale=limit, min_cosine=outer.min_cosine, max_rel_euclidean=outer.max_rel_euclidean,
                    max_kl=outer.max_kl, min_argmax_agreement=outer.min_argmax_agreement)
    return DerivedLimits(limits, value, factor, minimum, outer)
