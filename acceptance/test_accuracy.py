"""Accuracy gate: Cityscapes val mIoU (one dataset-level confusion matrix, ADVENT protocol)."""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.accuracy


def judge_miou(score: dict[str, Any], submission, thresholds, source: str, gate_report) -> None:
    """Shared verdict: threshold, model-zoo 1% rule (reported), certification of subsets."""
    acc = thresholds.section("accuracy")
    miou = score["miou"]
    reference = acc["reference_miou"]
    within = miou >= reference * (1 - acc["relative_tolerance"])
    certified = not submission.subset
    gate_report.record(f"accuracy.{source}", {
        **score, "min_miou": acc["min_miou"], "reference_miou": reference,
        "within_relative_tolerance": within, "relative_tolerance": acc["relative_tolerance"],
        "certified": certified, "subset_allowed": acc["allow_subset"],
        "images": len(submission.samples), "full_split_images": acc["full_split_images"]})
    summary = (f"{source}: mIoU {miou:.2f} on {len(submission.samples)} images (threshold {acc['min_miou']:.2f}; "
               f"model-zoo rule: within {acc['relative_tolerance']:.0%} of {reference:.2f} -> "
               f"{'yes' if within else 'no'})")
    assert miou >= acc["min_miou"], f"{summary}: below the threshold"
    if not certified and not acc["allow_subset"]:
        pytest.fail(f"{summary}: not certified: subset ({len(submission.samples)} of "
                    f"{acc['full_split_images']} val images); run on the full split, or use a thresholds file "
                    f"with accuracy.allow_subset = true for smoke tests", pytrace=False)


def require_meaningful(submission) -> None:
    if not submission.accuracy_meaningful:
        pytest.skip("accuracy of submitted weights on the synthetic demo split means nothing: pass --cityscapes ROOT")


def test_onnxruntime_miou(submission, onnx_score, onnx_outputs, thresholds, gate_report) -> None:
    require_meaningful(submission)
    gate_report.set_context("overlays", [
        {"name": s.name, "image": str(s.image), "label": str(s.label), "logits": str(onnx_outputs.path(s.name, "main"))}
        for s in submission.samples[:3]])
    judge_miou(onnx_score, submission, thresholds, "onnxruntime", gate_report)


def test_device_dumps_miou(submission, dumps_score, thresholds, gate_report) -> None:
    """Recorded device outputs (--dumps): judged exactly like the ONNX Runtime outputs."""
    require_meaningful(submission)
    judge_miou(dumps_score, submission, thresholds, "dumps", gate_report)
