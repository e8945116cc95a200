"""The run plan: what the gate will compute on this machine, and roughly how long it will take,
decided before anything runs and printed in the pytest header.

The expensive step on a device host is the CPU reference: ONNX Runtime over the whole val split
costs ~4 s per image on 2 cores (~35 min for 500 images) while the device needs 11 s for all of
them. When an om or recorded device outputs are judged, the om's own full-split mIoU is the
certified number, and the ONNX reference only has to show that the om computes what the ONNX
computes: it runs on a sample spread evenly over the split (thresholds [om] onnx_sample_images,
with the statistical reason there), unless ``--onnx-accuracy full`` asks for the whole split.

Bins (preprocessed inputs) are made for the images a runner reads and no others: ONNX Runtime's
images (PyTorch, OpenVINO and the noise floor read the first of them), and the whole split when an
om runs live here, since a device tool runs the whole split. Recorded device outputs (``--dumps``)
read no bins at all, so judging them alone makes only the ONNX sample's.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any


def spread(n: int, k: int) -> tuple[int, ...]:
    """``k`` indices of ``range(n)`` spread evenly from first to last (all of them when k >= n):
    the val split is sorted by city, so the first k images would all be Frankfurt."""
    if k >= n:
        return tuple(range(n))
    if k == 1:
        return (0,)
    return tuple(dict.fromkeys(round(i * (n - 1) / (k - 1)) for i in range(k)))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class RunPlan:
    images: int  # images of the split being judged
    onnx_indices: tuple[int, ...]  # the images ONNX Runtime runs on
    device_outputs: tuple[str, ...]  # "om", "dumps": what will be judged against the ONNX
    reason: str  # why this many ONNX images
    seconds_per_image: float | None  # ONNX Runtime, estimated for this machine
    estimate_basis: str
    parity_only: bool = False  # only parity tests read ONNX Runtime's outputs (see split_needed)
    # the om pre-flight (intrada.preflight): the force_fp16 emulation on the om sample, and what one
    # emulated image costs in float32 forwards (intrada.fp16.COST_IN_FP32_FORWARDS); () when not planned
    preflight_indices: tuple[int, ...] = ()
    preflight_cost: float | None = None

    @property
    def onnx_full(self) -> bool:
        return len(self.onnx_indices) == self.images

    @property
    def om_live(self) -> bool:
        """An om may run live here (--om, or device tools found): it runs the whole split."""
        return "om" in self.device_outputs

    @property
    def bin_indices(self) -> tuple[int, ...]:
        """The images preprocessed into bins before any om runs: ONNX Runtime's (the CPU runners
        read no others). A live om adds the rest of the split when it runs (:attr:`om_live`)."""
        return self.onnx_indices

    def bins_line(self) -> str:
        """Which images get bins, and why (printed with the plan, recorded in the report)."""
        n, total = len(self.bin_indices), self.images
        if self.onnx_full:
            what = f"all {total} images: ONNX Runtime runs on the whole split"
        else:
            what = (f"{n} of {total} images, the ones ONNX Runtime runs on"
                    + ("" if self.om_live else "; recorded device outputs read none"))
        if self.om_live and not self.onnx_full:
            what += f"; all {total} when an om runs live (a device tool runs the whole split)"
        return f"bins for {what}"

    def select(self, items: Sequence[Any]) -> list[Any]:
        """The ONNX Runtime images among ``items`` (the split's samples, in order)."""
        return [items[i] for i in self.onnx_indices]

    def select_preflight(self, items: Sequence[Any]) -> list[Any]:
        """The om pre-flight's images among ``items``: the om sample, a subset of the ONNX Runtime images."""
        return [items[i] for i in self.preflight_indices]

    def lines(self) -> list[str]:
        def cost(n: int) -> str:
            return "" if self.seconds_per_image is None else f" ({_duration(n * self.seconds_per_image)})"

        out = [f"ONNX Runtime on {len(self.onnx_indices)} of {self.images} images{cost(len(self.onnx_indices))}: "
               f"{self.reason}"]
        if not self.onnx_full and not self.parity_only:
            out.append(f"ONNX Runtime on all {self.images} images would take{cost(self.images) or ' longer'}; "
                       "pass --onnx-accuracy full to run it")
        out.append(self.bins_line())
        if self.preflight_indices and not self.parity_only:
            n = len(self.preflight_indices)
            factor = self.preflight_cost
            each = "" if factor is None else f", ~{factor:.1f} fp32 forwards per image"
            spent = "" if factor is None or self.seconds_per_image is None else \
                f" ({_duration(n * factor * self.seconds_per_image)}{each})"
            out.append(f"om pre-flight: force_fp16 emulation on {n} of {self.images} images{spent or each}: "
                       "[om] preflight_images of the om sample, against ONNX Runtime's outputs on them (predicted "
                       "for force_fp16; never certifies an om)")
        if self.seconds_per_image is not None:
            out.append(f"estimate: {self.seconds_per_image:.1f} s per image ({self.estimate_basis})")
        return out

    def for_parity_only(self, parity_images: int) -> RunPlan:
        """The plan when only parity tests read ONNX Runtime's outputs (:func:`split_needed` is
        False): ONNX Runtime on the parity images alone, the first ``parity_images`` of the plan's."""
        indices = self.onnx_indices[:parity_images]
        if len(indices) == len(self.onnx_indices):
            return self
        return replace(self, onnx_indices=indices, parity_only=True,
                       reason=f"only parity tests read ONNX Runtime's outputs: the {len(indices)} parity image"
                              f"{'s' if len(indices) != 1 else ''} ([parity] images), not {self._what()}")

    def _what(self) -> str:
        return "the whole split" if self.onnx_full else f"the sample of {len(self.onnx_indices)}"

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "onnx_images": len(self.onnx_indices), "onnx_indices": list(self.onnx_indices),
                "device_outputs": list(self.device_outputs), "reason": self.reason, "parity_only": self.parity_only,
                "bin_images": len(self.bin_indices), "om_live": self.om_live, "bins": self.bins_line(),
                "seconds_per_image": self.seconds_per_image, "estimate_basis": self.estimate_basis,
                "preflight_images": len(self.preflight_indices), "preflight_indices": list(self.preflight_indices),
                "preflight_fp32_forwards_per_image": self.preflight_cost, "lines": self.lines()}


