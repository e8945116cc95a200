"""evaluate_dumps vs the seed's procedure and vs an independent computation, on real-size files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from intrada.dataset.cityscapes import Sample, list_samples
from intrada.dataset.dumps import DumpSet, write_dumps
from intrada.core.errors import DumpsError
from intrada.evaluation.evaluate import EvalResult, evaluate_dumps, evaluate_dumps_reference
from intrada.evaluation.labels import load_label_cached

H, W = 1024, 2048
# labelId -> trainId as valeoai/ADVENT advent/dataset/cityscapes_list/info.json "label2train" lists it; all others ignored
SPEC_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                       24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _spec_train_ids(label_ids: np.ndarray) -> np.ndarray:
    out = np.full(label_ids.shape, 255, np.int64)
    for lid, tid in SPEC_LABEL_TO_TRAIN.items():
        out[label_ids == lid] = tid
    return out


def _scene(rng: np.random.Generator) -> np.ndarray:
    """labelIds map: horizontal bands plus rectangles, some of them ignored ids (0, 1, 4)."""
    ids = [7, 8, 11, 21, 23, 26, 24, 17, 0, 1, 4, 33, 20]
    label = np.empty((H, W), np.uint8)
    edges = np.sort(rng.integers(0, H, 5))
    for k, (a, b) in enumerate(zip([0, *edges], [*edges, H])):
        label[a:b] = ids[(k * 3 + int(rng.integers(13))) % len(ids)]
    for _ in range(12):
        y, x = rng.integers(0, H - 40), rng.integers(0, W - 40)
        label[y:y + rng.integers(8, 200), x:x + rng.integers(4, 300)] = rng.choice(ids)
    return label


def _logits_for(label_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible segmenter output: the true class at each low-res grid point, plus noise."""
    train = _spec_train_ids(label_ids)[np.linspace(0, H - 1, 65).round().astype(int)][:, np.linspace(0, W - 1, 129).round().astype(int)]
    logits = rng.normal(0, 1.5, (19, 65, 129))
    for c in range(19):
        logits[c] += 5 * (train == c)
    return logits.astype(np.float32)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Sample], Path]:
    root = tmp_path_factory.mktemp("cityscapes")
    dumps = root / "dumps"
    rng = np.random.default_rng(0)
    for i, city in enumerate(["frankfurt", "frankfurt", "lindau"]):
        name = f"{city}_000000_{i:06d}"
        (root / "leftImg8bit" / "val" / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / "val" / city).mkdir(parents=True, exist_ok=True)
        (root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png").touch()  # never opened here
        label = _scene(rng)
        Image.fromarray(label).save(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png")
        main = _logits_for(label, rng)
        write_dumps(dumps, f"{name}_leftImg8bit", -main, main)
    return list_samples(root), dumps


def _independent(samples: list[Sample], dumps: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """torch upsample + argmax, spec label table, np.add.at: shares no code with intrada."""
    total = np.zeros((19, 19), np.int64)
    preds = {}
    for s in samples:
        logits = np.fromfile(dumps / f"{s.name}_1.bin", "<f4").reshape(1, 19, 65, 129)
        with torch.no_grad():
            up = torch.nn.functional.interpolate(torch.from_numpy(logits), size=(H, W), mode="bilinear",
                                                 align_corners=True)
        pred = up[0].argmax(0).numpy()  # torch.argmax also returns the first maximum
        assert s.label is not None
        gt = _spec_train_ids(np.asarray(Image.open(s.label)))
        keep = gt != 255
        np.add.at(total, (gt[keep], pred[keep]), 1)
        preds[s.name] = pred
    return total, preds


def test_fast_equals_reference_and_independent_computation(tree: tuple[list[Sample], Path], tmp_path: Path) -> None:
    samples, dumps = tree
    ds = DumpSet.open(dumps, samples)
    keep = [samples[1].name]
    ref = evaluate_dumps_reference(samples, ds, keep_predictions=keep)
    fast1 = evaluate_dumps(samples, ds, workers=1, keep_predictions=keep)
    fast2 = evaluate_dumps(samples, ds, workers=2, keep_predictions=keep, label_cache_dir=tmp_path / "labels")
    matrix, preds = _independent(samples, dumps)

    np.testing.assert_array_equal(ref.score.matrix, matrix)
    for result in (fast1, fast2):
        assert isinstance(result, EvalResult)
        np.testing.assert_array_equal(result.score.matrix, matrix)
        assert result.score.num_images == 3 and result.dump_format == "ais_bench"
        assert list(result.predictions) == keep
        np.testing.assert_array_equal(result.predictions[keep[0]], preds[keep[0]])
        assert result.miou == ref.miou
    np.testing.assert_array_equal(ref.predictions[keep[0]], preds[keep[0]])
    assert 20 < ref.score.miou < 95  # the fixture is neither trivial nor random

    js = fast2.to_json()
    assert js["dump_format"] == "ais_bench" and js["num_images"] == 3
    assert js["miou"] == ref.score.miou and len(js["per_class_iou"]) == 19


def test_label_cache_decodes_once_and_notices_changed_files(tree: tuple[list[Sample], Path], tmp_path: Path) -> None:
    samples, dumps = tree
    ds = DumpSet.open(dumps, samples)
    cache = tmp_path / "labels"
    first = evaluate_dumps(samples, ds, workers=1, label_cache_dir=cache)
    assert (first.label_cache_hits, first.label_cache_misses) == (0, 3)
    assert len(list(cache.glob("*.npy"))) == 3 and not list(cache.glob(".*"))
    second = evaluate_dumps(samples, ds, workers=1, label_cache_dir=cache)
    assert (second.label_cache_hits, second.label_cache_misses) == (3, 0)
    np.testing.assert_array_equal(second.score.matrix, first.score.matrix)

    # a corrupt entry is decoded again
    entry = sorted(cache.glob("*.npy"))[0]
    entry.write_bytes(b"garbage")
    third = evaluate_dumps(samples, ds, workers=1, label_cache_dir=cache)
    assert third.label_cache_misses == 1
    np.testing.assert_array_equal(third.score.matrix, first.score.matrix)


def test_label_cache_rereads_an_edited_label(tmp_path: Path) -> None:
    label = tmp_path / "x_gtFine_labelIds.png"
    ids = np.full((H, W), 7, np.uint8)
    Image.fromarray(ids).save(label)
    arr, hit = load_label_cached(label, tmp_path / "c")
    assert not hit and (arr == 0).all()
    assert load_label_cached(label, tmp_path / "c")[1]
    ids[:10] = 26
    Image.fromarray(ids).save(label)
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a different version
    arr, hit = load_label_cached(label, tmp_path / "c")
    assert not hit and (arr[:10] == 13).all() and (arr[10:] == 0).all()


def test_label_table_matches_the_spec(tmp_path: Path) -> None:
    ids = np.tile(np.arange(34, dtype=np.uint8), (H, W // 34 + 1))[:, :W]
    label = tmp_path / "all_gtFine_labelIds.png"
    Image.fromarray(ids).save(label)
    expected = _spec_train_ids(ids)
    fast, _ = load_label_cached(label, None)
    np.testing.assert_array_equal(fast, expected)
    cached, _ = load_label_cached(label, tmp_path / "c")
    np.testing.assert_array_equal(cached, expected)
    from intrada.evaluation.evaluate import _reference_label

    np.testing.assert_array_equal(_reference_label(label), expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_dump_is_reported_from_any_worker(tree: tuple[list[Sample], Path], tmp_path: Path, workers: int) -> None:
    samples, dumps = tree
    bad = tmp_path / "dumps"
    bad.mkdir()
    for s in samples:
        for k in (0, 1):
            (bad / f"{s.name}_{k}.bin").write_bytes((dumps / f"{s.name}_{k}.bin").read_bytes())
    logits = np.fromfile(bad / f"{samples[2].name}_1.bin", "<f4")
    logits[:5] = np.nan
    logits.tofile(bad / f"{samples[2].name}_1.bin")
    ds = DumpSet.open(bad, samples)
    with pytest.raises(DumpsError, match=rf"{samples[2].name}_1\.bin: 5 non-finite values \(5 NaN, 0 Inf\)"):
        evaluate_dumps(samples, ds, workers=workers)


def test_argument_checks(tree: tuple[list[Sample], Path]) -> None:
    samples, dumps = tree
    ds = DumpSet.open(dumps, samples[:2])
    with pytest.raises(DumpsError, match="1 of 3 samples were not opened in this dump set"):
        evaluate_dumps(samples, ds, workers=1)
    with pytest.raises(ValueError, match="keep_predictions"):
        evaluate_dumps(samples[:2], ds, workers=1, keep_predictions=["nope"])
    with pytest.raises(ValueError, match="workers"):
        evaluate_dumps(samples[:2], ds, workers=0)


def test_progress_bar(tree: tuple[list[Sample], Path], capsys: pytest.CaptureFixture[str]) -> None:
    samples, dumps = tree
    evaluate_dumps(samples[:1], DumpSet.open(dumps, samples[:1]), workers=1, progress=True)
    assert "postprocess" in capsys.readouterr().err


def test_the_result_says_where_its_time_went(tree: tuple[list[Sample], Path], tmp_path: Path) -> None:
    from intrada.evaluation.evaluate import STAGES

    samples, dumps = tree
    ds = DumpSet.open(dumps, samples)
    for workers in (1, 2):
        result = evaluate_dumps(samples, ds, workers=workers, label_cache_dir=tmp_path / f"labels-{workers}")
        cost = result.cost()
        assert tuple(cost["stages"]) == STAGES and all(v > 0 for v in cost["stages"].values()), cost
        assert cost["workers"] == workers and cost["images"] == 3 and cost["label_cache_hits"] == 0
        # the stages happen inside the call: their sum never exceeds the workers' wall clock
        assert 0 < sum(result.stage_seconds.values()) <= result.seconds * workers
        assert cost["overhead"] >= 0 and result.seconds > 0


def test_a_pool_is_used_from_16_images_per_worker() -> None:
    from intrada.evaluation.evaluate import MIN_IMAGES_PER_WORKER, workers_for

    assert MIN_IMAGES_PER_WORKER == 16
    assert [workers_for(n) for n in (1, 8, 31, 32, 500)] == [1, 1, 1, 2, 2]
    assert workers_for(500, available=1) == 1 and workers_for(500, available=4) == 4


def test_labels_are_cached_as_runs_and_read_back_exactly(tree: tuple[list[Sample], Path], tmp_path: Path) -> None:
    from intrada.dataset.cityscapes import load_train_ids
    from intrada.evaluation.labels import decode_runs, encode_runs

    samples, _ = tree
    cache = tmp_path / "labels"
    for s in samples:
        decoded, hit = load_label_cached(s.label_required, cache)
        cached, hit2 = load_label_cached(s.label_required, cache)
        assert (hit, hit2) == (False, True)
        assert np.array_equal(decoded, load_train_ids(s.label_required)) and np.array_equal(cached, decoded)
    entries = sorted(cache.glob("*.npy"))
    assert len(entries) == 3 and all(e.stat().st_size < H * W // 20 for e in entries)  # runs, not 2 MB maps

    rng = np.random.default_rng(3)
    for label in (np.zeros((H, W), np.uint8), rng.integers(0, 19, (H, W)).astype(np.uint8)):
        runs = encode_runs(label)
        assert runs.dtype == np.uint32 and runs.shape[0] == 2 and np.array_equal(decode_runs(runs), label)
    # a noise label has no long runs: its entry is the map itself, which is smaller
    noise = rng.integers(0, 19, (H, W)).astype(np.uint8)
    assert encode_runs(noise).nbytes > noise.nbytes
    # anything else is not an entry
    good = encode_runs(load_train_ids(samples[0].label_required))
    short = good.copy()
    short[1, -1] -= 1
    for bad in (short, good.astype(np.int64), good[:1], np.zeros((2, 0), np.uint32)):
        assert decode_runs(bad) is None
    # a damaged entry (runs that do not cover the image) is decoded again, and replaced
    from intrada.evaluation.labels import _label_cache_path

    entry = _label_cache_path(cache, samples[0].label_required)
    np.save(entry, short)
    again, hit = load_label_cached(samples[0].label_required, cache)
    assert not hit and np.array_equal(again, load_train_ids(samples[0].label_required))
    assert np.array_equal(np.load(entry), good)


def test_pool_workers_keep_the_memory_they_free() -> None:
    """glibc's mallopt is reached (in a fresh process: the setting is process-wide); elsewhere the
    call changes nothing and says so."""
    import platform
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from intrada.evaluation.evaluate import keep_freed_memory as k; print(k())"],
                         capture_output=True, text=True, check=True, env={**os.environ}).stdout.strip()
    assert out == str(platform.libc_ver()[0] == "glibc")
