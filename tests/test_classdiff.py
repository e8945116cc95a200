"""intrada.parity.classdiff: per-class IoU deltas between two scores, and where two class maps disagree.

Scores are built with intrada.evaluation.metrics on small hand-made maps whose IoUs are worked out below, so
every number in the tables is known exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from intrada.core import protocol
from intrada.parity.classdiff import ClassDelta, Disagreement, class_map, disagreement
from intrada.evaluation.metrics import score_maps
from intrada.evaluation.postprocess import upsample_argmax

ROAD, SIDEWALK, BUILDING, POLE = 0, 1, 2, 5


def maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gt: road left half, sidewalk right half (20 px each) and an ignored column.
    reference = gt. candidate: 4 sidewalk pixels called road, 2 road pixels called pole, so
    road IoU 18 / (18 + 2 + 4) = 75, sidewalk 16 / 20 = 80, pole 0 (reference: absent)."""
    gt = np.zeros((4, 11), np.uint8)
    gt[:, 5:10] = SIDEWALK
    gt[:, 10] = protocol.IGNORE_INDEX
    ref = np.where(gt == protocol.IGNORE_INDEX, ROAD, gt).astype(np.uint8)
    cand = ref.copy()
    cand[0, 5:9] = ROAD
    cand[1, 0:2] = POLE
    return gt, ref, cand


@pytest.fixture
def delta() -> ClassDelta:
    gt, ref, cand = maps()
    return ClassDelta.from_scores(score_maps(gt, ref), score_maps(gt, cand), reference_label="onnxruntime",
                                  candidate_label="om")


def test_per_class_iou_and_delta(delta: ClassDelta) -> None:
    road, sidewalk, pole = delta.rows[ROAD], delta.rows[SIDEWALK], delta.rows[POLE]
    assert (road.reference, road.candidate, road.delta) == (100.0, 75.0, -25.0)
    assert (sidewalk.reference, sidewalk.candidate, sidewalk.delta) == (100.0, 80.0, -20.0)
    assert (pole.reference, pole.candidate, pole.delta, pole.note) == (None, 0.0, None, "scored by the candidate only")
    assert delta.rows[BUILDING].note == "absent from both"
    assert delta.reference_miou == 100.0 and delta.candidate_miou == pytest.approx((75 + 80 + 0) / 3)
    assert delta.same_ground_truth is True


def test_largest_change_first(delta: ClassDelta) -> None:
    assert [r.name for r in delta.ranked[:3]] == ["road", "sidewalk", "building"]  # then class order
    assert [r.index for r in delta.ranked[2:]] == [i for i in range(19) if i not in (ROAD, SIDEWALK)]
    assert [r.name for r in delta.worst(1)] == ["road"]
    assert [r.name for r in delta.worst()] == ["road", "sidewalk"]
    assert delta.best() == []


def test_report_is_one_line(delta: ClassDelta) -> None:
    assert delta.report() == ("om vs onnxruntime: mIoU 51.67 vs 100.00 (-48.33); largest per-class IoU drops: "
                              "road -25.00, sidewalk -20.00; pole scored by the candidate only")
    assert str(delta) == delta.report()


def test_markdown_table(delta: ClassDelta) -> None:
    lines = delta.markdown().splitlines()
    assert lines[:4] == ["| class | onnxruntime IoU | om IoU | delta |", "|---|---:|---:|---:|",
                         "| road | 100.00 | 75.00 | -25.00 |", "| sidewalk | 100.00 | 80.00 | -20.00 |"]
    assert "| building | n/a | n/a | n/a (absent from both) |" in lines
    assert "| pole | n/a | 0.00 | n/a (scored by the candidate only) |" in lines
    assert lines[-1] == "| **mIoU** | 100.00 | 51.67 | **-48.33** |"
    assert len(lines) == 2 + 19 + 1


def test_dicts_and_scores_give_the_same_result(delta: ClassDelta) -> None:
    gt, ref, cand = maps()
    as_json = [json.loads(json.dumps(score_maps(gt, m).to_json())) for m in (ref, cand)]
    again = ClassDelta.from_scores(*as_json, reference_label="onnxruntime", candidate_label="om")
    assert again == delta
    data = json.loads(json.dumps(delta.as_dict()))
    assert data["classes"][0] == {"class": "road", "train_id": 0, "reference": 100.0, "candidate": 75.0,
                                  "delta": -25.0, "note": ""}
    assert data["miou_delta"] == pytest.approx(-48.3333333)


def test_gains_and_no_change() -> None:
    gt, ref, cand = maps()
    better = ClassDelta.from_scores(score_maps(gt, cand), score_maps(gt, ref))
    assert [(r.name, r.delta) for r in better.best()] == [("road", 25.0), ("sidewalk", 20.0)]
    assert "gains: road +25.00, sidewalk +20.00; pole scored by the reference only" in better.report()
    same = ClassDelta.from_scores(score_maps(gt, ref), score_maps(gt, ref))
    assert same.report() == ("candidate vs reference: mIoU 100.00 vs 100.00 (0.00); no per-class IoU changes by "
                             "0.01 or more (largest |delta| 0)")


