"""intrada.gate.perf: the perf gate's decisions as pure functions (the acceptance tests only record
them): the CPU target from this run's roofline, the device target from [[devices]]."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from intrada.core import protocol
from intrada.gate.config import thresholds_for
from intrada.gate.perf import judge_cpu_throughput, judge_device_throughput
from intrada.gate.verdict import State
from intrada.runners.roofline import CpuRoofline

THRESHOLDS = thresholds_for(None, demo_model=False)
FRACTION = THRESHOLDS.get("perf", "cpu_min_fraction_of_roofline")


def test_cpu_target_is_a_fraction_of_this_runs_roofline() -> None:
    roofline = CpuRoofline(gflops=protocol.GFLOP_PER_IMAGE * 2.0, threads=2)  # 2 fps at the roofline
    fast = judge_cpu_throughput(batch_size=2, median_s=2.0, roofline=roofline, thresholds=THRESHOLDS, threads=2)
    assert fast.passed and fast.details["fps"] == 1.0 and fast.details["min_fps"] == pytest.approx(FRACTION * 2.0)
    assert fast.details["roofline_fraction"] == 0.5 and "measured in this run" in fast.details["threshold_source"]
    slow_s = 2 / (0.9 * FRACTION * 2.0)  # 10% under the target
    slow = judge_cpu_throughput(batch_size=2, median_s=slow_s, roofline=roofline, thresholds=THRESHOLDS)
    assert slow.state is State.FAILED
    broken = judge_cpu_throughput(batch_size=1, median_s=0.0, roofline=roofline, thresholds=THRESHOLDS)
    assert broken.state is State.FAILED and "not a positive" in broken.failures[0]


@dataclass
class _Run:
    batch_size: int
    throughput: float
    tool: str = "ais_bench-api"
    throughput_field: str = "ais_bench summary throughput"
    batch_source: str = "the om's input shape"
    batch_verified: bool = True
    names: tuple[str, ...] = ("a",)


def test_device_target_comes_from_the_devices_table() -> None:
    target = THRESHOLDS.device_target("Ascend310P3", 1)
    assert target is not None
    ok = judge_device_throughput(_Run(1, target.min_fps * 1.01), device="310P3", soc_version="Ascend310P3",
                                 thresholds=THRESHOLDS)
    assert ok.passed
    low = judge_device_throughput(_Run(1, target.min_fps * 0.5), device="310P3", soc_version="Ascend310P3",
                                  thresholds=THRESHOLDS)
    assert low.state is State.FAILED
    none = judge_device_throughput(_Run(3, 100.0), device="310P3", soc_version="Ascend310P3", thresholds=THRESHOLDS)
    assert none.state is State.NOT_JUDGED and "no [[devices]] target for Ascend310P3 at bs3" in none.reason
    named = judge_device_throughput(_Run(1, 100.0, batch_verified=False), device="310P3",
                                    soc_version="Ascend310P3", thresholds=THRESHOLDS)
    assert named.state is State.NOT_JUDGED and "could not be read from the om" in named.reason
