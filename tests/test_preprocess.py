"""intrada.dataset.preprocess against its sources: valeoai/ADVENT advent/dataset/cityscapes.py and
base_dataset.py (what the network sees) and the seed's intrada_preprocess.py (Ascend/ModelZoo-PyTorch
ACL_PyTorch/contrib/cv/segmentation/IntraDA: the .bin files).

The references here are written from those sources, never by calling intrada: ADVENT's line
``np.asarray(Image.open(p).convert('RGB').resize((1024, 512), BICUBIC), float32)[:, :, ::-1] - mean``
then ``transpose(2, 0, 1)`` and ``tofile``; and one output pixel of Pillow's antialiased bicubic
computed by hand.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _cityscapes_tree import make_tree, write_image
from intrada.dataset import preprocess
from intrada.core import protocol
from intrada.core.atomic import temp_path
from intrada.dataset.cityscapes import Sample, list_samples
from intrada.core.errors import BinsError, DatasetError, IntradaError
from intrada.dataset.preprocess import load_resized_rgb, preprocess_image, preprocess_split, read_bin, read_bins, to_network_input

# Spec section 4: the exact float32 values of TEST.IMG_MEAN, BGR order.
SPEC_MEAN_BGR = (104.00698852539062, 116.66876983642578, 122.67891693115234)
SPEC_BIN_BYTES = 6_291_456  # modelzoo section 2: 3 x 512 x 1024 float32


def reference_bin(png: Path) -> bytes:
    """ADVENT's arithmetic, written out in the most straightforward way."""
    with Image.open(png) as im:
        img = im.convert("RGB").resize((1024, 512), Image.BICUBIC)
    arr = np.asarray(img, np.float32)[:, :, ::-1] - np.array(SPEC_MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)).astype("<f4").tobytes()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real-size images over two cities, written out of sorted order."""
    root = tmp_path_factory.mktemp("cityscapes")
    make_tree(root, {"munster": [3], "frankfurt": [5, 1]})
    return root


@pytest.fixture(scope="module")
def split_bins(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Sample], list[Path]]:
    samples = list_samples(tree)
    return samples, preprocess_split(samples, tmp_path_factory.mktemp("bins"), workers=2)


# --- values ---------------------------------------------------------------------------------------

def test_split_is_byte_identical_to_the_straightforward_loop(split_bins: tuple[list[Sample], list[Path]]) -> None:
    samples, paths = split_bins
    for sample, path in zip(samples, paths):
        assert path.stat().st_size == SPEC_BIN_BYTES
        assert path.read_bytes() == reference_bin(sample.image), sample.name


def test_one_worker_writes_the_same_bytes(split_bins: tuple[list[Sample], list[Path]], tmp_path: Path) -> None:
    samples, paths = split_bins
    single = preprocess_split(samples, tmp_path, workers=1)
    assert [p.read_bytes() for p in single] == [p.read_bytes() for p in paths]


def test_preprocess_image_and_read_bin_match_the_reference(split_bins: tuple[list[Sample], list[Path]]) -> None:
    samples, paths = split_bins
    expected = np.frombuffer(reference_bin(samples[0].image), "<f4").reshape(3, 512, 1024)
    got = preprocess_image(samples[0].image)
    assert got.dtype == np.float32 and got.shape == (3, 512, 1024)
    assert got.tobytes() == expected.tobytes()
    assert read_bin(paths[0]).tobytes() == expected.tobytes()
    rgb = load_resized_rgb(samples[0].image)
    assert rgb.dtype == np.uint8 and rgb.shape == (512, 1024, 3)
    assert to_network_input(rgb).tobytes() == expected.tobytes()
    batch = read_bins(paths[::-1])
    assert batch.shape == (3, 3, 512, 1024) and batch.dtype == np.float32
    assert batch[2].tobytes() == expected.tobytes()  # the order given, not sorted


def test_non_rgb_images_are_converted_like_upstream(tmp_path: Path) -> None:
    # Skipping convert('RGB') is only allowed for RGB files; palette, grey and RGBA files go through it.
    for mode in ("P", "L", "RGBA"):
        png = write_image(tmp_path / f"{mode}.png", seed=3, mode=mode)
        assert preprocess_image(png).tobytes() == reference_bin(png), mode


def _impulse_image(path: Path) -> Path:
    """Black, with a pure-red column at x=100 and a pure-green column at x=300 (all rows)."""
    arr = np.zeros((1024, 2048, 3), np.uint8)
    arr[:, 100, 0] = 255
    arr[:, 300, 1] = 255
    Image.fromarray(arr).save(path)
    return path


def test_one_pixel_by_hand_pins_bicubic_bgr_mean_and_no_scaling(tmp_path: Path) -> None:
    """Pillow's BICUBIC downscale by 2 (a = -0.5, support widened to 4 input pixels): output column
    x is centred on input 2x + 1, input column i weighs K((i + 0.5 - (2x + 1)) / 2) / 2 because the
    eight kernel values sum to 2. For the impulse at i = 100: output 50 sits at distance 0.25,
    K(0.25) = 1.5*0.25^3 - 2.5*0.25^2 + 1 = 0.8671875, so 255 * 0.43359375 = 110.57 -> 111; output
    49 sits at 0.75, K = 0.2265625, 255 * 0.11328125 = 28.89 -> 29; outputs 48 and 51 get negative
    weights and clip to 0. Columns are constant down the rows, so the vertical pass changes nothing.
    (BILINEAR would give 96 and 32, NEAREST 0 or 255, LANCZOS other values.)"""
    out = preprocess_image(_impulse_image(tmp_path / "impulse.png"))
    rgb = np.zeros((512, 1024, 3), np.float32)
    rgb[:, 49, 0], rgb[:, 50, 0] = 29, 111  # red impulse at input x = 100
    rgb[:, 149, 1], rgb[:, 150, 1] = 29, 111  # green impulse at input x = 300: centre 301 is at -0.25
    f32 = np.float32
    expected = np.stack([rgb[..., 2] - f32(SPEC_MEAN_BGR[0]),  # channel 0 is blue
                         rgb[..., 1] - f32(SPEC_MEAN_BGR[1]),
                         rgb[..., 0] - f32(SPEC_MEAN_BGR[2])])  # channel 2 is red
    assert out[2, 7, 50] == f32(111) - f32(122.67891693115234)
    assert out[0, 7, 50] == -f32(104.00698852539062)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("change", ["channel order", "scale", "resize filter"])
def test_preprocessing_reads_the_protocol_constants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    change: str) -> None:
    """Said once: changing a protocol constant changes the preprocessing accordingly (a restated
    literal in preprocess.py would not follow)."""
    png = write_image(tmp_path / "x_leftImg8bit.png", seed=4)
    rgb = load_resized_rgb(png)
    base = to_network_input(rgb)
    mean = protocol.MEAN_BGR
    if change == "channel order":
        monkeypatch.setattr(protocol, "CHANNEL_ORDER", "RGB")
        expected = np.stack([rgb[..., c].astype(np.float32) - mean[c] for c in range(3)])
        np.testing.assert_array_equal(to_network_input(rgb), expected)
    elif change == "scale":
        monkeypatch.setattr(protocol, "SCALE", 2.0)
        np.testing.assert_array_equal(to_network_input(rgb), base * np.float32(2.0))
    else:
        monkeypatch.setattr(protocol, "RESIZE_FILTER", "BILINEAR")
        with Image.open(png) as im:
            bilinear = np.asarray(im.convert("RGB").resize((1024, 512), Image.BILINEAR))
        resized = load_resized_rgb(png)
        np.testing.assert_array_equal(resized, bilinear)
        assert not np.array_equal(resized, rgb)


def test_a_black_image_gives_exactly_minus_the_float32_mean(tmp_path: Path) -> None:
    png = tmp_path / "black.png"
    Image.new("RGB", (2048, 1024)).save(png)
    out = preprocess_image(png)
    for c, mean in enumerate(SPEC_MEAN_BGR):
        assert np.unique(out[c]).tolist() == [-mean]  # exact float32 values, no tolerance


def test_bins_are_little_endian_float32_c_order(split_bins: tuple[list[Sample], list[Path]]) -> None:
    samples, paths = split_bins
    raw = paths[0].read_bytes()
    with Image.open(samples[0].image) as im:
        rgb = np.asarray(im.convert("RGB").resize((1024, 512), Image.BICUBIC))
    # element [c=1, y=10, x=20] sits at byte ((1*512 + 10)*1024 + 20)*4 and is green minus its mean
    offset = ((1 * 512 + 10) * 1024 + 20) * 4
    value = np.frombuffer(raw[offset:offset + 4], "<f4")[0]
    assert value == np.float32(rgb[10, 20, 1]) - np.float32(SPEC_MEAN_BGR[1])


# --- order, names, progress -----------------------------------------------------------------------

def test_paths_follow_sample_order_and_names(split_bins: tuple[list[Sample], list[Path]]) -> None:
    samples, paths = split_bins
    assert [p.name for p in paths] == [
        "frankfurt_000001_000026_leftImg8bit.bin", "frankfurt_000005_000102_leftImg8bit.bin",
        "munster_000003_000064_leftImg8bit.bin"]
    assert [p.name for p in paths] == [s.name + ".bin" for s in samples]
    assert sorted(os.listdir(paths[0].parent)) == [p.name for p in paths]  # nothing else left behind


def test_progress_bar_counts_every_image(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = list_samples(tree)[:2]
    preprocess_split(samples, tmp_path, workers=2, progress=True)
    assert "2/2" in capsys.readouterr().err


def test_existing_bins_are_replaced(tree: Path, tmp_path: Path) -> None:
    sample = list_samples(tree)[0]
    (tmp_path / f"{sample.name}.bin").write_bytes(b"stale")
    [path] = preprocess_split([sample], tmp_path)
    assert path.read_bytes() == reference_bin(sample.image)


# --- errors ---------------------------------------------------------------------------------------

def _sample(path: Path, name: str | None = None) -> Sample:
    return Sample(name or path.name.split(".")[0], "frankfurt", path, None)


def test_wrong_image_size_is_refused(tmp_path: Path) -> None:
    png = write_image(tmp_path / "small_leftImg8bit.png", seed=1, size=(1024, 512))
    with pytest.raises(DatasetError, match=r"small_leftImg8bit.png: image is 1024x512, expected 2048x1024\. Hint"):
        preprocess_image(png)


@pytest.mark.parametrize("content", [b"", b"not a png at all", "truncated"])
def test_corrupt_png_is_refused(tmp_path: Path, content: bytes | str) -> None:
    png = tmp_path / "bad_leftImg8bit.png"
    if content == "truncated":
        write_image(png, seed=2)
        png.write_bytes(png.read_bytes()[:200_000])
        pattern = r"bad_leftImg8bit.png: cannot decode image \(image file is truncated\)"
    else:
        png.write_bytes(content)  # type: ignore[arg-type]
        pattern = r"bad_leftImg8bit.png: not an image Pillow can read"
    with pytest.raises(DatasetError, match=pattern):
        preprocess_split([_sample(png)], tmp_path / "bins", workers=1)


def test_missing_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"gone_leftImg8bit.png: image not found"):
        preprocess_image(tmp_path / "gone_leftImg8bit.png")


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_mid_split_leaves_only_whole_bins(tree: Path, tmp_path: Path, workers: int) -> None:
    good = list_samples(tree)
    bad = tmp_path / "frankfurt_000009_000009_leftImg8bit.png"
    bad.write_bytes(good[0].image.read_bytes()[-1000:])  # the tail of a PNG: not an image
    samples = [good[0], _sample(bad), good[1], good[2]]
    out = tmp_path / "bins"
    # A worker's error crosses the process boundary as the same class and message.
    with pytest.raises(DatasetError, match=r"frankfurt_000009_000009_leftImg8bit.png: not an image"):
        preprocess_split(samples, out, workers=workers)
    left = sorted(os.listdir(out))
    assert "frankfurt_000009_000009_leftImg8bit.bin" not in left
    assert all(name.endswith(".bin") for name in left), left  # no temporary file left behind
    for name in left:
        sample = next(s for s in good if s.name + ".bin" == name)
        assert (out / name).read_bytes() == reference_bin(sample.image)


def test_an_interrupted_write_leaves_no_bin_under_the_final_name(tree: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is complete under its temporary name when the rename fails (as if killed there)."""
    sample = list_samples(tree)[0]

    def interrupted(src: object, dst: object) -> None:
        assert Path(os.fspath(src)).stat().st_size == SPEC_BIN_BYTES
        raise KeyboardInterrupt

    monkeypatch.setattr(preprocess.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess_split([sample], tmp_path, workers=1)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_write_errors_are_bins_errors(tree: Path, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(BinsError, match=r"file: cannot create the output directory"):
        preprocess_split(list_samples(tree)[:1], target)


def test_duplicate_names_and_bad_arguments_are_refused(tree: Path, tmp_path: Path) -> None:
    s = list_samples(tree)[0]
    with pytest.raises(DatasetError, match=r"two samples share the name 'frankfurt_000001_000026_leftImg8bit'"):
        preprocess_split([s, s], tmp_path)
    with pytest.raises(DatasetError, match=r"no samples to preprocess"):
        preprocess_split([], tmp_path)
    with pytest.raises(IntradaError, match=r"preprocess workers: must be a positive integer, got 0"):
        preprocess_split([s], tmp_path, workers=0)


@pytest.mark.skipif(preprocess._pool_context().get_start_method() != "fork",
                    reason="the patched writer reaches the workers only when they are forked")
def test_a_worker_killed_mid_write_is_a_clear_error_and_leaves_nothing_partial(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = list_samples(tree)
    victim = Sample("frankfurt_000099_000099_leftImg8bit", "frankfurt", good[0].image, None)
    real = preprocess._write_bin

    def dying(image: Path, final: Path, token: str, buffer: np.ndarray) -> None:
        if final.name.startswith(victim.name):
            temp_path(final, token).write_bytes(b"\0" * 1000)  # half-written, then SIGKILL
            os.kill(os.getpid(), signal.SIGKILL)
        real(image, final, token, buffer)

    monkeypatch.setattr(preprocess, "_write_bin", dying)
    out = tmp_path / "bins"
    with pytest.raises(BinsError, match=r"bins: a preprocessing worker process died \(killed, or out of memory\)"):
        preprocess_split([good[0], victim, good[1], good[2]], out, workers=2)
    left = os.listdir(out)
    assert f"{victim.name}.bin" not in left
    assert all(n.endswith(".bin") for n in left), left  # the victim's temporary file was removed
    for name in left:
        assert (out / name).read_bytes() == reference_bin(next(s.image for s in good if s.name + ".bin" == name))


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from intrada.dataset.cityscapes import Sample, list_samples
    from intrada.dataset.preprocess import preprocess_split
    # 20 copies of each image under distinct names, so the run is still going when it is killed.
    many = [Sample(f"{s.name}_{k:02d}", s.city, s.image, None) for k in range(20) for s in list_samples(sys.argv[1])]
    preprocess_split(many, sys.argv[2], workers=2)
""")


def test_kill_9_mid_split_leaves_only_whole_bins_and_a_rerun_completes(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "bins"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tree), str(out)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and sum(n.endswith(".bin") for n in os.listdir(out)) >= 3:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and both workers, wherever they are
        proc.wait()
    samples = list_samples(tree)
    refs = {s.name: reference_bin(s.image) for s in samples}
    names = os.listdir(out)
    bins = [n for n in names if n.endswith(".bin")]
    assert 3 <= len(bins) < 60
    for name in bins:
        assert (out / name).read_bytes() == refs[name[:-len("_00.bin")]], name
    assert all(n.startswith(".") and n.endswith(".tmp") for n in names if n not in bins)  # hidden leftovers only
    # The next run into the same folder works, and leftovers never count as bins.
    again = preprocess_split(samples, out, workers=2)
    assert [p.read_bytes() for p in again] == [refs[s.name] for s in samples]


# --- reading bins ---------------------------------------------------------------------------------

@pytest.fixture
def good_bin(split_bins: tuple[list[Sample], list[Path]], tmp_path: Path) -> Path:
    path = tmp_path / "x.bin"
    path.write_bytes(split_bins[1][0].read_bytes())
    return path


def test_read_bin_refuses_wrong_sizes(good_bin: Path, tmp_path: Path) -> None:
    data = good_bin.read_bytes()
    cases = {
        "trunc.bin": (data[:-4], r"trunc.bin: truncated: 6,291,452 bytes, expected 6,291,456 \(float32 3x512x1024\)"),
        "empty.bin": (b"", r"empty.bin: empty: 0 bytes"),
        "two.bin": (data * 2, r"two.bin: holds 2 images, one expected: 12,582,912 bytes"),
        "dump.bin": (b"\0" * 637_260, r"dump.bin: not an input bin but a 19x65x129 output dump"),
        "png.bin": (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, r"png.bin: not a preprocessed bin but a PNG image"),
        "npy.bin": (b"\x93NUMPY\x01\x00" + data, r"npy.bin: not a preprocessed bin but a \.npy file"),
        "odd.bin": (data + b"\0", r"odd.bin: not a preprocessed bin: 6,291,457 bytes"),
    }
    for name, (content, pattern) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BinsError, match=pattern):
            read_bin(tmp_path / name)
    with pytest.raises(BinsError, match=r"missing.bin: bin file not found"):
        read_bin(tmp_path / "missing.bin")
    with pytest.raises(BinsError, match=r"trunc.bin: truncated"):
        read_bins([good_bin, tmp_path / "trunc.bin"])
    with pytest.raises(BinsError, match=r"read_bins: no bin files given"):
        read_bins([])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_bin_names_the_file_with_nan_or_inf(good_bin: Path, bad: float) -> None:
    arr = np.fromfile(good_bin, "<f4").reshape(3, 512, 1024)
    arr[1, 200, 300] = bad
    arr[2, 500, 1000] = bad
    arr.tofile(good_bin)
    with pytest.raises(BinsError, match=r"x.bin: 2 NaN/Inf values, first at \[channel 1, row 200, col 300\]"):
        read_bins([good_bin])


def test_read_bin_refuses_values_no_preprocessed_image_can_have(good_bin: Path) -> None:
    # Forgetting the mean (0..255 kept) is the classic seed-variant bug; the blue channel shows it.
    arr = np.fromfile(good_bin, "<f4").reshape(3, 512, 1024) + np.float32(104.00698852539062)
    arr.astype("<f4").tofile(good_bin)
    with pytest.raises(BinsError, match=r"x.bin: channel 0 ranges -?\d+\.\d+\.\.\d+\.\d+, outside \[-104\.007, 150\.993\]"):
        read_bin(good_bin)


def test_read_bin_accepts_the_seeds_totensor_rounding(good_bin: Path) -> None:
    """The seed's ToTensor()/255*255 leaves values ~1e-5 off the exact ones; that is still a bin."""
    arr = np.fromfile(good_bin, "<f4").reshape(3, 512, 1024)
    black = np.float32(-104.00698852539062) - np.float32(2e-5)
    arr[0, 0, 0] = black
    arr.tofile(good_bin)
    assert read_bin(good_bin)[0, 0, 0] == black
