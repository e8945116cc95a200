"""Running an om: the ais_bench Python API, the ``python3 -m ais_bench`` CLI, the legacy benchmark tool.

Each is a :class:`~intrada.runners.base.Runner` (``with runner: aux, main = runner.infer(batch)``)
through :class:`intrada.ascend.device.AscendRunner`, and each can also run a whole directory of
preprocessed bins, which is how the device tools work and where their own throughput comes from:
:meth:`AscendRunner.run_split` returns a :class:`~intrada.ascend.device.DeviceRun` (the
per-sample output files in the tool's naming + the tool's throughput).

Throughput is always the tool's own timing of the device, never a wall clock around a subprocess:

* ais_bench (API and CLI, either generation, :mod:`intrada.ascend.aisbench`): ``throughput = 1000 *
  batchsize / mean(NPU compute time in ms)``, the summary's ``throughput``; the API's
  ``summary().exec_time_list`` (``sumary()`` in the tools generation) gives the same times;
* benchmark: the ``[infer]`` line's ``Interface throughputRate`` in
  ``result/perf_vision_batchsize_{bs}_device_{id}.txt``.

Both are per device (one chip). The seed's 310 card figure multiplies the benchmark rate by 4
chips; that conversion belongs to the perf gate, which knows the target's unit.
"""
from __future__ import annotations

from pathlib import Path

from .aisbench_api import AisBenchApiRunner
from .aisbench_cli import AisBenchCliRunner
from .benchmark import LegacyBenchmarkRunner
from .device import AscendRunner

__all__ = ["AisBenchApiRunner", "AisBenchCliRunner", "LegacyBenchmarkRunner", "RUNNERS", "make_runner"]

RUNNERS: dict[str, type[AscendRunner]] = {
    AisBenchApiRunner.kind: AisBenchApiRunner,
    AisBenchCliRunner.kind: AisBenchCliRunner,
    LegacyBenchmarkRunner.kind: LegacyBenchmarkRunner,
}


def make_runner(kind: str, om: Path, *, batch_size: int, device_id: int = 0) -> AscendRunner:
    if kind not in RUNNERS:
        raise ValueError(f"unknown runner kind {kind!r}; known: {', '.join(RUNNERS)}")
    return RUNNERS[kind](om, batch_size=batch_size, device_id=device_id)
