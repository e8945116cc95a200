"""om gate: the Ascend offline model computes what the ONNX computes, scores what it scores, and is
as fast as the seed's device numbers.

Sources of om outputs (fixtures/ascend.py): a live om run here by a device tool (``[om]``), and
recorded device outputs of the same split (``--dumps``, ``[dumps]``). Their comparison with the ONNX
uses the images ONNX Runtime ran on (the run plan's sample when device outputs are judged); their
own mIoU over the whole split is judged by the accuracy gate (test_device_dumps_miou, test_om_miou).
Limits: thresholds [om] and [[devices]].

Before any device, the om pre-flight (test_om_fp16_preflight, intrada.gate.preflight) predicts on the CPU
what force_fp16 does to this submission on the same sample images, judged against the same limits: a
verdict of its own that never judges the om gate. On a device the om parity line carries the om's
deviation over that prediction.
"""
from __future__ import annotations

import pytest

from intrada.gate.perf import judge_device_throughput
from intrada.gate.preflight import judge_om_parity, judge_prediction
from intrada.gate.verdict import judge_accuracy, judge_miou_delta, judge_parity
from intrada.parity.classdiff import ClassDelta, disagreement_over
from intrada.parity.compare import compare_stored

pytestmark = pytest.mark.om


def names(samples) -> list[str]:
    return [s.name for s in samples]


@pytest.mark.preflight
def test_om_fp16_preflight(fp16_prediction, thresholds, gate_report) -> None:
    """Predicted for force_fp16 (atc's default precision mode on 310/310P), on any CPU: the emulated om
    (intrada.diagnosis.fp16) vs ONNX Runtime on the om sample images, judged against the om limits ([om]) and
    the mIoU delta limit. A failing prediction says which layer overflows or loses most. Never judges
    the om gate: without a device it stays "not judged"."""
    gate_report.judge(judge_prediction(fp16_prediction, max_miou_delta=thresholds.get("om", "max_miou_delta"),
                                       limits_source=f"{thresholds.path} [om]"))


def test_om_matches_onnx(om_outputs, onnx_outputs, onnx_samples, fp16_prediction, thresholds, gate_report) -> None:
    """cosine > 0.99, rel. Euclidean < 0.05, KL < 0.005 on each head, main-head argmax agreement
    (thresholds [om]); a wrong output order or a precision loss beyond fp16 rounding fails here,
    saying which classes turn into which, with a picture per image where the class maps differ. The
    line carries the om's rel. Euclidean distance over the force_fp16 prediction's; a thresholds file
    that sets [om] max_ratio_to_fp16_prediction gates on it."""
    result = compare_stored("onnxruntime", om_outputs.label, onnx_outputs, om_outputs.dumps, names(onnx_samples),
                            thresholds.om_limits())
    where = disagreement_over(onnx_outputs, om_outputs.dumps, names(onnx_samples))
    gate_report.set_context(f"disagreements.{om_outputs.source}", [
        {"name": s.name, "image": str(s.image), "label": str(s.label), "reference_label": "onnxruntime",
         "candidate_label": om_outputs.source, "reference": str(onnx_outputs.path(s.name, "main")),
         "candidate": str(om_outputs.dumps.path(s.name, "main"))} for s in onnx_samples[:3]])
    max_ratio, ratio_source = thresholds.fp16_ratio_gate()
    gate_report.judge(judge_om_parity(result, fp16_prediction, subject=om_outputs.source, max_ratio=max_ratio,
                                      ratio_source=ratio_source, where=where.report(), disagreement=where.as_dict(),
                                      **om_outputs.provenance()))


def test_om_miou_matches_onnx(om_outputs, om_sample_score, onnx_score, onnx_samples, thresholds, gate_report) -> None:
    """|mIoU(om) - mIoU(ONNX)| on the same images within [om] max_miou_delta; per class, which
    classes lose (or gain) the most."""
    classes = ClassDelta.from_scores(onnx_score, om_sample_score, reference_label="onnxruntime",
                                     candidate_label=om_outputs.source)
    gate_report.judge(judge_miou_delta(om_sample_score["miou"], onnx_score["miou"],
                                       max_delta=thresholds.get("om", "max_miou_delta"), images=len(onnx_samples),
                                       subject=om_outputs.source, label=om_outputs.label,
                                       source=thresholds.source("om", "max_miou_delta"), where=classes.report(),
                                       contract_fake=om_outputs.contract_fake,
                                       class_delta={**classes.as_dict(), "markdown": classes.markdown()}))


@pytest.mark.accuracy
def test_om_miou(meaningful_accuracy, om_live, om_score, submission, thresholds, gate_report) -> None:
    """mIoU of the live om over the split, with the accuracy gate's threshold and certification."""
    gate_report.judge(judge_accuracy(om_score, thresholds.accuracy_limits(), images=len(submission.samples),
                                     subset=submission.subset, subject="om", device=om_live.label,
                                     contract_fake=om_live.contract_fake))


@pytest.mark.perf
def test_om_throughput(om_gate, om_session, om_run, onnx_outputs, onnx_samples, thresholds, gate_report) -> None:
    """The device tool's own throughput on the split at this batch size against the seed's numbers
    ([[devices]]: 310P3 bs1 46.25 fps per card; 310 bs4 28.792 = per-chip Interface throughputRate x
    4 chips). The batch size is read from the om; the run's outputs must match the ONNX first."""
    run = om_run
    outputs = om_session.outputs(run)
    same = compare_stored("onnxruntime", f"om bs{run.batch_size} via {run.tool}", onnx_outputs, outputs.dumps,
                          names(onnx_samples), thresholds.om_limits())
    gate_report.judge(judge_parity(same, gate="om", subject=f"om bs{run.batch_size} outputs",
                                   **outputs.provenance()))
    gate_report.judge(judge_device_throughput(run, device=outputs.label, soc_version=om_gate.soc_version,
                                              thresholds=thresholds,
                                              contract_fake=outputs.contract_fake,
                                              fake_components=outputs.fake_components))
