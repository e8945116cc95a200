"""intrada.parity.compare: statistics against independent numpy computations over all images at once, the
judging of each criterion (truthiness, one-line report naming every failure), NaN/Inf handling."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from intrada.parity.compare import Limits, ParityResult, TensorStats, compare_outputs

SHAPE = (1, 19, 13, 17)  # [N, C, H, W] per image, class axis at -3


def _images(seed: int, n: int = 3, noise: float = 0.05) -> list[tuple[tuple[np.ndarray, np.ndarray],
                                                                       tuple[np.ndarray, np.ndarray]]]:
    """Reference logits ~N(0, 3); candidate = reference + uniform(-noise, noise) (|d| uniform, so the
    99th percentile is well determined even from a subsample)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        ref = tuple(rng.normal(0, 3, SHAPE).astype(np.float32) for _ in range(2))
        cand = tuple((r + rng.uniform(-noise, noise, SHAPE)).astype(np.float32) for r in ref)
        pairs.append((ref, cand))
    return pairs


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _reference_stats(pairs: list, head: int) -> dict[str, float]:
    a = np.concatenate([p[0][head] for p in pairs]).astype(np.float64)
    b = np.concatenate([p[1][head] for p in pairs]).astype(np.float64)
    d = np.abs(a - b)
    la, lb = _log_softmax(a, 1), _log_softmax(b, 1)
    kl = (np.exp(la) * (la - lb)).sum(axis=1)  # per pixel
    return {
        "max_abs": d.max(), "mean_abs": d.mean(), "p99_abs": np.percentile(d, 99),
        "reference_absmax": np.abs(a).max(), "max_abs_over_scale": d.max() / np.abs(a).max(),
        "cosine": (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)),
        "rel_euclidean": np.linalg.norm(a - b) / np.linalg.norm(a),
        "kl": kl.mean(), "argmax_agreement": (a.argmax(1) == b.argmax(1)).mean(),
    }


def test_statistics_equal_numpy() -> None:
    pairs = _images(0, noise=0.5)
    result = compare_outputs("pytorch", "onnxruntime", pairs, Limits())
    assert result.images == 3
    assert [s.name for s in result.outputs] == ["aux", "main"]
    for head, stats in enumerate(result.outputs):
        ref = _reference_stats(pairs, head)
        got = stats.as_dict()
        assert got["output"] == stats.name and got["nonfinite"] == 0
        for key in ("max_abs", "mean_abs", "reference_absmax", "max_abs_over_scale", "cosine", "rel_euclidean",
                    "kl", "argmax_agreement"):
            assert got[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-12), (stats.name, key)
        # p99 is estimated from a subsample by design; uniform |d| pins it within 1%
        assert got["p99_abs"] == pytest.approx(ref["p99_abs"], rel=0.01)
        assert 0 < ref["kl"] and ref["argmax_agreement"] < 1  # the data exercises every statistic


def test_streaming_equals_one_batch() -> None:
    pairs = _images(1)
    one = compare_outputs("r", "c", [(tuple(np.concatenate([p[0][h] for p in pairs]) for h in range(2)),
                                      tuple(np.concatenate([p[1][h] for p in pairs]) for h in range(2)))], Limits())
    many = compare_outputs("r", "c", pairs, Limits())
    for s1, s2 in zip(one.outputs, many.outputs):
        for key in ("max_abs", "mean_abs", "cosine", "rel_euclidean", "kl", "argmax_agreement"):
            assert getattr(s1, key) == pytest.approx(getattr(s2, key), rel=1e-9), key


def test_identical_outputs_pass_the_strictest_limits() -> None:
    pairs = [((r[0], r[1]), (r[0].copy(), r[1].copy())) for r, _ in _images(2)]
    strict = Limits(max_abs_over_scale=0.0, min_cosine=1.0 - 1e-12, max_rel_euclidean=0.0, max_kl=1e-12,
                    min_argmax_agreement=1.0)
    result = compare_outputs("pytorch", "onnxruntime", pairs, strict)
    assert result and result.passed and result.failures == []
    for s in result.outputs:
        assert s.max_abs == 0 and s.rel_euclidean == 0 and s.argmax_agreement == 1.0
        assert s.cosine == pytest.approx(1.0, abs=1e-12) and s.kl == pytest.approx(0.0, abs=1e-12)


