"""intrada.core.checks: the one NaN/Inf finder, and the model-output check built on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from intrada.core.checks import NonFinite, check_model_outputs, count_nonfinite, find_nonfinite
from intrada.core.errors import OnnxModelError


def test_finite_arrays_have_nothing_to_report() -> None:
    assert find_nonfinite(np.zeros((3, 4, 5), np.float32)) is None
    assert find_nonfinite(np.full(7, np.finfo(np.float32).max, np.float32)) is None
    assert find_nonfinite(np.arange(10)) is None  # integers are always finite
    assert count_nonfinite(np.ones(4)) == 0


def test_counts_nan_and_inf_and_finds_the_first_in_c_order() -> None:
    a = np.zeros((3, 4, 5), np.float32)
    a[2, 0, 0] = np.nan
    a[1, 3, 4] = np.inf
    a[1, 3, 2] = -np.inf
    a[0, 2, 1] = np.nan
    assert find_nonfinite(a) == NonFinite(count=4, nan=2, first=(0, 2, 1))
    assert find_nonfinite(a).inf == 2  # type: ignore[union-attr]
    assert count_nonfinite(a) == 4
    assert find_nonfinite(np.array([1.0, np.inf])) == NonFinite(1, 0, (1,))


def test_check_model_outputs_counts_inf_and_passes_finite(tmp_path: Path) -> None:
    good = np.zeros((1, 19, 65, 129), np.float32)
    check_model_outputs(tmp_path / "m.onnx", (good, good), "x")
    bad = good.copy()
    bad[0, 0, 0, :5] = np.inf
    bad[0, 1, 0, 0] = -np.inf
    with pytest.raises(OnnxModelError, match=r"m\.onnx: output 0 holds 6 NaN/Inf values on x\. Hint: the model is "
                                             r"numerically broken"):
        check_model_outputs(tmp_path / "m.onnx", (bad, good), "x")
    with pytest.raises(OnnxModelError, match=r"m\.onnx: onnxruntime output 1 holds 6 NaN/Inf values on a, b\."):
        check_model_outputs(tmp_path / "m.onnx", (good, bad), "a, b", backend="onnxruntime")
