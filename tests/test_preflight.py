"""The om pre-flight's judgements (intrada.gate.preflight): the prediction as a verdict of its own that
never judges the om gate, the om parity line with the ratio to the prediction, the thresholds key
that turns gating on that ratio on, and the run plan's line. Pure: synthetic outputs, no network."""
from __future__ import annotations

import numpy as np
import pytest

from intrada.gate import preflight
from intrada.parity.compare import Limits, compare_outputs
from intrada.gate.plan import make_plan
from intrada.gate.requirements import PREDICTION_KIND, TestOutcome, judge_gates, resolve
from intrada.gate.thresholds import DEFAULT_PATH, load, with_overrides
from intrada.gate.verdict import ABSENT, State, not_judged

OM = Limits(min_cosine=0.99, max_rel_euclidean=0.05, max_kl=0.005, min_argmax_agreement=0.99)


def outputs(rel: float, seed: int = 0, images: int = 2) -> list:
    """(reference, candidate) pairs whose candidate is off by ``rel`` (relative, Gaussian); the
    reference has a clear winning class per pixel, as a trained model's logits do."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(images):
        ref = []
        for _ in range(2):
            logits = rng.normal(0, 1, (1, 19, 9, 11))
            np.put_along_axis(logits, rng.integers(0, 19, (1, 1, 9, 11)), 12.0, axis=1)
            ref.append(logits.astype(np.float32))
        cand = [(r * (1 + rel * rng.standard_normal(r.shape))).astype(np.float32) for r in ref]
        pairs.append((tuple(ref), tuple(cand)))
    return pairs


def prediction(rel: float = 1.7e-3, miou: tuple[float, float] = (86.40, 86.47)) -> preflight.Prediction:
    result = compare_outputs("onnxruntime", "force_fp16 emulation", outputs(rel), OM)
    return preflight.Prediction(2, result, miou[0], miou[1], 7.5)


def test_a_prediction_within_the_om_limits_passes_as_a_prediction() -> None:
    v = preflight.judge_prediction(prediction(), max_miou_delta=0.47)
    assert v.passed and v.gate == "om" and v.subject == preflight.SUBJECT and v.kind == PREDICTION_KIND
    assert v.line().startswith("om [fp16-prediction]: PASS | predicted for force_fp16 (CPU emulation, never "
                               "certifies an om): on 2 om sample images vs ONNX Runtime: main cosine 0.99999")
    assert "mIoU 86.400 vs 86.470 (delta -0.070, limit 0.47); emulation 7.5 s per image" in v.summary
    assert v.details["miou_delta"] == pytest.approx(-0.07) and v.details["parity"]["passed"]


def test_a_failing_prediction_says_so_and_where() -> None:
    diagnosis = {"report": "float16 overflow in 3 layers, first layer3.4.conv2 (+bn2): 12 values beyond +-65504"}
    p = preflight.Prediction(2, compare_outputs("onnxruntime", "emu", outputs(0.2), OM), 70.0, 86.47, None,
                             diagnosis=diagnosis)
    v = preflight.judge_prediction(p, max_miou_delta=0.47)
    assert v.state is State.FAILED
    assert any(f.startswith("main: rel. euclidean") and f.endswith("(predicted)") for f in v.failures)
    assert "|delta mIoU| 16.470 > 0.47 (predicted)" in v.failures
    assert v.where == diagnosis["report"] and "where: float16 overflow in 3 layers" in v.line()


def test_no_prediction_is_not_judged_with_the_reason() -> None:
    v = preflight.judge_prediction(preflight.unavailable("the ONNX is not an export of this architecture", 3),
                                   max_miou_delta=0.47)
    assert not v.judged and v.reason == ("predicted for force_fp16: no prediction: the ONNX is not an export of "
                                         "this architecture")


def test_a_prediction_never_judges_the_om_gate() -> None:
    """-m om on a CPU machine: the pre-flight passes, the om gate is still not judged (and required);
    a failed prediction fails its own test, the om gate's state stays the om's."""
    reqs = resolve(markexpr="om", given_options=[])
    skipped = [TestOutcome("test_om_matches_onnx[om]", "skipped", "Skipped: no Ascend om to judge")]
    absent = not_judged("om", "test_om_matches_onnx[om]", ABSENT, "no Ascend om to judge")  # what the report records
    ok = preflight.judge_prediction(prediction(), max_miou_delta=0.47)
    gate = judge_gates(reqs, [absent, ok], {"om": [*skipped, TestOutcome("test_om_fp16_preflight", "passed", "", True)]})["om"]
    assert gate.state == "NOT JUDGED" and gate.breaks_run and gate.reason == "no Ascend om to judge"
    assert gate.predictions == (ok,) and not gate.prediction_failed
    bad = preflight.judge_prediction(prediction(rel=0.2), max_miou_delta=0.47)
    tests = {"om": [*skipped, TestOutcome("test_om_fp16_preflight", "failed", bad.line(), True)]}
    gate = judge_gates([], [absent, bad], tests)["om"]
    assert gate.state == "NOT JUDGED" and gate.prediction_failed and gate.reason == "no Ascend om to judge"
    unavailable = preflight.judge_prediction(preflight.unavailable("toy"), max_miou_delta=0.47)
    tests = {"om": [*skipped, TestOutcome("test_om_fp16_preflight", "skipped", unavailable.line(), True)]}
    assert judge_gates(reqs, [absent, unavailable], tests)["om"].reason == "no Ascend om to judge"
    # the om itself still decides: a passing om passes the gate beside a failed prediction
    om = preflight.judge_om_parity(compare_outputs("onnxruntime", "om", outputs(2e-3, seed=5), OM), None, subject="om")
    tests = {"om": [TestOutcome("test_om_matches_onnx[om]", "passed"), TestOutcome("p", "failed", "x", True)]}
    gate = judge_gates(reqs, [om, bad], tests)["om"]
    assert gate.state == "PASS" and not gate.breaks_run and gate.prediction_failed


def test_the_om_parity_line_carries_the_ratio_to_the_prediction() -> None:
    p = prediction(rel=1.7e-3)
    measured = compare_outputs("onnxruntime", "om", outputs(3.4e-3, seed=1), OM)
    v = preflight.judge_om_parity(measured, p, subject="om")
    r = v.details["fp16_prediction"]["ratio_rel_euclidean"]
    assert v.passed and set(r) == {"aux", "main"} and r["main"] == pytest.approx(2.0, rel=0.05)
    assert v.line().endswith(f"rel. euclidean over the force_fp16 prediction: aux {r['aux']:.3g}x "
                             f"({measured.outputs[0].rel_euclidean:.3g} vs predicted "
                             f"{p.parity.outputs[0].rel_euclidean:.3g}) main {r['main']:.3g}x "  # type: ignore[union-attr]
                             f"({measured.outputs[1].rel_euclidean:.3g} vs predicted "
                             f"{p.parity.outputs[1].rel_euclidean:.3g})")  # type: ignore[union-attr]
    assert v.details["fp16_prediction"]["gate"] == "off"
    none = preflight.judge_om_parity(measured, preflight.unavailable("no --onnx of this architecture"), subject="om")
    assert none.passed and none.line().endswith("no force_fp16 prediction to compare with (no --onnx of this "
                                                "architecture)")


def test_gating_on_the_ratio_is_a_thresholds_key_with_its_source(tmp_path) -> None:  # noqa: ANN001
    assert load().fp16_ratio_gate() == (None, None)  # off in the shipped file
    path = tmp_path / "t.toml"
    path.write_text(with_overrides(DEFAULT_PATH, {"om.max_ratio_to_fp16_prediction": (3, "calibrated on a 310P3")}))
    limit, source = load(path).fp16_ratio_gate()
    assert (limit, source) == (3.0, "calibrated on a 310P3")
    p = prediction(rel=1.7e-3)
    far = compare_outputs("onnxruntime", "om", outputs(20 * 1.7e-3, seed=2), OM)
    assert far.passed  # msquickcmp's limits admit an om 20x further than fp16 rounding explains
    v = preflight.judge_om_parity(far, p, subject="om", max_ratio=limit, ratio_source=source)
    assert v.state is State.FAILED and any(f.startswith("main: rel. euclidean 2") and f.endswith(
        "x the force_fp16 prediction > 3") for f in v.failures)
    near = compare_outputs("onnxruntime", "om", outputs(1.8e-3, seed=3), OM)
    assert preflight.judge_om_parity(near, p, subject="om", max_ratio=limit, ratio_source=source).passed
    blind = preflight.judge_om_parity(near, None, subject="om", max_ratio=limit, ratio_source=source)
    assert blind.state is State.FAILED and "there is no prediction" in blind.failures[0]
    path.write_text(with_overrides(DEFAULT_PATH, {}).replace(
        "max_miou_delta = {", 'max_ratio_to_fp16_prediction = { value = 0.5, source = "x" }\nmax_miou_delta = {'))
    with pytest.raises(Exception, match="must be finite and >= 1"):
        load(path)


def test_the_run_plan_shows_the_pre_flight_and_its_cost() -> None:
    plan = make_plan(500, device_outputs=[], onnx_accuracy="auto", sample_images=8, seconds_per_image=4.0,
                     estimate_basis="measured", preflight_cost=1.3)
    assert plan.preflight_indices == (0, 71, 143, 214, 285, 356, 428, 499) and plan.onnx_full
    line = next(line for line in plan.lines() if line.startswith("om pre-flight"))
    assert line.startswith("om pre-flight: force_fp16 emulation on 8 of 500 images (~42 s, ~1.3 fp32 forwards per "
                           "image): [om] preflight_images of the om sample")
    assert plan.as_dict()["preflight_fp32_forwards_per_image"] == 1.3
    assert plan.select_preflight(list(range(500))) == list(plan.preflight_indices)
    sampled = make_plan(500, device_outputs=["om"], onnx_accuracy="auto", sample_images=8)
    assert set(sampled.preflight_indices) <= set(sampled.onnx_indices)
    assert not any(line.startswith("om pre-flight") for line in plan.for_parity_only(2).lines())


def test_the_pre_flight_runs_on_its_share_of_the_om_sample() -> None:
    """[om] preflight_images of the om sample, spread over it (first, middle, last of the 8), so the
    prediction's images are always among ONNX Runtime's; the shipped file asks for 3, the demo's
    sample is 3, and more than the sample is the sample."""
    from intrada.gate.thresholds import load

    plan = make_plan(500, device_outputs=["dumps"], onnx_accuracy="auto", sample_images=8, preflight_images=3,
                     seconds_per_image=4.0, preflight_cost=1.8)
    assert plan.onnx_indices == (0, 71, 143, 214, 285, 356, 428, 499)
    assert plan.preflight_indices == (0, 285, 499) and set(plan.preflight_indices) <= set(plan.onnx_indices)
    assert plan.as_dict()["preflight_images"] == 3
    assert "force_fp16 emulation on 3 of 500 images (~22 s" in next(
        line for line in plan.lines() if line.startswith("om pre-flight"))
    assert make_plan(500, device_outputs=[], onnx_accuracy="auto", sample_images=3, preflight_images=8
                     ).preflight_indices == (0, 250, 499)
    assert load().om_sample() == {"sample_images": 8, "preflight_images": 3}


def test_a_model_the_emulation_cannot_run_is_said_once_and_never_a_failed_build(tmp_path, toy_onnx) -> None:  # noqa: ANN001
    """The conftest's toy ONNX has the IntraDA interface but not the DeepLabv2 convolutions."""
    from types import SimpleNamespace

    from intrada.cache.store import ArtifactCache

    cache = ArtifactCache(tmp_path / "cache")
    samples = [SimpleNamespace(name="frankfurt_000000_000294")]
    first = preflight.predict(cache, toy_onnx, "toy", samples, OM, max_miou_delta=0.47)
    again = preflight.predict(cache, toy_onnx, "toy", samples, OM, max_miou_delta=0.47)
    assert not first.available and first.reason == again.reason and first.images == 1
    assert first.reason.startswith("the force_fp16 emulation cannot run this model: ")  # type: ignore[union-attr]
    stats = cache.stats()
    assert (stats.builds, stats.build_failures, stats.hits) == (1, 0, 1)
    v = preflight.judge_prediction(first, max_miou_delta=0.47)
    assert not v.judged and v.details["prediction"]["reason"] == first.reason
