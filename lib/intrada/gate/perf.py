"""Device throughput as the perf gate reports it: the tool's own per-chip rate, converted to the
target's unit (the seed's 310 card figure is the per-chip Interface throughputRate x 4 chips)."""
from __future__ import annotations

from typing import Any

from .verdict import Throughput, ThroughputTarget, Verdict, judge_throughput


def judge_device_throughput(run: Any, *, device: str, soc_version: str | None, target: Any | None,
                            threshold_path: str, **extra: Any) -> Verdict:
    """``run``: an :class:`intrada.ascend.device.DeviceRun`; ``target``: the thresholds'
    :class:`~intrada.gate.thresholds.DeviceTarget` for this SoC and batch size, or None."""
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
    why = f"no [[devices]] target for {soc_version or 'an unknown device'} at bs{run.batch_size} in {threshold_path}"
    return judge_throughput(measured, None if target is None else ThroughputTarget(target.min_fps, target.source),
                            subject="om", no_target_reason=why)
