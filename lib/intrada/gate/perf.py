"""Throughput as the perf gate judges it.

* CPU (ONNX Runtime): images per second of the timed runs against a fraction of this machine's fp32
  matmul roofline measured in the same run (a fixed fps cannot hold across CPUs).
* Device: the tool's own per-chip rate, converted to the target's unit (the seed's 310 card figure is
  the per-chip Interface throughputRate x 4 chips).
"""
from __future__ import annotations

from typing import Any

from ..core import protocol
from .verdict import Throughput, ThroughputTarget, Verdict, judge_throughput


def judge_cpu_throughput(*, batch_size: int, median_s: float, roofline: Any, thresholds: Any, threads: Any = None,
                         subject: str = "onnxruntime") -> Verdict:
    """``batch_size``: the batch the model computed (dim 0 of the timed outputs); ``median_s``: the
    median of the timed rounds; ``roofline``: :class:`intrada.runners.roofline.CpuRoofline` measured
    in this run; the target is ``[perf] cpu_min_fraction_of_roofline`` of it."""
    fraction = thresholds.get("perf", "cpu_min_fraction_of_roofline")
    rounds = thresholds.get("perf", "rounds")
    source = (f"{fraction:g} x this CPU's fp32 matmul roofline ({roofline.gflops:.0f} GFLOP/s / "
              f"{protocol.GFLOP_PER_IMAGE:.0f} GFLOP per image = {roofline.fps:.3f} fps), measured in this run")
    fps = batch_size / median_s if median_s > 0 else float("nan")
    measured = Throughput(subject, "cpu", batch_size, "dim 0 of the outputs of the timed run", fps,
                          f"{batch_size} images / median {median_s:.3f} s of {rounds} timed rounds",
                          {"median_s": median_s, "threads": threads, "roofline_fraction": fps / roofline.fps})
    return judge_throughput(measured, ThroughputTarget(fraction * roofline.fps, source), subject=subject)


def judge_device_throughput(run: Any, *, device: str, soc_version: str | None, thresholds: Any,
                            **extra: Any) -> Verdict:
    """``run``: an :class:`intrada.ascend.device.DeviceRun`; the target is the thresholds' ``[[devices]]``
    entry for ``soc_version`` at the run's batch size (not judged without one)."""
    target = None if soc_version is None else thresholds.device_target(soc_version, run.batch_size)
    card = target is not None and target.unit == "card"
    chips = target.chips_per_card if target is not None and card else 1
    unit = "card" if card else "chip"
    if chips > 1:
        basis = (f"{run.throughput_field} = {run.throughput:.3f} fps per chip x {chips} chips per {soc_version} card "
                 "(as the seed's parse.py)")
    elif card:
        basis = f"{run.throughput_field} = {run.throughput:.3f} fps (1 chip per {soc_version} card)"
    else:
        basis = f"{run.throughput_field} = {run.throughput:.3f} fps per chip"
    measured = Throughput(f"ascend om ({run.tool})", device, run.batch_size, run.batch_source, run.throughput * chips,
                          basis, {"unit": unit, "fps_per_chip": run.throughput, "chips_per_card": chips,
                                  "images": len(run.names), **extra})
    if not run.batch_verified:
        verdict = judge_throughput(measured, None, subject="om", no_target_reason=(
            f"not judged: the om's batch size could not be read from the om ({run.batch_source}), and a throughput "
            "resting on a file name is not a measurement; run it with the ais_bench API or CLI runner"))
        return verdict
    why = f"no [[devices]] target for {soc_version or 'an unknown device'} at bs{run.batch_size} in {thresholds.origin}"
    return judge_throughput(measured, None if target is None else ThroughputTarget(target.min_fps, target.source),
                            subject="om", no_target_reason=why)
