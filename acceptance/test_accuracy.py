"""Accuracy gate: Cityscapes val mIoU (one dataset-level confusion matrix, ADVENT protocol)."""
from __future__ import annotations

import pytest

from intrada.gate.verdict import judge_accuracy, not_judged

pytestmark = pytest.mark.accuracy


def test_onnxruntime_miou(meaningful_accuracy, run_plan, onnx_score, onnx_outputs, submission, thresholds,
                          gate_report) -> None:
    """ONNX Runtime's mIoU on the whole split; when an om or dumps are judged the plan runs ONNX
    Runtime on a sample only, and the device outputs' own full-split mIoU is the certified one."""
    if not run_plan.onnx_full:
        gate_report.judge(not_judged("accuracy", "onnxruntime", "accuracy", f"ONNX Runtime ran on "
                                     f"{len(run_plan.onnx_indices)} of {run_plan.images} images ({run_plan.reason}); "
                                     "pass --onnx-accuracy full for its full-split mIoU"))
    gate_report.set_context("overlays", [
        {"name": s.name, "image": str(s.image), "label": str(s.label), "logits": str(onnx_outputs.path(s.name, "main"))}
        for s in submission.samples[:3]])
    gate_report.judge(judge_accuracy(onnx_score, thresholds.accuracy_limits(), images=len(submission.samples),
                                     subset=submission.subset, subject="onnxruntime"))


def test_device_dumps_miou(meaningful_accuracy, dumps_score, submission, thresholds, gate_report) -> None:
    """Recorded device outputs (--dumps): judged exactly like the ONNX Runtime outputs."""
    gate_report.judge(judge_accuracy(dumps_score, thresholds.accuracy_limits(), images=len(submission.samples),
                                     subset=submission.subset, subject="dumps"))
