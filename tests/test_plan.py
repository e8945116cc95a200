"""The run plan: ONNX Runtime on the whole split, or on a spread sample when device outputs are judged."""
from __future__ import annotations

import pytest

from intrada.gate.plan import make_plan, split_needed, spread


def test_spread_covers_first_to_last() -> None:
    assert spread(500, 8) == (0, 71, 143, 214, 285, 356, 428, 499)
    assert spread(5, 8) == (0, 1, 2, 3, 4)
    assert spread(10, 1) == (0,)
    assert len(set(spread(9, 8))) == 8


def test_device_outputs_make_the_onnx_reference_a_sample() -> None:
    plan = make_plan(500, device_outputs=["dumps"], onnx_accuracy="auto", sample_images=8, seconds_per_image=4.2,
                     estimate_basis="measured")
    assert not plan.onnx_full and len(plan.onnx_indices) == 8
    lines = plan.lines()
    assert lines[0].startswith("ONNX Runtime on 8 of 500 images (~34 s): a sample spread over the split")
    assert lines[1] == "ONNX Runtime on all 500 images would take (~35 min); pass --onnx-accuracy full to run it"
    assert plan.select(list(range(500))) == list(plan.onnx_indices)


def test_full_is_asked_for_or_the_default_without_device_outputs() -> None:
    assert make_plan(500, device_outputs=["om"], onnx_accuracy="full", sample_images=8).onnx_full
    assert make_plan(500, device_outputs=[], onnx_accuracy="auto", sample_images=8).onnx_full
    assert not make_plan(500, device_outputs=[], onnx_accuracy="sample", sample_images=8).onnx_full
    # a split no larger than the sample is the whole split
    assert make_plan(8, device_outputs=["dumps"], onnx_accuracy="auto", sample_images=8).onnx_full
    with pytest.raises(ValueError, match="auto, full or sample"):
        make_plan(8, device_outputs=[], onnx_accuracy="most", sample_images=8)


def test_plan_is_plain_data() -> None:
    d = make_plan(20, device_outputs=["om", "dumps"], onnx_accuracy="auto", sample_images=4).as_dict()
    assert d["onnx_images"] == 4 and d["onnx_indices"] == [0, 6, 13, 19] and d["device_outputs"] == ["om", "dumps"]
    assert d["seconds_per_image"] is None and "om and dumps outputs are judged" in d["reason"]


def test_only_parity_tests_need_only_the_parity_images() -> None:
    parity = ({"onnx_outputs", "torch_outputs", "parity_samples"}, {"parity"})
    accuracy = ({"onnx_outputs", "onnx_score"}, {"accuracy"})
    perf = ({"onnx_outputs", "batch_size"}, {"perf"})
    om = ({"onnx_outputs", "om_outputs"}, {"om", "accuracy"})
    assert not split_needed([parity, parity]) and not split_needed([]) and not split_needed([({"onnx_file"}, {"om"})])
    assert split_needed([parity, accuracy]) and split_needed([perf]) and split_needed([om])

    plan = make_plan(500, device_outputs=[], onnx_accuracy="auto", sample_images=8, seconds_per_image=4.0,
                     estimate_basis="measured")
    only = plan.for_parity_only(2)
    assert only.onnx_indices == (0, 1) and only.images == 500 and only.parity_only
    assert only.lines()[0] == ("ONNX Runtime on 2 of 500 images (~8 s): only parity tests read ONNX Runtime's "
                               "outputs: the 2 parity images ([parity] images), not the whole split")
    assert not any("--onnx-accuracy full" in line for line in only.lines())
    assert only.as_dict()["parity_only"] and not plan.as_dict()["parity_only"]
    sample = make_plan(500, device_outputs=["om"], onnx_accuracy="auto", sample_images=8).for_parity_only(2)
    assert sample.onnx_indices == (0, 71) and "not the sample of 8" in sample.reason  # the first 2 of the sample
    assert make_plan(2, device_outputs=[], onnx_accuracy="auto", sample_images=8).for_parity_only(2).parity_only is False
