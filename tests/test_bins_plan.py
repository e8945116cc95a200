"""Bins are made for what a runner reads (intrada.plan) and reused per image across cache entries
(intrada.artifacts.bins_entry): judging recorded dumps makes only the ONNX sample's bins, and a
later run on the whole split (a live om, --onnx-accuracy full) makes only the missing ones."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _cityscapes_tree import make_tree
from intrada import artifacts, preprocess
from intrada.cache import ArtifactCache
from intrada.cache_events import read_events
from intrada.cityscapes import Sample, list_samples
from intrada.plan import make_plan


# -- the plan ------------------------------------------------------------------------------------------
def test_dumps_alone_get_bins_for_the_onnx_sample_only() -> None:
    plan = make_plan(500, device_outputs=["dumps"], onnx_accuracy="auto", sample_images=8)
    assert plan.bin_indices == plan.onnx_indices and len(plan.bin_indices) == 8 and not plan.om_live
    assert plan.bins_line() == ("bins for 8 of 500 images, the ones ONNX Runtime runs on; recorded device outputs "
                                "read none")
    assert plan.bins_line() in plan.lines()
    d = plan.as_dict()
    assert d["bin_images"] == 8 and d["bins"] == plan.bins_line() and not d["om_live"]


def test_a_live_om_or_a_full_onnx_run_gets_the_whole_split() -> None:
    om = make_plan(500, device_outputs=["om", "dumps"], onnx_accuracy="auto", sample_images=8)
    # the sample now; the rest when the om runs (fixtures: split_bins)
    assert len(om.bin_indices) == 8 and om.om_live
    assert om.bins_line().endswith("; all 500 when an om runs live (a device tool runs the whole split)")
    full = make_plan(500, device_outputs=["dumps"], onnx_accuracy="full", sample_images=8)
    assert full.bin_indices == tuple(range(500))
    assert full.bins_line() == "bins for all 500 images: ONNX Runtime runs on the whole split"
    parity = make_plan(500, device_outputs=[], onnx_accuracy="auto", sample_images=8).for_parity_only(2)
    assert parity.bin_indices == (0, 1) and parity.bins_line().startswith("bins for 2 of 500 images")


# -- per-image reuse -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    root = tmp_path_factory.mktemp("split")
    make_tree(root, {"frankfurt": [0, 1], "lindau": [0]})
    return list_samples(root)


@pytest.fixture
def preprocessed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names each preprocess_split call was given (the real function still runs)."""
    calls: list[list[str]] = []
    real = preprocess.preprocess_split

    def counting(samples: Any, out: Any, **kwargs: Any) -> Any:
        samples = list(samples)
        calls.append([s.name for s in samples])
        return real(samples, out, **kwargs)

    monkeypatch.setattr(preprocess, "preprocess_split", counting)
    return calls


def _bins_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.suffix == ".bin"}


def test_a_sample_s_bins_serve_a_later_full_split(tmp_path: Path, split: list[Sample],
                                                 preprocessed: list[list[str]]) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    sample = [split[0], split[2]]
    first = artifacts.bins_entry(cache, sample, workers=1)
    assert preprocessed == [[s.name for s in sample]] and (first.made, first.reused) == (2, 0)
    assert _bins_in(first.directory) == {f"{s.name}.bin" for s in sample}

    full = artifacts.bins_entry(cache, split, workers=1)
    assert preprocessed[1:] == [[split[1].name]], "only the image the sample lacked is preprocessed"
    assert (full.made, full.reused) == (1, 2)
    # a device tool runs the whole directory: it holds exactly the split's bins, real files
    assert _bins_in(full.directory) == {f"{s.name}.bin" for s in split}
    assert all(not full.path(s.name).is_symlink() for s in split)
    for s in split:  # byte for byte what preprocessing gives
        assert np.array_equal(preprocess.read_bin(full.path(s.name)), preprocess.preprocess_image(s.image))
    assert os.stat(full.path(sample[0].name)).st_ino == os.stat(first.path(sample[0].name)).st_ino  # linked

    # warm: both entries hit, nothing made, nothing rebuilt
    again = artifacts.bins_entry(cache, split, workers=1), artifacts.bins_entry(cache, sample, workers=1)
    assert [(b.key, b.made, b.reused) for b in again] == [(full.key, 0, 0), (first.key, 0, 0)]
    assert len(preprocessed) == 2
    builds = [e for e in read_events(cache.root) if e["event"] == "build" and e["kind"] == "bins"]
    assert len(builds) == 2 and not any(e.get("rebuild") for e in builds)


def test_a_changed_image_is_preprocessed_again(tmp_path: Path, preprocessed: list[list[str]]) -> None:
    root = tmp_path / "split"
    make_tree(root, {"frankfurt": [0, 1]})
    samples = list_samples(root)
    cache = ArtifactCache(tmp_path / "cache")
    artifacts.bins_entry(cache, samples[:1], workers=1)
    time.sleep(0.01)
    samples[0].image.write_bytes(samples[0].image.read_bytes())  # same bytes, new mtime: another version
    full = artifacts.bins_entry(cache, samples, workers=1)
    assert preprocessed[1:] == [[s.name for s in samples]] and (full.made, full.reused) == (2, 0)


def test_a_donor_removed_meanwhile_is_preprocessed_instead(tmp_path: Path, split: list[Sample],
                                                          preprocessed: list[list[str]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Linking from another entry is an optimisation: when the donor's file is gone (its entry was
    discarded by another process between listing and linking), the bin is made instead."""
    cache = ArtifactCache(tmp_path / "cache")
    donor = artifacts.bins_entry(cache, split[:1], workers=1)
    real = artifacts._reusable_bins

    def then_removed(*args: Any) -> Any:
        found = real(*args)
        os.unlink(donor.path(split[0].name))
        return found

    monkeypatch.setattr(artifacts, "_reusable_bins", then_removed)
    full = artifacts.bins_entry(cache, split, workers=1)
    assert (full.made, full.reused) == (3, 0) and preprocessed[1:] == [[s.name for s in split]]
    assert _bins_in(full.directory) == {f"{s.name}.bin" for s in split}
