"""intrada.evaluation.metrics against independent computations (np.add.at, explicit per-class loops)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from intrada.core import protocol
from intrada.evaluation.metrics import ConfusionMatrix, SegmentationScore, confusion_matrix, iou_from_confusion, mean_iou, score_maps

C = 19


def _random_maps(seed: int, shape: tuple[int, ...] = (64, 96), ignore_frac: float = 0.2,
                 gt_dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, C, shape).astype(gt_dtype)
    gt[rng.random(shape) < ignore_frac] = 255
    pred = rng.integers(0, C, shape).astype(np.uint8)
    return gt, pred


def _reference_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    g = gt.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    valid = (g >= 0) & (g < C)
    ref = np.zeros((C, C), np.int64)
    np.add.at(ref, (g[valid], p[valid]), 1)
    return ref


def _reference_iou(gt: np.ndarray, pred: np.ndarray) -> list[float]:
    valid = (gt >= 0) & (gt < C)
    out = []
    for c in range(C):
        tp = np.sum((gt == c) & (pred == c))
        fp = np.sum(valid & (gt != c) & (pred == c))
        fn = np.sum((gt == c) & (pred != c))
        out.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    return out


@pytest.mark.parametrize("gt_dtype", [np.uint8, np.int64, np.int32])
def test_matrix_equals_add_at(gt_dtype: type) -> None:
    gt, pred = _random_maps(1, gt_dtype=gt_dtype)
    if gt_dtype != np.uint8:
        gt[:3, :3] = -1  # the seed's license-plate id maps to -1, also ignored
    m = confusion_matrix(gt, pred)
    assert m.dtype == np.int64 and m.shape == (C, C)
    np.testing.assert_array_equal(m, _reference_matrix(gt, pred))
    # rows are ground truth: row sums count the labelled pixels of each gt class
    np.testing.assert_array_equal(m.sum(axis=1), [(gt == c).sum() for c in range(C)])


@pytest.mark.parametrize("shape", [(1, 1), (7,), (3, 301, 499), (1023, 2047)])
def test_matrix_equals_add_at_for_large_and_odd_sizes(shape: tuple[int, ...]) -> None:
    # sizes around the fast path's chunk and lane boundaries; runs of equal codes like real maps
    gt, pred = _random_maps(7, shape)
    gt = np.sort(gt, axis=-1)
    np.testing.assert_array_equal(confusion_matrix(gt, pred), _reference_matrix(gt, pred))
    np.testing.assert_array_equal(confusion_matrix(gt[..., ::2], pred[..., ::2]),  # non-contiguous views
                                  _reference_matrix(gt[..., ::2], pred[..., ::2]))


def test_rows_are_ground_truth_columns_prediction() -> None:
    gt = np.array([[3, 3, 255]], np.uint8)
    pred = np.array([[5, 3, 7]], np.uint8)
    m = confusion_matrix(gt, pred)
    assert m[3, 5] == 1 and m[3, 3] == 1 and m.sum() == 2


def test_iou_equals_per_class_loop() -> None:
    gt, pred = _random_maps(2)
    pred[pred == 4] = 5  # class 4 never predicted: IoU 0 where gt has it
    gt[gt == 7] = 255
    pred[pred == 7] = 8  # class 7 absent from both: NaN
    iou = iou_from_confusion(confusion_matrix(gt, pred))
    np.testing.assert_allclose(iou, _reference_iou(gt, pred), rtol=0, atol=1e-15, equal_nan=True)
    assert math.isnan(iou[7]) and iou[4] == 0.0
    assert mean_iou(iou) == pytest.approx(np.nanmean(_reference_iou(gt, pred)), abs=1e-15)


def test_streaming_chunks_equal_one_shot_and_merge() -> None:
    gts, preds = zip(*(_random_maps(10 + i, (32, 48)) for i in range(6)))
    one_shot = confusion_matrix(np.stack(gts), np.stack(preds))

    streamed = ConfusionMatrix()
    for g, p in zip(gts, preds):
        for rows in np.array_split(np.arange(g.shape[0]), 3):  # one image fed in row chunks
            streamed.update(g[rows], p[rows], images=0)
        streamed.num_images += 1
    np.testing.assert_array_equal(streamed.matrix, one_shot)

    a, b = ConfusionMatrix(), ConfusionMatrix()
    for i, (g, p) in enumerate(zip(gts, preds)):
        (a if i % 2 else b).update(g, p)
    merged = a.merge(b)
    assert merged == a + b == streamed
    assert merged.num_images == 6 and a.num_images == 3  # merge leaves its inputs alone
    np.testing.assert_array_equal(merged.matrix, one_shot)
    batch = ConfusionMatrix().update(np.stack(gts), np.stack(preds))
    assert batch.num_images == 6 and batch == merged


def test_score_matches_upstream_formula() -> None:
    gts, preds = zip(*(_random_maps(20 + i) for i in range(3)))
    acc = ConfusionMatrix()
    hist = np.zeros((C, C))  # upstream: float64 hist, fast_hist, nanmean, round(x * 100, 2)
    for g, p in zip(gts, preds):
        acc.update(g, p)
        gi, pi = g.ravel().astype(int), p.ravel().astype(int)
        k = (gi >= 0) & (gi < C)
        hist += np.bincount(C * gi[k] + pi[k], minlength=C * C).reshape(C, C)
    iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    score = acc.score()
    assert score.miou == np.nanmean(iu) * 100  # bit-identical, not approximately
    assert score.miou_rounded == round(np.nanmean(iu) * 100, 2)
    assert score.per_class_iou == [v * 100 for v in iu]
    assert score.num_images == 3
    np.testing.assert_array_equal(score.iou, iu)
    assert mean_iou(score.iou) == np.nanmean(iu)


def test_absent_classes_are_none_and_all_absent_is_nan_without_warning() -> None:
    gt = np.full((4, 4), 255, np.uint8)
    pred = np.zeros((4, 4), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.nanmean would warn "Mean of empty slice"
        score = score_maps(gt, pred)
        assert math.isnan(score.miou)
        assert score.per_class_iou == [None] * C
        assert score.to_json()["miou"] is None
        assert "n/a" in score.table()

    gt[0, 0] = 2
    pred[0, 0] = 2
    score = score_maps(gt, pred)
    assert score.per_class_iou[2] == 100.0
    assert score.per_class_iou[0] is None  # predicted 0 only on ignored pixels: not counted
    assert score.miou == 100.0


def test_table_and_json() -> None:
    gt, pred = _random_maps(3)
    score = score_maps(gt, pred)
    table = score.table()
    lines = table.splitlines()
    assert len(lines) == 1 + C + 1
    for name, value, line in zip(protocol.CLASS_NAMES, score.per_class_iou, lines[1:]):
        assert value is not None
        assert line.split() == [name, f"{round(value, 2):.2f}"]
    assert lines[-1].split()[:2] == ["mIoU", f"{score.miou_rounded:.2f}"]
    assert str(score) == table

    js = score.to_json()
    assert js["miou"] == score.miou and isinstance(js["miou"], float)
    assert js["per_class_iou"] == score.per_class_iou
    assert js["num_images"] == 1
    assert js["confusion_matrix"] == confusion_matrix(gt, pred).tolist()
    assert js["class_names"] == list(protocol.CLASS_NAMES)


def test_rejects_bad_inputs() -> None:
    gt, pred = _random_maps(4)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(gt, pred[:-1])
    bad = pred.copy()
    bad[0, 0] = 19
    with pytest.raises(ValueError, match=r"prediction values range 0\.\.19, expected 0\.\.18"):
        confusion_matrix(gt, bad)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(gt.astype(np.float32), pred)
    with pytest.raises(ValueError, match="same number of classes"):
        ConfusionMatrix().merge(ConfusionMatrix(5))
    with pytest.raises(ValueError, match="class names"):
        SegmentationScore(np.zeros((3, 3), np.int64), 0)


def test_accumulator_owns_its_state() -> None:
    start = np.ones((C, C), np.int64)
    acc = ConfusionMatrix(matrix=start)
    acc.update(*_random_maps(5))
    assert (start == 1).all()
    score = acc.score()
    acc.update(*_random_maps(6))
    assert score.num_images == 1 and score.matrix.sum() < acc.matrix.sum()
