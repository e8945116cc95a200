"""Perf gate: throughput per batch size with pytest-benchmark; a fast wrong answer fails."""
from __future__ import annotations

import pytest

from intrada.dataset.preprocess import cycle_names, read_bins
from intrada.gate.perf import judge_cpu_throughput
from intrada.gate.verdict import judge_parity, not_judged
from intrada.parity.compare import compare_outputs
from intrada.runners.cpu import OnnxRuntimeRunner

pytestmark = pytest.mark.perf


def test_onnxruntime_throughput(batch_size, benchmark, onnx_file, onnx_checked, bins, onnx_outputs, onnx_samples,
                                cpu_roofline, thresholds, gate_report) -> None:
    """fps = batch / median seconds of the timed runs, the batch read from the outputs that ran;
    the timed outputs must equal the stored ONNX Runtime outputs first."""
    names = cycle_names([s.name for s in onnx_samples], batch_size)
    with OnnxRuntimeRunner(onnx_file) as runner:
        aux, main = benchmark.pedantic(runner.infer, args=(read_bins([bins.path(n) for n in names]),),
                                       rounds=thresholds.get("perf", "rounds"), warmup_rounds=1, iterations=1)
        threads = runner.describe().get("threads")
    same = compare_outputs("stored onnxruntime outputs", f"timed bs{batch_size} run",
                           (((onnx_outputs.read(n, "aux"), onnx_outputs.read(n, "main")), (aux[i], main[i]))
                            for i, n in enumerate(names)), thresholds.parity_limits())
    gate_report.judge(judge_parity(same, gate="perf", subject=f"onnxruntime bs{batch_size} outputs"))
    if benchmark.stats is None:
        gate_report.judge(not_judged("perf", "onnxruntime", "throughput", "pytest-benchmark is disabled "
                                     "(--benchmark-disable or xdist): outputs checked, throughput not measured"))
    verdict = judge_cpu_throughput(batch_size=int(main.shape[0]), median_s=benchmark.stats.stats.median,
                                   roofline=cpu_roofline, thresholds=thresholds, threads=threads)
    benchmark.extra_info.update(verdict.details)
    gate_report.judge(verdict)