LIMIT_CASES = {
    "max_abs_over_scale": (Limits(max_abs_over_scale=1e-6), r"max\|diff\|/scale [0-9.e-]+ > 1e-06"),
    "min_cosine": (Limits(min_cosine=0.99999), r"cosine 0\.[0-9]+ < 0\.99999"),
    "max_rel_euclidean": (Limits(max_rel_euclidean=1e-6), r"rel\. euclidean [0-9.e-]+ > 1e-06"),
    "max_kl": (Limits(max_kl=1e-9), r"KL [0-9.e-]+ > 1e-09"),
}


@pytest.mark.parametrize("criterion", list(LIMIT_CASES))
def test_each_criterion_fails_and_is_named(criterion: str) -> None:
    limits, pattern = LIMIT_CASES[criterion]
    result = compare_outputs("pytorch", "onnxruntime", _images(3, noise=0.5), limits)
    assert not result and result.passed is False
    assert len(result.failures) == 2  # both heads break this criterion
    assert [f.split(":")[0] for f in result.failures] == ["aux", "main"]
    for f in result.failures:
        assert re.search(pattern, f), f
    report = result.report()
    assert "\n" not in report
    assert report.startswith("onnxruntime vs pytorch on 3 images: FAIL (")
    for f in result.failures:
        assert f in report


def test_limits_are_inclusive_and_directional() -> None:
    pairs = _images(4, noise=0.5)
    measured = compare_outputs("r", "c", pairs, Limits())
    main = measured.outputs[1]
    worst = max(measured.outputs, key=lambda s: s.max_abs_over_scale)
    at = Limits(max_abs_over_scale=worst.max_abs_over_scale, min_cosine=min(s.cosine for s in measured.outputs),
                min_argmax_agreement=main.argmax_agreement)
    assert compare_outputs("r", "c", pairs, at)  # equal to the measurement: passes
    above = Limits(min_argmax_agreement=math.nextafter(main.argmax_agreement, 2.0))
    r = compare_outputs("r", "c", pairs, above)
    assert not r and len(r.failures) == 1 and r.failures[0].startswith("main: argmax agreement ")


def test_argmax_agreement_is_judged_on_the_main_head_only() -> None:
    rng = np.random.default_rng(5)
    a_ref, m_ref = (rng.normal(0, 3, SHAPE).astype(np.float32) for _ in range(2))
    a_cand = rng.normal(0, 3, SHAPE).astype(np.float32)  # aux head unrelated: ~5% agreement
    limits = Limits(min_argmax_agreement=0.999)
    ok = compare_outputs("r", "c", [((a_ref, m_ref), (a_cand, m_ref.copy()))], limits)
    assert ok.outputs[0].argmax_agreement < 0.2 and ok  # aux ignored: evaluation uses index 1
    bad = compare_outputs("r", "c", [((a_ref, m_ref), (a_ref.copy(), a_cand))], limits)
    assert not bad
    assert bad.failures == [f"main: argmax agreement {bad.outputs[1].argmax_agreement:.5%} < 99.900%"]


def test_several_failures_all_in_one_line() -> None:
    result = compare_outputs("pytorch", "openvino", _images(6, noise=0.5),
                             Limits(max_abs_over_scale=1e-6, min_cosine=0.99999, min_argmax_agreement=1.0))
    assert len(result.failures) == 5  # 2 heads x 2 criteria + argmax on main
    line = result.report()
    assert "\n" not in line and all(f in line for f in result.failures)
    assert "aux: max|d| " in line and "main: max|d| " in line  # statistics printed for both heads


