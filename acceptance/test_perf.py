"""Perf gate: throughput per batch size with pytest-benchmark; a fast wrong answer fails."""
from __future__ import annotations

import pytest

from intrada.core import protocol
from intrada.parity.compare import compare_outputs
from intrada.dataset.preprocess import read_bin
from intrada.runners.roofline import make_batch
from intrada.runners.cpu import OnnxRuntimeRunner
from intrada.gate.verdict import Throughput, ThroughputTarget, judge_throughput, not_judged

pytestmark = pytest.mark.perf


def test_onnxruntime_throughput(batch_size, benchmark, onnx_file, onnx_checked, bins, onnx_outputs, onnx_samples,
                                cpu_roofline, thresholds, gate_report) -> None:
    """fps = batch / median seconds of the timed runs, the batch read from the outputs that ran;
    the timed outputs must equal the stored ONNX Runtime outputs first."""
    batch, names = make_batch(lambda n: read_bin(bins.path(n)), [s.name for s in onnx_samples], batch_size)
    with OnnxRuntimeRunner(onnx_file) as runner:
        aux, main = benchmark.pedantic(runner.infer, args=(batch,), rounds=thresholds.get("perf", "rounds"),
                                       warmup_rounds=1, iterations=1)
        info = runner.describe()
    same = compare_outputs("stored onnxruntime outputs", f"timed bs{batch_size} run",
                           (((onnx_outputs.read(n, "aux"), onnx_outputs.read(n, "main")), (aux[i], main[i]))
                            for i, n in enumerate(names)), thresholds.parity_limits())
    assert same, same.report()
    if benchmark.stats is None:
        gate_report.judge(not_judged("perf", "onnxruntime", "throughput", "pytest-benchmark is disabled "
                                     "(--benchmark-disable or xdist): outputs checked, throughput not measured"))
    ran = int(main.shape[0])  # the batch the model computed, not the one asked for
    fraction = thresholds.get("perf", "cpu_min_fraction_of_roofline")
    source = (f"{fraction:g} x this CPU's fp32 matmul roofline ({cpu_roofline.gflops:.0f} GFLOP/s / "
              f"{protocol.GFLOP_PER_IMAGE:.0f} GFLOP per image = {cpu_roofline.fps:.3f} fps), measured in this run")
    seconds = benchmark.stats.stats.median
    measured = Throughput("onnxruntime", "cpu", ran, "dim 0 of the outputs of the timed run", ran / seconds,
                          f"{ran} images / median {seconds:.3f} s of {thresholds.get('perf', 'rounds')} timed rounds",
                          {"median_s": seconds, "threads": info.get("threads"),
                           "roofline_fraction": ran / seconds / cpu_roofline.fps})
    verdict = judge_throughput(measured, ThroughputTarget(fraction * cpu_roofline.fps, source), subject="onnxruntime")
    benchmark.extra_info.update(verdict.details)
    gate_report.judge(verdict)