def split_needed(selected: Iterable[tuple[Collection[str], Collection[str]]]) -> bool:
    """Whether any selected test reads ONNX Runtime's outputs beyond the parity images: ``selected``
    gives each test's fixture names and marker names. Parity tests (marker ``parity``) read the parity
    images only; the ONNX mIoU (accuracy), the om and dumps comparisons (om) and the timed outputs
    (perf) read the plan's images. With ``-m parity`` on a 500-image split, the first kind alone
    would otherwise cost ONNX Runtime on every image (~35 min on 2 cores) to compare 2."""
    return any("onnx_outputs" in fixtures and "parity" not in markers for fixtures, markers in selected)


def make_plan(images: int, *, device_outputs: Sequence[str], onnx_accuracy: str, sample_images: int,
              preflight_images: int | None = None, seconds_per_image: float | None = None,
              estimate_basis: str = "", preflight_cost: float | None = None) -> RunPlan:
    """``onnx_accuracy``: "full", "sample" or "auto" (sample exactly when device outputs are judged).
    The om pre-flight runs on ``preflight_images`` of the om sample (``sample_images`` spread over the
    split, the images an om's parity is judged on), spread over it; all of them when None.
    ``preflight_cost``: one emulated image in float32 forwards."""
    if onnx_accuracy not in ("auto", "full", "sample"):
        raise ValueError(f"onnx_accuracy must be auto, full or sample, got {onnx_accuracy!r}")
    sample = onnx_accuracy == "sample" or (onnx_accuracy == "auto" and bool(device_outputs))
    if sample and sample_images < images:
        judged = " and ".join(device_outputs) if device_outputs else "nothing on a device"
        reason = (f"a sample spread over the split ([om] onnx_sample_images = {sample_images}), because the {judged} "
                  "outputs are judged: their own full-split mIoU is the certified number, the sample shows they "
                  "compute what the ONNX computes")
        indices = spread(images, sample_images)
    else:
        reason = "the whole split (--onnx-accuracy full)" if onnx_accuracy == "full" else "the whole split"
        indices = tuple(range(images))
    om_sample = spread(images, sample_images)
    share = len(om_sample) if preflight_images is None else min(preflight_images, len(om_sample))
    return RunPlan(images, indices, tuple(device_outputs), reason, seconds_per_image, estimate_basis,
                   preflight_indices=tuple(om_sample[i] for i in spread(len(om_sample), share)),
                   preflight_cost=preflight_cost)


def parity_only_plan(plan: RunPlan, cfg: Any) -> RunPlan:
    """``plan`` for a selection where only parity tests read ONNX Runtime's outputs."""
    return plan.for_parity_only(cfg.thresholds.get("parity", "images"))


def plan_for_config(cfg: Any) -> RunPlan:
    """The plan before the split is opened: images counted from the options (the demo has
    DEMO_IMAGES), device outputs from --om/--dumps and the tools found, the sample size from the
    thresholds in effect, the estimate from a small fp32 matmul measured now."""
    from .artifacts import judged_images
    from .. import demo
    from ..ascend.tools import discover
    from ..core import protocol
    from ..dataset.cityscapes import list_samples
    from ..diagnosis.fp16 import COST_IN_FP32_FORWARDS
    from ..runners.roofline import measure_matmul_gflops

    if cfg.cityscapes is not None:
        try:
            images = len(list_samples(cfg.cityscapes, "val"))
        except Exception:  # a broken split is reported by the tests that read it, not by the header
            images = 0
    else:
        images = demo.DEMO_IMAGES
    images = len(judged_images(range(images), cfg.max_images))
    outputs = (["om"] if cfg.om is not None or discover(probe_api=False).anything else []) + \
        (["dumps"] if cfg.dumps is not None else [])
    thresholds = cfg.thresholds
    gflops = measure_matmul_gflops(n=1024, repeats=3).gflops
    return make_plan(images, device_outputs=outputs, onnx_accuracy=cfg.onnx_accuracy,
                     **thresholds.om_sample(),
                     seconds_per_image=protocol.GFLOP_PER_IMAGE / gflops, preflight_cost=COST_IN_FP32_FORWARDS,
                     estimate_basis=f"{protocol.GFLOP_PER_IMAGE:.0f} GFLOP per image at this CPU's fp32 matmul rate, "
                     f"{gflops:.0f} GFLOP/s measured now")