def test_pass_report() -> None:
    result = compare_outputs("pytorch", "onnxruntime", _images(7, noise=1e-4), Limits(max_abs_over_scale=1e-3))
    assert result
    assert result.report().startswith("onnxruntime vs pytorch on 3 images: PASS | aux: max|d| ")
    d = result.as_dict()
    assert d["passed"] is True and d["failures"] == [] and d["images"] == 3
    assert [o["output"] for o in d["outputs"]] == ["aux", "main"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_candidate_is_a_failure_without_any_limit(bad: float) -> None:
    pairs = _images(8)
    cand_main = pairs[1][1][1].copy()
    cand_main[0, 2, 3, :4] = bad
    cand_main[0, 5, 0, 0] = np.nan
    pairs[1] = (pairs[1][0], (pairs[1][1][0], cand_main))
    result = compare_outputs("pytorch", "ascend-om", pairs, Limits())
    assert not result
    assert result.outputs[1].nonfinite == 5 and result.outputs[0].nonfinite == 0
    assert result.failures == ["main: 5 NaN/Inf values"]
    assert "main: 5 NaN/Inf values" in result.report()


def test_nonfinite_reference_is_a_failure() -> None:
    """A NaN in the reference makes every difference meaningless: the verdict must not be PASS,
    whichever criteria are configured (today max|d| silently skips the NaN: max(0.0, nan) == 0.0)."""
    pairs = _images(9, noise=1e-5)
    limits = Limits(max_abs_over_scale=1e-3)
    assert compare_outputs("pytorch", "onnxruntime", pairs, limits)  # passes before the NaN
    ref_main = pairs[0][0][1].copy()
    ref_main[0, 0, 0, 0] = np.nan
    pairs[0] = ((pairs[0][0][0], ref_main), pairs[0][1])
    result = compare_outputs("pytorch", "onnxruntime", pairs, limits)
    assert not result, result.report()


def test_shape_mismatch_is_an_error() -> None:
    s = TensorStats("main")
    with pytest.raises(ValueError, match=r"main: shape \(1, 19, 64, 128\) != reference \(1, 19, 65, 129\)"):
        s.update(np.zeros((1, 19, 65, 129), np.float32), np.zeros((1, 19, 64, 128), np.float32))


def test_degenerate_zero_reference() -> None:
    z = np.zeros(SHAPE, np.float32)
    same = compare_outputs("r", "c", [((z, z), (z, z))], Limits(min_cosine=0.99, max_rel_euclidean=0.01))
    assert same and same.outputs[1].cosine == 1.0 and same.outputs[1].rel_euclidean == 0.0
    one = np.ones(SHAPE, np.float32)
    diff = compare_outputs("r", "c", [((z, z), (one, one))], Limits(min_cosine=0.99, max_rel_euclidean=0.01))
    assert not diff and len(diff.failures) == 4


def test_parity_result_judges_on_construction() -> None:
    s = TensorStats("main")
    s.update(np.zeros(SHAPE, np.float32), np.ones(SHAPE, np.float32))
    r = ParityResult("r", "c", 1, [s], Limits(max_abs_over_scale=0.5))
    assert r.failures == ["main: max|diff|/scale 1 > 0.5"] and not r


class _Stored:
    """Stored outputs as the gate reads them: ``read(name, head)``."""

    def __init__(self, heads: dict[str, tuple[np.ndarray, np.ndarray]], has_aux: bool = True) -> None:
        self.heads, self.has_aux = heads, has_aux

    def read(self, name: str, head: str) -> np.ndarray:
        return self.heads[name][0 if head == "aux" else 1]


def test_swapped_heads_names_outputs_in_the_wrong_order() -> None:
    from intrada.parity.compare import swapped_heads

    pairs = _images(3, n=2, noise=1e-6)
    names = ["a", "b"]
    ref = _Stored({n: p[0] for n, p in zip(names, pairs)})
    same = _Stored({n: p[1] for n, p in zip(names, pairs)})
    crossed = _Stored({n: (p[1][1], p[1][0]) for n, p in zip(names, pairs)})
    limits = Limits(max_abs_over_scale=1e-5, min_cosine=0.99999, min_argmax_agreement=0.999)
    line = swapped_heads("pytorch", "onnxruntime", ref, crossed, names, limits)
    assert line == ("onnxruntime's output 0 is the main head and output 1 the aux head (pytorch's heads, crossed, "
                    "agree within the limits on 2 images): the outputs are in the wrong order")
    assert swapped_heads("pytorch", "onnxruntime", ref, same, names, limits) is None  # in order: not crossed
    other = _Stored({n: (p[1][1] + 1.0, p[1][0]) for n, p in zip(names, pairs)})  # crossed, and one head off
    assert swapped_heads("pytorch", "onnxruntime", ref, other, names, limits) is None
    assert swapped_heads("pytorch", "dumps", ref, _Stored(crossed.heads, has_aux=False), names, limits) is None
    assert swapped_heads("pytorch", "onnxruntime", ref, crossed, [], limits) is None
