"""Bins are made for what a runner reads (intrada.gate.plan) and reused per image across cache entries
(intrada.gate.artifacts.bins_entry): judging recorded dumps makes only the ONNX sample's bins, and a
later run on the whole split (a live om, --onnx-accuracy full) makes only the missing ones."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _cityscapes_tree import make_tree
from test_ascend_contract import _toy_cityscapes, fake_npu_memo, fakes, no_ascend, toy  # noqa: F401 (fixtures)
from intrada.gate import artifacts
from intrada.dataset import preprocess
from intrada.cache.store import ArtifactCache
from intrada.cache.events import read_events
from intrada.dataset.cityscapes import Sample, list_samples
from intrada.gate.plan import make_plan


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


# -- the gate ------------------------------------------------------------------------------------------
def test_judging_dumps_makes_the_sample_s_bins_and_a_full_run_the_rest(tmp_path: Path, gate_seed: Any) -> None:
    """The demo judged as a submission with ONNX Runtime's outputs as the recorded dumps; its thresholds
    sample 3 of the 8 images for ONNX Runtime. The dumps-only run makes those 3 bins (report.json says
    so, and why); the same run again makes nothing; --onnx-accuracy full on the same cache makes the
    other 5 and links the 3. ONNX Runtime's outputs come from the seeded cache (keyed by the bins'
    bytes), so no network runs here."""
    import shutil

    from _gate import run_gate, seed_cache

    cache = seed_cache(tmp_path / "cache", gate_seed.cache, keys=frozenset(k for k in gate_seed.keys if k[0] != "bins"))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for f in Path(gate_seed.default.report["overlays"][0]["logits"]).parent.glob("*.bin"):
        shutil.copy(f, dumps / f.name)
    args = ("--benchmark-disable", "-m", "accuracy or om", *gate_seed.real_args(), "--dumps", str(dumps))

    first = run_gate(tmp_path, *args, cache=cache)
    o = first.outcomes()
    assert o["test_device_dumps_miou"] == "passed" and o["test_om_matches_onnx[dumps]"] == "passed", first.tail()
    made = first.report["sections"]["artifacts.bins"]
    why = "bins for 3 of 8 images, the ones ONNX Runtime runs on; recorded device outputs read none"
    assert (made["images"], made["made"], made["why"]) == (3, 3, why), made
    assert [(e["images"], e["made"], e["reused"]) for e in made["entries"]] == [(3, 3, 0)]
    assert first.report["sections"]["plan"]["bin_images"] == 3 and why in first.stdout

    t0 = time.time()
    again = run_gate(tmp_path, *args, cache=cache)
    assert again.report["sections"]["artifacts.bins"]["made"] == 0
    assert not [e for e in read_events(cache, since=t0) if e["event"] == "build"], "a warm re-run builds nothing"

    full = run_gate(tmp_path, *args, "--onnx-accuracy", "full", cache=cache)
    assert full.outcomes()["test_onnxruntime_miou"] == "passed", full.tail()
    made = full.report["sections"]["artifacts.bins"]
    assert [(e["images"], e["made"], e["reused"]) for e in made["entries"]] == [(8, 5, 3)]
    assert made["why"] == "bins for all 8 images: ONNX Runtime runs on the whole split"
    entry = Path(made["entries"][0]["directory"])
    assert len(list(entry.glob("*.bin"))) == 8


def test_a_live_om_makes_the_rest_of_the_split_s_bins(tmp_path: Path, fakes: Any, toy: dict) -> None:
    """An om runs live here (the Ascend fakes, tests/test_ascend_contract.py) on a 3-image split whose
    ONNX Runtime sample is 1 image: the bins fixture makes that one; the om's run makes the other 2
    and links it, and the device tool gets a directory of exactly the split's 3 bins."""
    from _gate import run_gate
    from intrada.gate.thresholds import DEFAULT_PATH, with_overrides

    split = _toy_cityscapes(tmp_path / "cityscapes", n=3)
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(with_overrides(DEFAULT_PATH, {"om.onnx_sample_images": (1, "this test's sample")}))
    run = run_gate(tmp_path, "-m", "om and not accuracy", "-k", "not throughput", "--onnx", str(toy["onnx"]),
                   "--cityscapes", str(split), "--thresholds", str(thresholds), "--batch-sizes", "1",
                   cache=tmp_path / "cache")
    assert run.outcomes()["test_om_matches_onnx[om]"] == "passed", run.tail()
    made = run.report["sections"]["artifacts.bins"]
    assert [(e["images"], e["made"], e["reused"]) for e in made["entries"]] == [(1, 1, 0), (3, 2, 1)], made
    assert made["entries"][0]["why"] == ("bins for 1 of 3 images, the ones ONNX Runtime runs on; all 3 when an om "
                                         "runs live (a device tool runs the whole split)")
    assert made["entries"][1]["why"].startswith("bins for all 3 images: an om runs live here")
    assert (made["images"], made["made"]) == (3, 3)
    assert len(list(Path(made["entries"][1]["directory"]).glob("*.bin"))) == 3