def test_rounding_noise_prints_as_zero() -> None:
    names = list(protocol.CLASS_NAMES)
    ref = {"class_names": names, "per_class_iou": [50.0] * 19, "miou": 50.0}
    cand = {"class_names": names, "per_class_iou": [49.999] + [50.0] * 18, "miou": 49.99995}
    d = ClassDelta.from_scores(ref, cand)
    assert "-0.00" not in d.markdown() and "| road | 50.00 | 50.00 | 0.00 |" in d.markdown()
    assert d.worst() == [] and "largest |delta| 0.001" in d.report()
    assert d.same_ground_truth is None  # no confusion matrices to check


def test_different_ground_truth_is_flagged() -> None:
    gt, ref, cand = maps()
    other_gt = gt.copy()
    other_gt[3, :] = protocol.IGNORE_INDEX
    d = ClassDelta.from_scores(score_maps(gt, ref), score_maps(other_gt, cand))
    assert d.same_ground_truth is False
    assert "WARNING: the two scores count different ground truth" in d.report()
    assert d.markdown().splitlines()[-1].startswith("WARNING")


def test_bad_scores() -> None:
    gt, ref, _ = maps()
    good = score_maps(gt, ref).to_json()
    with pytest.raises(ValueError, match="different classes"):
        ClassDelta.from_scores(good, {**good, "class_names": ["a"] * 19})
    with pytest.raises(ValueError, match="om: score has no 'per_class_iou'"):
        ClassDelta.from_scores(good, {"class_names": []}, candidate_label="om")
    with pytest.raises(ValueError, match="3 IoUs for 19 classes"):
        ClassDelta.from_scores(good, {**good, "per_class_iou": [1.0, 2.0, 3.0]})
    with pytest.raises(TypeError, match="expected a score dict or a SegmentationScore, got int"):
        ClassDelta.from_scores(good, 3)  # type: ignore[arg-type]


# --- disagreement -----------------------------------------------------------------------------------
def test_disagreement_of_class_maps() -> None:
    _, ref, cand = maps()
    mask, d = disagreement(ref, cand)
    assert np.array_equal(mask, ref != cand) and mask.sum() == 6
    assert (d.pixels, d.disagreeing, d.images) == (44, 6, 1)
    assert d.fraction == pytest.approx(6 / 44)
    assert d.top_pairs() == [("sidewalk", "road", 4), ("road", "pole", 2)]
    assert d.report() == "6 of 44 pixels differ (13.64%): sidewalk->road 9.09%, road->pole 4.55%"
    assert d.as_dict()["top_pairs"][0] == {"reference": "sidewalk", "candidate": "road", "pixels": 4}
    both = d + d
    assert (both.images, both.disagreeing, both.pixels) == (2, 12, 88)


def test_disagreement_of_logits_at_label_resolution() -> None:
    # swapping two class channels turns every pixel of one class into the other, nothing else
    # region-like logits (5x5 blocks of one value per class): few contested cells, so it is fast
    coarse = np.random.default_rng(3).normal(size=(19, 13, 26)).astype(np.float32)
    logits = np.ascontiguousarray(np.repeat(np.repeat(coarse, 5, axis=1), 5, axis=2)[:, :65, :129])
    swapped = logits.copy()
    swapped[[3, 7]] = logits[[7, 3]]
    mask, d = disagreement(logits, swapped)
    ref_map = upsample_argmax(logits)
    assert mask.shape == (protocol.LABEL_H, protocol.LABEL_W)
    assert np.array_equal(class_map(logits), ref_map)
    assert np.array_equal(mask, (ref_map == 3) | (ref_map == 7))
    assert d.pairs[3, 7] == (ref_map == 3).sum() > 0 and d.pairs[7, 3] == (ref_map == 7).sum() > 0
    assert d.disagreeing == mask.sum()
    assert disagreement(logits, logits)[1].disagreeing == 0


def test_tiny_shares_are_pixel_counts() -> None:
    ref = np.zeros((100, 200), np.uint8)
    cand = ref.copy()
    cand[0, 0] = 4
    assert disagreement(ref, cand)[1].report() == "1 of 20,000 pixels differ (0.01%): road->fence 1 px"


def test_disagreement_input_errors() -> None:
    _, ref, cand = maps()
    with pytest.raises(ValueError, match=r"class maps differ in shape: reference \(4, 11\), candidate \(4, 10\)"):
        disagreement(ref, cand[:, :10])
    bad = cand.copy()
    bad[0, 0] = 19
    with pytest.raises(ValueError, match="candidate class map holds 19, expected 0..18"):
        disagreement(ref, bad)
    with pytest.raises(ValueError, match=r"expected logits \[classes, h, w\] or an integer class map"):
        class_map(ref.astype(np.float32))
    with pytest.raises(ValueError, match="cannot merge"):
        Disagreement(np.zeros((19, 19), np.int64)) + Disagreement(np.zeros((19, 19), np.int64), class_names=("x",) * 19)


def test_ranked_by_size_of_change_either_way() -> None:
    names = list(protocol.CLASS_NAMES)
    ref = {"class_names": names, "per_class_iou": [50.0, 50.0, 50.0] + [None] * 16}
    cand = {"class_names": names, "per_class_iou": [45.0, 60.0, 49.0] + [None] * 16}
    d = ClassDelta.from_scores(ref, cand)
    assert [(r.name, r.delta) for r in d.ranked[:3]] == [("sidewalk", 10.0), ("road", -5.0), ("building", -1.0)]
    assert [r.name for r in d.worst()] == ["road", "building"] and [r.name for r in d.best()] == ["sidewalk"]
    assert d.miou_delta is None and "mIoU n/a vs n/a" in d.report()
