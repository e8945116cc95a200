"""intrada.gate.report_figures: the disagreement pictures (what is highlighted, where, and the files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intrada.core import protocol
from intrada.core.errors import DumpsError
from intrada.gate.report_figures import HIGHLIGHT_RGB, IGNORED_RGB, disagreement_figure, write_disagreement_figures, write_figures

ROAD, SKY, CAR = 0, 10, 13
TOP = 32  # title + legend lines above the overlay


def rgb(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = img.getpixel((x, y))  # type: ignore[misc]
    return (r, g, b)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((128, 256, 3), 200, np.uint8), "RGB").save(path)
    return path


def small_maps() -> tuple[np.ndarray, np.ndarray]:
    ref = np.full((128, 256), ROAD, np.uint8)
    cand = ref.copy()
    cand[32:64, 64:128] = CAR
    cand[100, 200] = SKY  # one flipped pixel
    return ref, cand


def test_figure_highlights_exactly_the_disagreeing_pixels(image: Path) -> None:
    ref, cand = small_maps()
    fig = disagreement_figure(image, ref, cand, title="t", width=256)  # overlay at the maps' own size
    assert fig.size == (256, TOP + 128 + 18 + 64)
    overlay = np.asarray(fig)[TOP:TOP + 128]
    magenta = np.all(overlay == HIGHLIGHT_RGB, axis=2)
    expected = np.zeros((128, 256), bool)
    expected[31:65, 63:129] = True  # the car block grown by one pixel
    expected[99:102, 199:202] = True  # the single pixel, grown to 3x3 so it can be seen
    assert np.array_equal(magenta, expected)
    # elsewhere: the image in grey, dimmed (200 * 0.45)
    assert rgb(fig, 5, TOP + 5) == (90, 90, 90)
    # the two class maps below, at half width
    y = TOP + 128 + 18
    assert rgb(fig, 40, y + 20) == protocol.PALETTE_RGB[ROAD]
    assert rgb(fig, 128 + 40, y + 20) == protocol.PALETTE_RGB[CAR]
    assert rgb(fig, 128 + 5, y + 5) == protocol.PALETTE_RGB[ROAD]


def test_one_pixel_stays_visible_when_shrunk(image: Path) -> None:
    ref, cand = small_maps()
    fig = disagreement_figure(image, ref, cand, width=64)  # 4x smaller than the maps
    assert rgb(fig, 50, TOP + 25) == HIGHLIGHT_RGB  # pixel (100, 200) lands in box (25, 50)
    assert rgb(fig, 5, TOP + 5) != HIGHLIGHT_RGB


def test_ignored_pixels_are_cyan(image: Path) -> None:
    ref, cand = small_maps()
    ignored = np.zeros_like(ref, bool)
    ignored[:, 96:] = True
    fig = disagreement_figure(image, ref, cand, ignored=ignored, width=256)
    assert rgb(fig, 70, TOP + 48) == HIGHLIGHT_RGB
    assert rgb(fig, 120, TOP + 48) == IGNORED_RGB
    assert rgb(fig, 200, TOP + 100) == IGNORED_RGB


def test_figure_input_errors(image: Path) -> None:
    ref, cand = small_maps()
    with pytest.raises(ValueError, match="two \\[H, W\\] arrays of one shape"):
        disagreement_figure(image, ref, cand[:, :10])
    with pytest.raises(ValueError, match="ignore mask"):
        disagreement_figure(image, ref, cand, ignored=np.zeros((2, 2), bool))


def logits_with_car(cols: slice | None) -> np.ndarray:
    """Main-head logits: road everywhere, car over ``cols`` of the 129 low-resolution columns."""
    logits = np.zeros(protocol.OUTPUT_SHAPE_CHW, np.float32)
    logits[ROAD] = 1.0
    if cols is not None:
        logits[CAR, :, cols] = 2.0
    return logits


def write_bin(path: Path, array: np.ndarray) -> str:
    array.astype(protocol.BIN_DTYPE).tofile(path)
    return str(path)


def test_write_disagreement_figures(tmp_path: Path, image: Path) -> None:
    ref_bin = write_bin(tmp_path / "a_1.bin", logits_with_car(None))
    cand_bin = write_bin(tmp_path / "b_1.bin", logits_with_car(slice(0, 20)))
    # labelIds: left half road (id 7), right half id 0 (ignored)
    label = np.zeros((protocol.LABEL_H, protocol.LABEL_W), np.uint8)
    label[:, :1024] = 7
    label_path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(label, "L").save(label_path)
    ref_map, cand_map = small_maps()
    items = [
        {"name": "same/sample", "image": str(image), "reference": ref_bin, "candidate": ref_bin},
        {"name": "from_bins", "image": str(image), "reference": ref_bin, "candidate": cand_bin, "label": str(label_path),
         "reference_label": "onnxruntime", "candidate_label": "om"},
        {"name": "from_maps", "image": str(image), "reference": ref_map, "candidate": cand_map},
    ]
    out = tmp_path / "report"
    out.mkdir()
    names = write_disagreement_figures(out, items, prefix="disagreement-om")
    assert names == ["disagreement-om-from_bins.png", "disagreement-om-from_maps.png"]  # agreeing sample: none
    assert sorted(p.name for p in out.iterdir()) == names  # and no temporary files left
    with Image.open(out / names[0]) as fig:
        fig.load()
        assert fig.size == (1024, TOP + 512 + 18 + 256)
        assert rgb(fig, 20, TOP + 256) == HIGHLIGHT_RGB  # car over labelled road
        assert rgb(fig, 512 + 20, TOP + 256) != HIGHLIGHT_RGB  # road = road
    with Image.open(out / names[1]) as fig:
        assert fig.size == (1024, TOP + 512 + 18 + 256)

    # the car on the right half lands on ignored ground truth: cyan
    right = write_bin(tmp_path / "c_1.bin", logits_with_car(slice(110, 129)))
    names = write_disagreement_figures(out, [{**items[1], "candidate": right}], prefix="right")
    with Image.open(out / names[0]) as fig:
        assert rgb(fig, 1010, TOP + 256) == IGNORED_RGB

    everything = write_disagreement_figures(out, items[:1], prefix="all", only_disagreeing=False)
    assert everything == ["all-same_sample.png"]


def test_bad_dumps_are_one_line_errors(tmp_path: Path, image: Path) -> None:
    good = write_bin(tmp_path / "a_1.bin", logits_with_car(None))
    short = write_bin(tmp_path / "short_1.bin", np.zeros(10, np.float32))
    nan = logits_with_car(None)
    nan[0, 0, 0] = np.nan
    nan_bin = write_bin(tmp_path / "nan_1.bin", nan)
    item = {"name": "s", "image": str(image), "reference": good}
    with pytest.raises(DumpsError, match=r"short_1.bin: candidate: 40 bytes, expected 637,260"):
        write_disagreement_figures(tmp_path, [{**item, "candidate": short}])
    with pytest.raises(DumpsError, match=r"nan_1.bin: cannot draw the class map: logits contain 1 NaN/Inf values"):
        write_disagreement_figures(tmp_path, [{**item, "candidate": nan_bin}])


def test_write_figures_adds_disagreements(tmp_path: Path, image: Path) -> None:
    ref_map, cand_map = small_maps()
    assert write_figures(tmp_path, {}, {}) == []
    item = {"name": "x", "image": str(image), "reference": ref_map, "candidate": cand_map}
    context = {"disagreements.om": [item], "disagreements.dumps": [item], "overlays": []}
    assert write_figures(tmp_path, {}, context) == ["disagreement-dumps-x.png", "disagreement-om-x.png"]
    assert (tmp_path / "disagreement-dumps-x.png").is_file()
