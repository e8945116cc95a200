"""Device dump reading: convention detection, ambiguity, sizes, NaN/Inf, missing and stray files."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from intrada.core import protocol
from intrada.dataset.cityscapes import Sample
from intrada.dataset.dumps import CONVENTIONS, DumpSet, write_dumps
from intrada.core.errors import DumpsError

NAMES = ["frankfurt_000000_000294_leftImg8bit", "lindau_000001_000019_leftImg8bit", "munster_000002_000019_leftImg8bit"]
SHAPE = (19, 65, 129)
BYTES = 19 * 65 * 129 * 4  # written out independently of protocol.DUMP_BYTES

# file suffixes per tool: benchmark (the seed's test/eval_acc_perf.sh and postprocess at Ascend/ModelZoo-PyTorch
# 053601716: _2.bin is the main head), ais_bench (the postprocess at HEAD reads _1.bin), msame (_output_<i>)
AUX_MAIN = {
    "ais_bench": ("_0.bin", "_1.bin"),
    "benchmark": ("_1.bin", "_2.bin"),
    "msame": ("_output_0.bin", "_output_1.bin"),
}


def _logits(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _write(directory: Path, tool: str, names: list[str] = NAMES, heads: tuple[str, ...] = ("aux", "main")) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    aux, main = AUX_MAIN[tool]
    for i, n in enumerate(names):
        if "aux" in heads:
            (-_logits(i)).tofile(directory / f"{n}{aux}")
        if "main" in heads:
            _logits(i).tofile(directory / f"{n}{main}")


def test_byte_size_constant() -> None:
    assert protocol.DUMP_BYTES == BYTES == 637_260


@pytest.mark.parametrize("tool", ["ais_bench", "benchmark", "msame"])
def test_detects_each_convention_and_reads_the_main_head(tmp_path: Path, tool: str) -> None:
    _write(tmp_path, tool)
    ds = DumpSet.open(tmp_path, NAMES)
    assert ds.convention == tool and ds.has_aux and len(ds) == 3
    assert ds.path(NAMES[1], "main") == tmp_path / f"{NAMES[1]}{AUX_MAIN[tool][1]}"
    np.testing.assert_array_equal(ds.read(NAMES[1]), _logits(1))
    np.testing.assert_array_equal(ds.read(NAMES[1], "aux"), -_logits(1))
    assert ds.read(NAMES[0]).dtype == np.float32 and ds.read(NAMES[0]).shape == SHAPE
    assert CONVENTIONS[tool] == {"aux": AUX_MAIN[tool][0], "main": AUX_MAIN[tool][1]}


def test_main_only_layouts_that_are_unambiguous(tmp_path: Path) -> None:
    _write(tmp_path / "b", "benchmark", heads=("main",))  # only _2.bin: must be benchmark
    assert DumpSet.open(tmp_path / "b", NAMES).convention == "benchmark"
    _write(tmp_path / "m", "msame", heads=("main",))
    ds = DumpSet.open(tmp_path / "m", NAMES)
    assert ds.convention == "msame" and not ds.has_aux
    with pytest.raises(DumpsError, match="did not record the aux head"):
        ds.read(NAMES[0], "aux")


def test_only_underscore_1_files_is_ambiguous(tmp_path: Path) -> None:
    _write(tmp_path, "ais_bench", heads=("main",))  # X_1.bin: ais_bench main or benchmark aux?
    with pytest.raises(DumpsError, match=r"ambiguous dump names: only <stem>_1\.bin files .*main head for "
                       r"ais_bench but the aux head for the legacy benchmark.*Hint: choose the convention with "
                       r"convention= \(CLI: --dump-format \{ais_bench,benchmark,msame\}\)"):
        DumpSet.open(tmp_path, NAMES)
    ds = DumpSet.open(tmp_path, NAMES, convention="ais_bench")
    np.testing.assert_array_equal(ds.read(NAMES[2]), _logits(2))
    with pytest.raises(DumpsError, match=r"main-head dumps \(_2\.bin\) missing for 3 of 3 samples"):
        DumpSet.open(tmp_path, NAMES, convention="benchmark")
    with pytest.raises(DumpsError, match=r"unknown dump convention 'ais'.*--dump-format"):
        DumpSet.open(tmp_path, NAMES, convention="ais")


def test_mixed_conventions_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a", "ais_bench", NAMES[:2])
    _write(tmp_path / "a", "benchmark", NAMES[2:])
    with pytest.raises(DumpsError, match=r"mixed conventions: 0-based ais_bench files .* 1-based benchmark files"):
        DumpSet.open(tmp_path / "a", NAMES)

    _write(tmp_path / "m", "msame", NAMES[:1])
    _write(tmp_path / "m", "ais_bench", NAMES[1:])
    with pytest.raises(DumpsError, match=r"mixed conventions: msame files"):
        DumpSet.open(tmp_path / "m", NAMES)

    _write(tmp_path / "x", "ais_bench")
    _logits(0).tofile(tmp_path / "x" / f"{NAMES[0]}_2.bin")
    with pytest.raises(DumpsError, match=rf"{NAMES[0]}_2\.bin do not belong to the ais_bench convention"):
        DumpSet.open(tmp_path / "x", NAMES, convention="ais_bench")


def test_wrong_sizes(tmp_path: Path) -> None:
    _write(tmp_path, "ais_bench")
    main = tmp_path / f"{NAMES[1]}_1.bin"
    np.concatenate([_logits(0).ravel()] * 16).tofile(main)
    with pytest.raises(DumpsError, match=rf"{NAMES[1]}_1\.bin: 10,196,160 bytes, expected 637,260 .*unsplit batch of 16"):
        DumpSet.open(tmp_path, NAMES)
    main.write_bytes(b"\0" * (BYTES - 4000))
    with pytest.raises(DumpsError, match=r"633,260 bytes, expected 637,260 .*truncated"):
        DumpSet.open(tmp_path, NAMES)
    main.write_bytes(b"\0" * (BYTES + 4))
    with pytest.raises(DumpsError, match=r"637,264 bytes, expected 637,260 \(float32 19x65x129\)\. Hint"):
        DumpSet.open(tmp_path, NAMES)
    main.write_bytes(b"\0" * BYTES)
    (tmp_path / f"{NAMES[2]}_0.bin").write_bytes(b"\0" * 10)  # the aux head is checked too
    with pytest.raises(DumpsError, match=rf"{NAMES[2]}_0\.bin: 10 bytes"):
        DumpSet.open(tmp_path, NAMES)


def test_file_truncated_after_open_is_caught_on_read(tmp_path: Path) -> None:
    _write(tmp_path, "benchmark")
    ds = DumpSet.open(tmp_path, NAMES)
    (tmp_path / f"{NAMES[0]}_2.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(DumpsError, match=r"1,000 bytes, expected 637,260 .*truncated"):
        ds.read(NAMES[0])


def test_missing_samples_say_how_many_and_how_to_subset(tmp_path: Path) -> None:
    many = [f"city_{i:06d}_000019_leftImg8bit" for i in range(8)]
    _write(tmp_path, "ais_bench", many[:3])
    with pytest.raises(DumpsError, match=r"main-head dumps \(_1\.bin\) missing for 5 of 8 samples: "
                       r"city_000003_000019_leftImg8bit, city_000004_000019_leftImg8bit, "
                       r"city_000005_000019_leftImg8bit, \.\.\. \(5 in all\).*max_images"):
        DumpSet.open(tmp_path, many)
    # asking for the subset that exists is fine; the other samples' dumps are simply not used
    assert DumpSet.open(tmp_path, many[:2]).names == tuple(many[:2])


def test_unknown_bin_files_are_named(tmp_path: Path) -> None:
    _write(tmp_path, "ais_bench")
    (tmp_path / "notes.bin").write_bytes(b"x")
    (tmp_path / f"{NAMES[0]}_3.bin").write_bytes(b"x")  # an output index no convention has
    with pytest.raises(DumpsError, match=rf"2 \.bin file\(s\) match no dump convention: "
                       rf"{NAMES[0]}_3\.bin, notes\.bin"):
        DumpSet.open(tmp_path, NAMES)


def test_unrelated_files_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path, "ais_bench")
    (tmp_path / "other_000000_000001_leftImg8bit_1.bin").write_bytes(b"x")  # another sample's
    (tmp_path / "result_summary.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    assert DumpSet.open(tmp_path, NAMES).convention == "ais_bench"


def test_stems_ending_in_digits(tmp_path: Path) -> None:
    names = ["img_0001", "img_0001_1"]  # one stem is another's ais_bench main file name minus .bin
    _write(tmp_path / "a", "ais_bench", names)
    ds = DumpSet.open(tmp_path / "a", names)
    np.testing.assert_array_equal(ds.read("img_0001"), _logits(0))
    np.testing.assert_array_equal(ds.read("img_0001_1"), _logits(1))
    _write(tmp_path / "m", "msame", ["x_output", "x"])
    ds = DumpSet.open(tmp_path / "m", ["x_output", "x"])
    assert ds.convention == "msame"
    np.testing.assert_array_equal(ds.read("x_output"), _logits(0))


def test_nan_and_inf_are_reported_with_file_and_count(tmp_path: Path) -> None:
    _write(tmp_path, "ais_bench")
    bad = _logits(0)
    bad[3, 10, 10] = np.nan
    bad[4, 0, :3] = np.inf
    bad.tofile(tmp_path / f"{NAMES[0]}_1.bin")
    ds = DumpSet.open(tmp_path, NAMES)  # sizes are fine; values are checked when read
    with pytest.raises(DumpsError, match=rf"{NAMES[0]}_1\.bin: 4 non-finite values \(1 NaN, 3 Inf\) of 159,315"):
        ds.read(NAMES[0])


def test_directory_problems(tmp_path: Path) -> None:
    with pytest.raises(DumpsError, match="dump directory does not exist"):
        DumpSet.open(tmp_path / "nope", NAMES)
    _write(tmp_path / "2024_01_01-10_00_00", "ais_bench")  # ais_bench without --output_dirname
    with pytest.raises(DumpsError, match=r"no dumps for any of the 3 samples.*one level down; pass the sub-folder "
                       r"\(2024_01_01-10_00_00\)"):
        DumpSet.open(tmp_path, NAMES)
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / f"{NAMES[0]}_1.npy", _logits(0))
    with pytest.raises(DumpsError, match=r"--outfmt BIN"):
        DumpSet.open(npy, NAMES)
    with pytest.raises(DumpsError, match="no samples given"):
        DumpSet.open(tmp_path, [])


def test_read_of_an_unopened_sample(tmp_path: Path) -> None:
    _write(tmp_path, "ais_bench")
    ds = DumpSet.open(tmp_path, NAMES[:1])
    with pytest.raises(DumpsError, match="not part of this dump set"):
        ds.read(NAMES[1])
    with pytest.raises(ValueError, match="head must be one of"):
        ds.path(NAMES[0], "layer6")


def test_errors_are_one_line() -> None:
    err = DumpsError("/d", "a\nb", "c")
    assert "\n" not in str(err) and str(err) == "/d: a b. Hint: c"


def test_accepts_samples_and_pickles(tmp_path: Path) -> None:
    _write(tmp_path, "msame")
    samples = [Sample(n, n.split("_")[0], tmp_path / f"{n}.png", None) for n in NAMES]
    ds = DumpSet.open(tmp_path, samples)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone == ds
    np.testing.assert_array_equal(clone.read(NAMES[2]), _logits(2))


def test_write_dumps_is_the_ais_bench_layout(tmp_path: Path) -> None:
    aux, main = -_logits(5), _logits(5)
    paths = write_dumps(tmp_path / "out", NAMES[0], aux, main[None])  # [1, C, H, W] is accepted
    assert [p.name for p in paths] == [f"{NAMES[0]}_0.bin", f"{NAMES[0]}_1.bin"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in paths]  # no temp left
    np.testing.assert_array_equal(np.fromfile(paths[1], "<f4").reshape(SHAPE), main)
    assert paths[0].stat().st_size == BYTES
    ds = DumpSet.open(tmp_path / "out", NAMES[:1])
    assert ds.convention == "ais_bench"
    np.testing.assert_array_equal(ds.read(NAMES[0], "aux"), aux)
    with pytest.raises(ValueError, match=r"shape \(19, 65, 128\)"):
        write_dumps(tmp_path / "out", NAMES[1], aux[:, :, :128], main)
