"""intrada.dataset.cityscapes against valeoai/ADVENT advent/dataset/cityscapes.py: the official layout, a
sorted order, labels mapped labelId -> trainId with 255 ignored, and one clear error per bad tree."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _cityscapes_tree import image_path, label_array, label_path, make_tree, write_label
from intrada.dataset.cityscapes import Sample, label_path_for, list_samples, load_train_ids, stem_of
from intrada.core.errors import DatasetError

# Spec section 4, "Label" (info.json label2train), restated so that a drift in intrada.core.protocol fails.
SPEC_LABEL2TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """munster first, then lindau, frankfurt's indices descending: creation order is not sorted."""
    root = tmp_path_factory.mktemp("cityscapes")
    make_tree(root, {"munster": [2], "lindau": [0], "frankfurt": [9, 3]})
    return root


@pytest.fixture
def copy(tree: Path, tmp_path: Path) -> Path:
    """A private copy of ``tree`` that a test may damage."""
    return Path(shutil.copytree(tree, tmp_path / "copy"))


# --- listing --------------------------------------------------------------------------------------

def test_samples_are_sorted_by_city_then_name(tree: Path) -> None:
    samples = list_samples(tree)
    assert [s.name for s in samples] == [
        "frankfurt_000003_000064_leftImg8bit", "frankfurt_000009_000178_leftImg8bit",
        "lindau_000000_000007_leftImg8bit", "munster_000002_000045_leftImg8bit"]
    assert [s.city for s in samples] == ["frankfurt", "frankfurt", "lindau", "munster"]
    first = samples[0]
    assert first.image == tree / "leftImg8bit/val/frankfurt/frankfurt_000003_000064_leftImg8bit.png"
    assert first.label == tree / "gtFine/val/frankfurt/frankfurt_000003_000064_gtFine_labelIds.png"
    assert first.label_required == first.label


def test_order_does_not_depend_on_creation_order(tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    for city, index in [("frankfurt", 3), ("munster", 2), ("frankfurt", 9), ("lindau", 0)]:
        for make in (image_path, label_path):
            dst = make(other, "val", city, index)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(make(tree, "val", city, index), dst)
    assert [s.name for s in list_samples(other)] == [s.name for s in list_samples(tree)]
    assert list_samples(tree) == list_samples(tree)


def test_max_images_takes_the_first_in_sorted_order(tree: Path) -> None:
    assert [s.name for s in list_samples(tree, max_images=2)] == [s.name for s in list_samples(tree)[:2]]
    with pytest.raises(DatasetError, match=r"max_images: must be a positive integer, got 0"):
        list_samples(tree, max_images=0)


def test_other_files_in_a_city_folder_are_ignored(copy: Path) -> None:
    city = copy / "leftImg8bit/val/frankfurt"
    (city / "notes.txt").write_text("x")
    (city / "frankfurt_000003_000064_gtFine_color.png").write_bytes(b"")
    assert len(list_samples(copy)) == 4


def test_names_helpers() -> None:
    assert stem_of("a/b/frankfurt_000000_000294_leftImg8bit.png") == "frankfurt_000000_000294_leftImg8bit"
    assert stem_of("x.tar.gz") == "x"  # up to the first '.', the seed's rule
    assert label_path_for(Path("/r"), "val", "lindau", "lindau_000001_000002_leftImg8bit.png") == \
        Path("/r/gtFine/val/lindau/lindau_000001_000002_gtFine_labelIds.png")


# --- bad trees ------------------------------------------------------------------------------------

def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere: Cityscapes root does not exist or is not a directory\. "
                                           r"Hint: pass the folder that contains leftImg8bit/ and gtFine/"):
        list_samples(tmp_path / "nowhere")


def test_not_a_cityscapes_tree(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DatasetError, match=r"not a Cityscapes tree: leftImg8bit/val/ is missing\. Hint: pass the "
                                           r"folder that contains leftImg8bit/ and gtFine/ \(the official layout\)"):
        list_samples(tmp_path)


def test_pointing_at_leftimg8bit_says_which_folder_to_pass(tree: Path) -> None:
    with pytest.raises(DatasetError, match=r"Hint: this is leftImg8bit/ itself; pass the folder above it"):
        list_samples(tree / "leftImg8bit")
    with pytest.raises(DatasetError, match=r"Hint: this is inside leftImg8bit/; pass "):
        list_samples(tree / "leftImg8bit" / "val")


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit/val/frankfurt").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"the val split is empty: no <city>/\*_leftImg8bit.png files"):
        list_samples(tmp_path)


def test_images_outside_city_folders_are_an_empty_split(copy: Path) -> None:
    val = copy / "leftImg8bit/val"
    for png in list(val.glob("*/*.png")):
        png.rename(val / png.name)
    for city in [p for p in val.iterdir() if p.is_dir()]:
        city.rmdir()
    with pytest.raises(DatasetError, match=r"split is empty.*one folder per city"):
        list_samples(copy)


