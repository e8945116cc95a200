"""Parity gate: the ONNX is well formed and computes what the PyTorch checkpoint computes."""
from __future__ import annotations

from typing import Any

import pytest

from intrada import protocol
from intrada.compare import Limits, compare_outputs
from intrada.onnx_export import inspect_onnx

pytestmark = pytest.mark.parity


def test_onnx_well_formed(onnx_file, gate_config, gate_report) -> None:
    """checker, input `image` float32 [N,3,512,1024] (N dynamic when a batch sweep is asked), two
    outputs [N,19,65,129]; the main head is output 1 (by position: names are not trusted)."""
    info = inspect_onnx(onnx_file, require_dynamic_batch=any(bs > 1 for bs in gate_config.batch_sizes))
    gate_report.record("onnx", {"path": str(info.path), "opset": info.opset, "input": info.input_name,
                                "outputs": list(info.output_names), "batch_dim": str(info.batch_dim),
                                "ops": list(info.op_types)})
    assert info.input_name == protocol.ONNX_INPUT_NAME


def _pairs(reference: Any, candidate: Any, names: list[str]):
    for name in names:
        yield ((reference.read(name, "aux"), reference.read(name, "main")),
               (candidate.read(name, "aux"), candidate.read(name, "main")))


def test_onnxruntime_matches_pytorch(torch_outputs, onnx_outputs, parity_samples, thresholds, gate_report) -> None:
    """Both heads, on real preprocessed images of the split, within [parity] limits."""
    lim = thresholds.section("parity")
    limits = Limits(max_abs_over_scale=lim["max_abs_over_scale"], min_cosine=lim["min_cosine"],
                    min_argmax_agreement=lim["min_argmax_agreement"])
    result = compare_outputs("pytorch", "onnxruntime", _pairs(torch_outputs, onnx_outputs,
                                                               [s.name for s in parity_samples]), limits)
    gate_report.record("parity", result.as_dict())
    assert result, result.report()


def test_openvino_matches_onnxruntime(openvino_outputs, onnx_outputs, parity_samples, thresholds, gate_report) -> None:
    """Optional OpenVINO runner: fp32 within the fp32 limits; bf16 judged on the main-head argmax only
    (8 mantissa bits move logits by ~1e-2, the class map is what matters)."""
    precision, outputs = openvino_outputs
    lim = thresholds.section("openvino")
    if precision == "f32":
        limits = Limits(max_abs_over_scale=lim["max_abs_over_scale"], min_cosine=lim["min_cosine"],
                        min_argmax_agreement=lim["min_argmax_agreement"])
    else:
        limits = Limits(min_argmax_agreement=lim["bf16_min_argmax_agreement"])
    result = compare_outputs("onnxruntime", f"openvino-{precision}",
                             _pairs(onnx_outputs, outputs, [s.name for s in parity_samples]), limits)
    gate_report.record(f"parity.openvino_{precision}", result.as_dict())
    assert result, result.report()
