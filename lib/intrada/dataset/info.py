"""The legacy benchmark tool's input list, as the seed's ``gen_dataset_info.py bin`` writes it.

One line per bin: ``<index> <path> <width> <height>``, single spaces, index from 0, e.g.
``0 ./pre_dataset_bin/frankfurt_000000_000294_leftImg8bit.bin 512 1024``
(Ascend/ModelZoo-PyTorch ACL_PyTorch/contrib/cv/segmentation/IntraDA/gen_dataset_info.py and test/eval_acc_perf.sh at commit 053601716; both were deleted in
f979ee982, when the submission moved to ais_bench).

Width and height are copied verbatim from the command line. The seed passes ``512 1024``, so the
"width" field holds 512 and the "height" field 1024, swapped relative to the real 1024x512 input;
the benchmark tool only passes them through for bins, and we keep them as given so our file is
the seed's file. Paths are ``os.path.join(bin_dir, name)``, which is exactly what the seed's
``glob(os.path.join(bin_dir, '*.bin'))`` returns.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core import protocol
from ..core.atomic import write_text
from ..core.errors import BinsError


def _dimension(value: str | int, which: str) -> str:
    text = str(value)
    if not text.isdigit() or int(text) < 1:
        raise BinsError(f"gen-info {which}", f"must be a positive integer, got {text!r}",
                        "the seed passes 512 1024")
    return text


def list_bins(bin_dir: str | os.PathLike[str]) -> list[str]:
    """``os.path.join(bin_dir, name)`` for every ``*.bin`` file, sorted by name.

    The seed used glob order, which is file-system order and differs between machines; sorting is
    the one deliberate change, so an info file is reproducible. Like glob, hidden files (our
    temporary files start with '.') are skipped; unlike glob, directories named ``*.bin`` are too.
    """
    directory = os.fspath(bin_dir)
    if not os.path.isdir(directory):
        raise BinsError(directory, "bin directory not found", "run `intrada preprocess CITYSCAPES_ROOT DIR` first")
    names = sorted(n for n in os.listdir(directory)
                   if n.endswith(".bin") and not n.startswith(".") and os.path.isfile(os.path.join(directory, n)))
    if not names:
        raise BinsError(directory, "no .bin files in the bin directory", "run `intrada preprocess CITYSCAPES_ROOT DIR` first")
    return [os.path.join(directory, n) for n in names]


def write_info(bin_dir: str | os.PathLike[str], info_file: str | os.PathLike[str], width: str | int,
               height: str | int) -> int:
    """Write the info file for every bin in ``bin_dir``; return the number of lines.

    Every bin must have the protocol's size (a truncated bin would reach the device unnoticed), and
    no path may contain whitespace (the tool splits lines on spaces). The file is written under a
    temporary name and renamed, so a reader never sees half of it.
    """
    w, h = _dimension(width, "width"), _dimension(height, "height")
    paths = list_bins(bin_dir)
    for path in paths:
        if any(ch.isspace() for ch in path):
            raise BinsError(path, "the path contains whitespace, which the info format cannot hold",
                            "move the bins to a folder without spaces")
        size = os.path.getsize(path)
        if size != protocol.BIN_BYTES:
            raise BinsError(path, f"{size:,} bytes, expected {protocol.BIN_BYTES:,} (float32 "
                            f"{'x'.join(map(str, protocol.INPUT_SHAPE_CHW))})", "regenerate it with `intrada preprocess`")
    text = "".join(f"{i} {path} {w} {h}\n" for i, path in enumerate(paths))
    target = Path(info_file)
    try:
        write_text(target, text)
    except OSError as exc:
        raise BinsError(target, f"cannot write the info file ({exc.strerror or exc})",
                        "check that its folder exists and is writable") from None
    return len(paths)
