"""Perf gate: throughput per batch size with pytest-benchmark; a fast wrong answer fails."""
from __future__ import annotations

import pytest

from fixtures.perf import make_batch
from intrada import protocol
from intrada.compare import Limits, compare_outputs
from intrada.preprocess import read_bin
from intrada.runners.cpu import OnnxRuntimeRunner

pytestmark = pytest.mark.perf


def test_onnxruntime_throughput(batch_size, benchmark, onnx_file, onnx_checked, bins, onnx_outputs, submission,
                                cpu_roofline, thresholds, gate_report) -> None:
    batch, names = make_batch(lambda n: read_bin(bins.path(n)), list(submission.names), batch_size)
    runner = OnnxRuntimeRunner(onnx_file)
    with runner:
        aux, main = benchmark.pedantic(runner.infer, args=(batch,), rounds=thresholds.get("perf", "rounds"),
                                       warmup_rounds=1, iterations=1)
        info = runner.describe()
    assert main.shape[0] == batch_size and aux.shape[0] == batch_size, (
        f"output batch {main.shape[0]} != requested batch size {batch_size}")
    lim = thresholds.section("parity")
    same = compare_outputs("stored onnxruntime outputs", f"timed bs{batch_size} run",
                           (((onnx_outputs.read(n, "aux"), onnx_outputs.read(n, "main")), (aux[i], main[i]))
                            for i, n in enumerate(names)),
                           Limits(max_abs_over_scale=lim["max_abs_over_scale"], min_cosine=lim["min_cosine"],
                                  min_argmax_agreement=lim["min_argmax_agreement"]))
    assert same, same.report()

    if benchmark.stats is None:
        pytest.skip("pytest-benchmark is disabled (--benchmark-disable or xdist): outputs checked, throughput "
                    "not measured")
    seconds = benchmark.stats.stats.median
    fps = batch_size / seconds
    fraction = thresholds.get("perf", "cpu_min_fraction_of_roofline")
    min_fps = fraction * cpu_roofline.fps
    source = (f"{fraction:g} x this CPU's fp32 matmul roofline ({cpu_roofline.gflops:.0f} GFLOP/s / "
              f"{protocol.GFLOP_PER_IMAGE:.0f} GFLOP per image = {cpu_roofline.fps:.3f} fps), measured in this run")
    row = {"backend": "onnxruntime", "device": "cpu", "batch_size": batch_size, "fps": fps,
           "median_s": seconds, "min_fps": min_fps, "threshold_source": source,
           "roofline_fraction": fps / cpu_roofline.fps, "threads": info.get("threads")}
    benchmark.extra_info.update(row)
    gate_report.add("perf", row)
    assert fps >= min_fps, f"onnxruntime bs{batch_size}: {fps:.3f} fps < {min_fps:.3f} ({source})"
