"""om gate: the Ascend offline model computes what the ONNX computes, scores what it scores, and is
as fast as the seed's device numbers.

Sources of om outputs (fixtures/ascend.py): a live om run here by a device tool (``[om]``), and
recorded device outputs of the same split (``--dumps``, ``[dumps]``). The mIoU of --dumps alone is
judged by test_accuracy.py::test_device_dumps_miou; this gate adds the comparison with the ONNX.
Limits: thresholds [om] (msquickcmp's cosine / relative Euclidean / KL limits, argmax agreement,
|delta mIoU|); throughput targets: thresholds [[devices]].
"""
from __future__ import annotations

import math
from typing import Any

import pytest
from test_accuracy import judge_miou, require_meaningful

from fixtures.ascend import run_fakes
from intrada.compare import Limits, ParityResult, TensorStats

pytestmark = pytest.mark.om


def om_limits(thresholds: Any) -> Limits:
    om = thresholds.section("om")
    return Limits(min_cosine=om["min_cosine"], max_rel_euclidean=om["max_rel_euclidean"], max_kl=om["max_kl"],
                  min_argmax_agreement=om["min_argmax_agreement"])


def compare_with_onnx(reference: Any, candidate: Any, label: str, names: list[str], limits: Limits) -> ParityResult:
    """Both heads where the device outputs have the aux head (some recordings keep only the main
    head, which is the one that is evaluated); the main head always, argmax included."""
    heads = ["aux", "main"] if candidate.has_aux else ["main"]
    stats = [TensorStats(h) for h in heads]
    for name in names:
        for s, head in zip(stats, heads):
            s.update(reference.read(name, head), candidate.read(name, head))
    return ParityResult("onnxruntime", label, len(names), stats, limits)


def test_om_matches_onnx(om_gate, om_outputs, onnx_outputs, submission, thresholds, gate_report) -> None:
    """Every image of the split: cosine > 0.99, rel. Euclidean < 0.05, KL < 0.005 on each head,
    main-head argmax agreement (thresholds [om]); a wrong output order or a precision loss beyond
    fp16 rounding fails here."""
    result = compare_with_onnx(onnx_outputs, om_outputs.dumps, om_outputs.label, list(submission.names),
                               om_limits(thresholds))
    gate_report.record(f"om.parity.{om_outputs.source}", {
        **result.as_dict(), "source": om_outputs.source, "contract_fake": om_outputs.contract_fake,
        "fake_components": om_outputs.fake_components,
        "run": None if om_outputs.run is None else om_outputs.run.as_dict()})
    assert result, result.report()


def test_om_miou_matches_onnx(om_gate, om_outputs, onnx_score, submission, thresholds, gate_report, request) -> None:
    """|mIoU(om) - mIoU(ONNX)| on the same images within [om] max_miou_delta."""
    score = request.getfixturevalue("om_score" if om_outputs.source == "om" else "dumps_score")
    limit = thresholds.get("om", "max_miou_delta")
    delta = score["miou"] - onnx_score["miou"]
    gate_report.record(f"om.miou_delta.{om_outputs.source}", {
        "om_miou": score["miou"], "onnx_miou": onnx_score["miou"], "delta": delta, "max_delta": limit,
        "source_of_limit": thresholds.source("om", "max_miou_delta"), "images": len(submission.samples),
        "label": om_outputs.label, "contract_fake": om_outputs.contract_fake})
    assert abs(delta) <= limit, (f"{om_outputs.label}: mIoU {score['miou']:.3f} vs ONNX Runtime "
                                 f"{onnx_score['miou']:.3f} on {len(submission.samples)} images: |delta| "
                                 f"{abs(delta):.3f} > {limit:g}")


@pytest.mark.accuracy
def test_om_miou(om_gate, om_live, om_score, submission, thresholds, gate_report) -> None:
    """mIoU of the live om over the split, with the accuracy gate's threshold and certification."""
    require_meaningful(submission)
    try:
        judge_miou(om_score, submission, thresholds, "om", gate_report)
    finally:
        section = gate_report.sections.get("accuracy.om")
        if section is not None:  # say which device (or fake) produced the number
            section.update({"device": om_live.label, "contract_fake": om_live.contract_fake})


@pytest.mark.perf
def test_om_throughput(om_gate, batch_size, om_runs, onnx_outputs, submission, thresholds, gate_report) -> None:
    """The device tool's own throughput on the split at this batch size against the seed's numbers
    ([[devices]]: 310P3 bs1 46.25 fps per card; 310 bs4 28.792 = per-chip Interface throughputRate x
    4 chips). The run's outputs must match the ONNX first: a fast wrong answer fails."""
    run = om_runs.run(batch_size)
    setup = om_gate
    extra = run_fakes(setup, run)
    label = setup.device_label(*extra)
    same = compare_with_onnx(onnx_outputs, run.open(list(submission.samples)), f"om bs{batch_size} via {run.tool}",
                             list(submission.names), om_limits(thresholds))
    assert same, same.report()

    target = None if setup.soc_version is None else thresholds.device_target(setup.soc_version, batch_size)
    chips = target.chips_per_card if target is not None and target.unit == "card" else 1
    fps = run.throughput * chips
    unit = "card" if target is not None and target.unit == "card" else "chip"
    if chips > 1:
        basis = (f"{run.throughput_field} = {run.throughput:.3f} fps per chip x {chips} chips per {setup.soc_version} "
                 f"card (as the seed's parse.py)")
    else:
        basis = f"{run.throughput_field} = {run.throughput:.3f} fps (1 chip per {unit})"
    row = {"backend": f"ascend om ({run.tool})", "device": label, "batch_size": batch_size, "fps": fps,
           "min_fps": target.min_fps if target is not None else 0.0,
           "threshold_source": target.source if target is not None else
           f"no [[devices]] target for {setup.soc_version} bs{batch_size}: recorded, not judged",
           "unit": unit, "fps_per_chip": run.throughput, "chips_per_card": chips, "fps_basis": basis,
           "images": len(run.names), "contract_fake": bool(setup.fake_components(*extra)),
           "fake_components": setup.fake_components(*extra)}
    gate_report.add("perf", row)
    assert math.isfinite(fps) and fps > 0, f"{label}: throughput {fps!r} from {run.tool}"
    if target is None:
        pytest.skip(f"{label} bs{batch_size}: {fps:.3f} fps ({basis}) recorded; no [[devices]] target for "
                    f"{setup.soc_version or 'an unknown device'} at bs{batch_size} in {thresholds.path}")
    assert fps >= target.min_fps, (f"{label} bs{batch_size}: {fps:.3f} fps per {unit} < {target.min_fps:g} "
                                   f"({basis}; target: {target.source})")
