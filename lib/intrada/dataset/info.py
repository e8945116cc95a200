"""The legacy benchmark tool's input list, as the seed's ``gen_dataset_info.py bin`` writes it.

One line per bin: ``<index> <path> <width> <height>``, single spaces, index from 0, e.g.
``0 ./pre_dataset_bin/frankfurt_000000_000294_leftImg8bit.bin 512 1024``
(modelzoo-and-ascend-tools.md section 3).

Width and height are copied verbatim from the command line. The seed passes ``512 1024``, so the
"width" field holds 512 and the "height" field 1024, swapped relative to the real 1024x512 input;
the benchmark tool only passes them through for bins, and we keep them as given so our file is
the seed's file. Paths are ``os.path.join(bin_dir, name)``, which is exactly what the seed's
``glob(os.path.join(bin_dir, '*.bin'))`` returns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core import protocol
from ..core.atomic import write_text
from ..core.errors import BinsError


@dataclass(frozen=True)
class InfoEntry:
    """One line of an info file. ``width``/``height`` are the fields as written (see the module doc:
    the seed's are swapped)."""

    index: int
    path: str
    width: int
    height: int


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


def read_info(info_file: str | os.PathLike[str], *, check_files: bool = False) -> list[InfoEntry]:
    """Parse an info file back, refusing anything the seed's writer could not have produced:
    a line without exactly four single-space fields, indices not 0, 1, 2 ... in order, a
    non-integer width or height, lines that disagree on width/height, a path listed twice.
    With ``check_files`` every listed bin must also exist with the protocol's size.
    """
    path = Path(info_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BinsError(path, "info file not found", "write it with `intrada gen-info bin BIN_DIR INFO_FILE 512 1024`") from None
    except UnicodeDecodeError:
        raise BinsError(path, "not a text file", "pass the .info file written by gen-info") from None
    except OSError as exc:
        raise BinsError(path, f"cannot read the info file ({exc.strerror or exc})", "check its permissions") from None
    lines = text.splitlines()
    if not lines:
        raise BinsError(path, "the info file is empty", "regenerate it with `intrada gen-info`")
    entries: list[InfoEntry] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        fields = line.split(" ")
        if len(fields) != 4 or not all(fields):
            raise BinsError(where, f"expected '<index> <path> <width> <height>' separated by single spaces, got {line!r}",
                            "regenerate it with `intrada gen-info`")
        index, bin_path, width, height = fields
        if not index.isdigit() or int(index) != len(entries):
            raise BinsError(where, f"index {index!r}, expected {len(entries)} (indices count from 0 in order)",
                            "regenerate it with `intrada gen-info`")
        if not (width.isdigit() and height.isdigit()):
            raise BinsError(where, f"width and height must be integers, got {width!r} {height!r}",
                            "the seed writes 512 1024")
        entry = InfoEntry(len(entries), bin_path, int(width), int(height))
        if entries and (entry.width, entry.height) != (entries[0].width, entries[0].height):
            raise BinsError(where, f"width/height {width} {height} differ from line 1's "
                            f"{entries[0].width} {entries[0].height}", "regenerate it with `intrada gen-info`")
        if bin_path in seen:
            raise BinsError(where, f"{bin_path} is listed twice", "regenerate it with `intrada gen-info`")
        seen.add(bin_path)
        if check_files:
            try:
                size = os.path.getsize(bin_path)
            except OSError:
                raise BinsError(where, f"listed bin {bin_path} does not exist",
                                "the info file's paths are relative to where it was generated; run from there") from None
            if size != protocol.BIN_BYTES:
                raise BinsError(where, f"listed bin {bin_path} has {size:,} bytes, expected {protocol.BIN_BYTES:,}",
                                "regenerate it with `intrada preprocess`")
        entries.append(entry)
    return entries
