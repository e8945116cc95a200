"""Parity gate: the ONNX is well formed and computes what the PyTorch checkpoint computes."""
from __future__ import annotations

import pytest

from intrada.parity.classdiff import disagreement_over
from intrada.parity.compare import compare_stored
from intrada.diagnosis.layerdiff import locate_divergence
from intrada.parity.noise import GATE_CROP
from intrada.model.onnx_export import inspect_onnx
from intrada.parity.upstream import compare_with_upstream, find_upstream
from intrada.gate.verdict import State, Verdict, judge_onnx_interface, judge_parity, not_judged

pytestmark = pytest.mark.parity


def test_onnx_well_formed(onnx_file, gate_config, gate_report) -> None:
    """checker, input `image` float32 [N,3,512,1024] (N dynamic when a batch sweep is asked), two
    outputs [N,19,65,129]; the main head is output 1 (by position: names are not trusted). Inspected
    here, not in a fixture: a malformed ONNX is this test's failure (the others error on it)."""
    gate_report.judge(judge_onnx_interface(inspect_onnx(onnx_file, require_dynamic_batch=gate_config.dynamic_batch),
                                           dynamic_batch_required=gate_config.dynamic_batch))


def test_onnxruntime_matches_pytorch(torch_outputs, onnx_outputs, parity_samples, derived_parity_limits, submission,
                                     onnx_file, bins, gate_report) -> None:
    """Both heads, on real preprocessed images of the split, within [parity] limits derived from the
    float32 noise measured on this machine (noise_factor x floor, the fixed limits as outer bound).
    When they differ, the first diverging layer is found and named."""
    names = [s.name for s in parity_samples]
    result = compare_stored("pytorch", "onnxruntime", torch_outputs, onnx_outputs, names, derived_parity_limits.limits)
    where, layers = (None, None) if result else locate_divergence(
        torch_outputs, onnx_outputs, names, derived_parity_limits.limits, weights=submission.weights, onnx_path=onnx_file,
        bin_path=bins.path(names[0]), limit_source=derived_parity_limits.report(), crop=GATE_CROP)
    gate_report.judge(judge_parity(result, gate="parity", subject="onnx", where=where,
                                   limits=derived_parity_limits.as_dict(), limit_source=derived_parity_limits.report(),
                                   layer_diff=None if layers is None else {**layers.as_dict(),
                                                                           "markdown": layers.markdown()}))


def test_openvino_matches_onnxruntime(openvino_outputs, onnx_outputs, parity_samples, noise_floor, thresholds,
                                      gate_report) -> None:
    """Optional OpenVINO runner: fp32 within limits derived from the measured noise floor (the
    [openvino] ones as outer bound); bf16 judged on the main-head argmax only (8 mantissa bits move
    logits by ~1e-2, the class map is what matters)."""
    precision, outputs = openvino_outputs
    images = [s.name for s in parity_samples]
    limits = thresholds.openvino_limits(precision, noise_floor["max_abs_over_scale"])
    result = compare_stored("onnxruntime", f"openvino-{precision}", onnx_outputs, outputs, images, limits)
    where = disagreement_over(onnx_outputs, outputs, images)
    gate_report.set_context(f"disagreements.openvino-{precision}", [
        {"name": s.name, "image": str(s.image), "label": str(s.label), "reference_label": "onnxruntime",
         "candidate_label": f"openvino-{precision}", "reference": str(onnx_outputs.path(s.name, "main")),
         "candidate": str(outputs.path(s.name, "main"))} for s in parity_samples])
    gate_report.judge(judge_parity(result, gate="parity", subject=f"openvino-{precision}", where=where.report(),
                                   disagreement=where.as_dict()))


@pytest.fixture(scope="session")
def upstream_status(gate_report):
    """Requested first: when the upstream code is not importable, one line says so and nothing is
    built for this check."""
    status = find_upstream()
    if not status.available:
        gate_report.judge(not_judged("parity", "upstream", "parity", status.report()))
    return status


def test_model_matches_upstream_advent(upstream_status, submission, weights_sha256, bins, parity_samples, thresholds,
                                       gate_report) -> None:
    """Our DeepLabv2 against the real upstream ADVENT code on the same weights and image, when that
    code is importable (`advent.model.deeplabv2`, not PyPI's unrelated placeholder); otherwise one
    line says it was not available (a non-core check: parity is judged by ONNX Runtime vs PyTorch)."""
    status = upstream_status
    from intrada.model.checkpoint import read_state_dict
    from intrada.dataset.preprocess import read_bin

    check = compare_with_upstream(read_state_dict(submission.weights).state_dict,
                                  read_bin(bins.path(parity_samples[0].name))[None], thresholds.parity_limits(),
                                  status=status)
    if check.parity is None:  # upstream's code could not build or load the weights
        gate_report.judge(Verdict("parity", "upstream", "parity", State.FAILED, check.report(),
                                  (check.error or "upstream model failed",)))
    gate_report.judge(judge_parity(check.parity, gate="parity", subject="upstream", upstream=status.as_dict()))
