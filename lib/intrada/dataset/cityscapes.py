"""Cityscapes reader: the official layout, a deterministic order, labels mapped to trainIds.

Layout: ``<root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
``<root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png`` (ADVENT replaces "leftImg8bit" by
"gtFine_labelIds" in the list line). Upstream and the seed walk the tree in os.walk / glob order;
we sort by (city, file name) so every run, runner and report sees the same order.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import protocol
from ..core.errors import DatasetError


@dataclass(frozen=True)
class Sample:
    """One val image. ``name`` is the image basename up to the first '.', which is also the stem
    of its preprocessed ``.bin`` and of every device dump (``<name>_1.bin`` ...)."""

    name: str
    city: str
    image: Path
    label: Path | None

    @property
    def label_required(self) -> Path:
        if self.label is None:
            raise DatasetError(self.image, "has no ground-truth label", "the split was listed without labels")
        return self.label


def stem_of(path: str | os.PathLike[str]) -> str:
    """Basename up to the first '.', the seed's naming rule for .bin and dump files."""
    return os.path.basename(os.fspath(path)).split(".", 1)[0]


def label_path_for(root: Path, split: str, city: str, image_file: str) -> Path:
    return root / "gtFine" / split / city / image_file.replace("leftImg8bit", "gtFine_labelIds")


def list_samples(root: str | os.PathLike[str], split: str = "val", *, require_labels: bool = True,
                 max_images: int | None = None) -> list[Sample]:
    """All images of ``split`` sorted by (city, name); each with its label when present.

    Raises DatasetError for a missing root, a tree that is not Cityscapes, an empty split, or (with
    ``require_labels``) images without a label file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "Cityscapes root does not exist or is not a directory",
                           "pass the folder that contains leftImg8bit/ and gtFine/")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise DatasetError("max_images", f"must be a positive integer, got {max_images!r}",
                           "leave it unset for the whole split")
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        hint = "pass the folder that contains leftImg8bit/ and gtFine/ (the official layout)"
        # The usual slip is pointing one level too deep, at leftImg8bit/ or at one of its splits.
        if root.name == "leftImg8bit":
            hint = f"this is leftImg8bit/ itself; pass the folder above it, {root.parent}"
        elif root.parent.name == "leftImg8bit":
            hint = f"this is inside leftImg8bit/; pass {root.parent.parent}"
        raise DatasetError(root, f"not a Cityscapes tree: {image_dir.relative_to(root)}/ is missing", hint)
    samples: list[Sample] = []
    missing: list[Path] = []
    for city in sorted(p.name for p in image_dir.iterdir() if p.is_dir()):
        for file in sorted(f for f in os.listdir(image_dir / city) if f.endswith(protocol.IMAGE_SUFFIX)):
            label = label_path_for(root, split, city, file)
            if not label.is_file():
                missing.append(label)
                label_opt: Path | None = None
            else:
                label_opt = label
            samples.append(Sample(stem_of(file), city, image_dir / city / file, label_opt))
    if not samples:
        raise DatasetError(image_dir, f"the {split} split is empty: no <city>/*{protocol.IMAGE_SUFFIX} files",
                           "check the path; images must sit in one folder per city")
    if require_labels and missing:
        raise DatasetError(missing[0], f"label file missing ({len(missing)} of {len(samples)} images have no "
                           f"gtFine labelIds)", "extract gtFine_trainvaltest.zip into the same root")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(image_dir, f"two images share the name {dup!r}", "image names must be unique across cities")
    if max_images is not None:
        samples = samples[:max_images]
    return samples


_LOOKUP = protocol.label_lookup_table()
# The same lookup as a Pillow point table for 8-bit labels, ids above MAX_LABEL_ID sent to a value no
# valid id takes: Pillow maps while it still holds the decoded image, which costs less than numpy's
# gather after the copy out (a third of the decode time per 2048x1024 label).
_OUT_OF_RANGE = 254
_POINT_TABLE = [int(t) for t in _LOOKUP[: protocol.MAX_LABEL_ID + 1]] + [_OUT_OF_RANGE] * (255 - protocol.MAX_LABEL_ID)
assert len(_POINT_TABLE) == 256 and _OUT_OF_RANGE not in _POINT_TABLE[: protocol.MAX_LABEL_ID + 1]


def load_train_ids(label_path: str | os.PathLike[str]) -> np.ndarray:
    """Read a gtFine_labelIds PNG and map it to trainIds: uint8 (1024, 2048), 255 = ignore.

    Upstream resizes with NEAREST to (2048, 1024), a no-op at native size; any other size is refused
    rather than silently resampled, because it means the file is not a Cityscapes label.
    """
    label_path = Path(label_path)
    try:
        with Image.open(label_path) as im:
            im.load()
            mode, size = im.mode, im.size
            if mode == "L" and size == (protocol.LABEL_W, protocol.LABEL_H):  # the official files
                train_ids = np.array(im.point(_POINT_TABLE))  # a writable copy, as on every path
                if not (train_ids == _OUT_OF_RANGE).any():
                    return train_ids
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(label_path, "label file not found", "check the Cityscapes root") from None
    except IsADirectoryError:
        raise DatasetError(label_path, "is a directory, expected a labelIds PNG", "check the Cityscapes root") from None
    except Image.UnidentifiedImageError:
        raise DatasetError(label_path, "not an image Pillow can read (corrupt or not a PNG)", "re-extract gtFine") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise DatasetError(label_path, f"cannot decode label PNG ({exc})", "re-extract gtFine") from None
    if size != (protocol.LABEL_W, protocol.LABEL_H):
        raise DatasetError(label_path, f"label is {size[0]}x{size[1]}, expected "
                           f"{protocol.LABEL_W}x{protocol.LABEL_H}", "use the official gtFine labelIds files")
    if mode not in ("L", "P", "I", "I;16") or arr.ndim != 2:
        raise DatasetError(label_path, f"label PNG has mode {mode}, expected a single-channel labelIds map",
                           "use *_gtFine_labelIds.png, not the color or instance files")
    if arr.dtype != np.uint8:
        if arr.min() < -1 or arr.max() > protocol.MAX_LABEL_ID:
            raise DatasetError(label_path, f"label ids range {int(arr.min())}..{int(arr.max())}, expected -1..33",
                               "use *_gtFine_labelIds.png, not trainIds or instanceIds")
        arr = np.where(arr < 0, 255, arr).astype(np.uint8)  # -1 maps to ignore like any unlisted id
    elif int(arr.max()) > protocol.MAX_LABEL_ID:
        raise DatasetError(label_path, f"label ids go up to {int(arr.max())}, expected 0..33",
                           "use *_gtFine_labelIds.png, not trainIds or a colour map")
    return _LOOKUP[arr]
