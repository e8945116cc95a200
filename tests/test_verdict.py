"""Verdicts: three states, truthy only when passed, one line, plain data; the judges are pure."""
from __future__ import annotations

import math

import numpy as np
import pytest

from intrada.parity.compare import Limits, compare_outputs
from intrada.gate.verdict import AccuracyLimits, State, Throughput, ThroughputTarget, Verdict, judge_accuracy, judge_miou_delta, judge_parity, judge_throughput, not_judged

LIMITS = AccuracyLimits(min_miou=47.0, reference_miou=47.0, relative_tolerance=0.01, allow_subset=False,
                        full_split_images=500)


def score(miou: float) -> dict:
    return {"miou": miou, "per_class_iou": [miou] * 19}


def test_a_verdict_is_truthy_only_when_it_passed() -> None:
    passed = judge_accuracy(score(47.5), LIMITS, images=500, subset=False, subject="om")
    failed = judge_accuracy(score(46.0), LIMITS, images=500, subset=False, subject="om")
    skipped = not_judged("accuracy", "om", "accuracy", "no om")
    assert passed and not failed and not skipped
    assert (passed.state, failed.state, skipped.state) == (State.PASSED, State.FAILED, State.NOT_JUDGED)
    assert failed.judged and passed.judged and not skipped.judged


def test_lines_say_the_gate_the_subject_and_why() -> None:
    failed = judge_accuracy(score(46.0), LIMITS, images=500, subset=False, subject="dumps")
    assert failed.line().startswith("accuracy [dumps]: FAIL: mIoU 46.00 below the threshold 47.00 | mIoU 46.00 on 500")
    assert not_judged("om", "om", "parity", "no Ascend tool").line() == "om [om]: not judged: no Ascend tool"
    where = Verdict("om", "om", "parity", State.FAILED, "s", ("cosine low",), where="sky->road 14%")
    assert where.line() == "om [om]: FAIL: cosine low | where: sky->road 14% | s"


def test_verdicts_round_trip_through_plain_data() -> None:
    v = judge_accuracy(score(50.0), LIMITS, images=8, subset=True, subject="onnxruntime")
    assert Verdict.from_dict(v.as_dict()) == v
    assert v.as_dict()["details"]["certified"] is False


def test_inconsistent_verdicts_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="names its failures"):
        Verdict("parity", "onnx", "parity", State.FAILED, "s")
    with pytest.raises(ValueError, match="says why"):
        Verdict("parity", "onnx", "parity", State.NOT_JUDGED, "s")
    with pytest.raises(ValueError, match="unknown gate"):
        Verdict("speed", "onnx", "parity", State.PASSED, "s")


def test_accuracy_subset_is_a_failure_unless_allowed() -> None:
    v = judge_accuracy(score(90.0), LIMITS, images=2, subset=True, subject="onnxruntime")
    assert not v and "not certified: subset (2 of 500 val images)" in v.line()
    allowed = AccuracyLimits(80.0, 47.0, 0.01, True, 500)
    assert judge_accuracy(score(90.0), allowed, images=2, subset=True, subject="onnxruntime")


def test_nan_miou_fails() -> None:
    assert not judge_accuracy(score(math.nan), LIMITS, images=500, subset=False, subject="om")


def test_parity_of_no_images_is_not_a_pass() -> None:
    empty = compare_outputs("pytorch", "onnxruntime", [], Limits(min_cosine=0.99))
    v = judge_parity(empty, gate="parity", subject="onnx")
    assert v.state is State.NOT_JUDGED and "no images compared" in v.reason


def test_parity_verdict_carries_the_comparison() -> None:
    a = np.random.default_rng(0).normal(size=(19, 4, 5)).astype(np.float32)
    good = compare_outputs("pytorch", "onnxruntime", [((a, a), (a, a))], Limits(min_cosine=0.999))
    bad = compare_outputs("pytorch", "onnxruntime", [((a, a), (a, -a))], Limits(min_cosine=0.999))
    assert judge_parity(good, gate="parity", subject="onnx")
    v = judge_parity(bad, gate="parity", subject="onnx", where="layer4.0.conv1")
    assert not v and "main: cosine -1.000000 < 0.999" in v.line() and "where: layer4.0.conv1" in v.line()
    assert v.details["outputs"][1]["cosine"] == pytest.approx(-1.0)


def test_miou_delta_is_symmetric_and_bounded() -> None:
    ok = judge_miou_delta(47.2, 47.0, max_delta=0.47, images=8, subject="om", label="om bs1", source="s")
    worse = judge_miou_delta(46.0, 47.0, max_delta=0.47, images=8, subject="om", label="om bs1", source="s")
    better = judge_miou_delta(48.0, 47.0, max_delta=0.47, images=8, subject="om", label="om bs1", source="s")
    assert ok and not worse and not better
    assert "|delta mIoU| 1.000 > 0.47" in worse.line()


def run(fps: float, bs: int = 1) -> Throughput:
    return Throughput("ascend om (ais_bench-cli)", "Ascend310P3 (device 0)", bs, "the om's input shape", fps, "basis")


def test_throughput_against_a_target() -> None:
    target = ThroughputTarget(46.25, "seed README")
    assert judge_throughput(run(47.0), target, subject="om")
    slow = judge_throughput(run(25.0), target, subject="om")
    assert not slow and "25.000 fps < 46.250 (target: seed README)" in slow.line()
    assert "bs1 (the om's input shape)" in slow.line()


def test_throughput_without_a_target_is_recorded_not_judged() -> None:
    v = judge_throughput(run(100.0, 2), None, subject="om", no_target_reason="no target at bs2")
    assert v.state is State.NOT_JUDGED and "100.000 fps" in v.reason and "no target at bs2" in v.reason
    assert v.details["fps"] == 100.0 and v.details["batch_size"] == 2


@pytest.mark.parametrize("fps", [0.0, -1.0, math.nan, math.inf])
def test_a_throughput_that_is_not_a_positive_number_fails(fps: float) -> None:
    v = judge_throughput(run(fps), ThroughputTarget(1.0, "s"), subject="om")
    assert not v and "is not a positive number" in v.line()  # an infinite rate is no measurement either