def test_missing_label_is_named(copy: Path) -> None:
    gone = label_path(copy, "val", "lindau", 0)
    gone.unlink()
    with pytest.raises(DatasetError, match=rf"{gone}: label file missing \(1 of 4 images have no gtFine labelIds\)"):
        list_samples(copy)
    samples = list_samples(copy, require_labels=False)
    [lindau] = [s for s in samples if s.city == "lindau"]
    assert lindau.label is None
    with pytest.raises(DatasetError, match=r"lindau_000000_000007_leftImg8bit.png: has no ground-truth label"):
        lindau.label_required


def test_duplicate_names_across_cities(copy: Path) -> None:
    src = image_path(copy, "val", "lindau", 0)
    dst = copy / "leftImg8bit/val/zurich" / src.name
    dst.parent.mkdir()
    shutil.copy(src, dst)
    with pytest.raises(DatasetError, match=r"two images share the name 'lindau_000000_000007_leftImg8bit'"):
        list_samples(copy, require_labels=False)


# --- labels ---------------------------------------------------------------------------------------

def test_label_ids_map_to_train_ids_like_info_json(tmp_path: Path) -> None:
    ids = np.zeros((1024, 2048), np.uint8)
    ids[:, :34 * 60] = np.repeat(np.arange(34, dtype=np.uint8), 60)[None, :]  # every id 0..33, 60 columns each
    got = load_train_ids(write_label(tmp_path / "l.png", 0, array=ids))
    assert got.dtype == np.uint8 and got.shape == (1024, 2048)
    for label_id in range(34):
        column = got[:, label_id * 60]
        assert (column == SPEC_LABEL2TRAIN.get(label_id, 255)).all(), label_id
    assert (got[:, 34 * 60:] == 255).all()  # id 0 (unlabeled) is ignored


def test_tree_labels_load(tree: Path) -> None:
    s = list_samples(tree)[0]
    with Image.open(s.label_required) as im:
        ids = np.asarray(im)
    lut = np.full(256, 255, np.uint8)
    for k, v in SPEC_LABEL2TRAIN.items():
        lut[k] = v
    np.testing.assert_array_equal(load_train_ids(s.label_required), lut[ids])


def test_sixteen_bit_label_ids_are_accepted(tmp_path: Path) -> None:
    ids = label_array(5)
    path = tmp_path / "l16.png"
    Image.fromarray(ids.astype(np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    np.testing.assert_array_equal(load_train_ids(path), load_train_ids(write_label(tmp_path / "l8.png", 0, array=ids)))


def test_label_ids_above_33_are_refused(tmp_path: Path) -> None:
    ids = label_array(1)
    ids[5, 5] = 34
    with pytest.raises(DatasetError, match=r"l.png: label ids go up to 34, expected 0..33\. Hint: use "
                                           r"\*_gtFine_labelIds.png, not trainIds"):
        load_train_ids(write_label(tmp_path / "l.png", 0, array=ids))


def test_sixteen_bit_label_ids_above_33_are_refused(tmp_path: Path) -> None:
    ids = label_array(4).astype(np.uint16)
    ids[0, 0] = 40
    path = tmp_path / "w.png"
    Image.fromarray(ids).save(path)
    with pytest.raises(DatasetError, match=r"w.png: label ids range 0..40, expected -1..33"):
        load_train_ids(path)


def test_train_id_encoded_label_is_refused(tmp_path: Path) -> None:
    lut = np.full(256, 255, np.uint8)
    for k, v in SPEC_LABEL2TRAIN.items():
        lut[k] = v
    train_ids = lut[label_array(2)]  # what a trainIds file holds: 0..18 and 255
    with pytest.raises(DatasetError, match=r"t.png: label ids go up to 255, expected 0..33"):
        load_train_ids(write_label(tmp_path / "t.png", 0, array=train_ids))


def test_colour_label_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    Image.new("RGB", (2048, 1024), (128, 64, 128)).save(path)
    with pytest.raises(DatasetError, match=r"c.png: label PNG has mode RGB, expected a single-channel labelIds map"):
        load_train_ids(path)


def test_wrong_label_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"s.png: label is 1024x512, expected 2048x1024"):
        load_train_ids(write_label(tmp_path / "s.png", 0, size=(1024, 512)))


def test_corrupt_and_missing_labels(tmp_path: Path) -> None:
    good = write_label(tmp_path / "good.png", 0)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"trunc.png: cannot decode label PNG \(image file is truncated\)"):
        load_train_ids(tmp_path / "trunc.png")
    (tmp_path / "junk.png").write_bytes(b"GIF89a not really")
    with pytest.raises(DatasetError, match=r"junk.png: not an image Pillow can read"):
        load_train_ids(tmp_path / "junk.png")
    with pytest.raises(DatasetError, match=r"none.png: label file not found"):
        load_train_ids(tmp_path / "none.png")


def test_sample_is_frozen(tree: Path) -> None:
    s: Sample = list_samples(tree)[0]
    with pytest.raises(AttributeError):
        s.name = "x"  # type: ignore[misc]
