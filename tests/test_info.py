"""intrada.dataset.info against the seed's gen_dataset_info.py bin mode (Ascend/ModelZoo-PyTorch
ACL_PyTorch/contrib/cv/segmentation/IntraDA/gen_dataset_info.py at 053601716)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from intrada.core import protocol
from intrada.core.errors import BinsError
from intrada.dataset.info import list_bins, write_info


@dataclass(frozen=True)
class InfoEntry:
    """One line of an info file. ``width``/``height`` are the fields as written (see the module doc:
    the seed's are swapped)."""

    index: int
    path: str
    width: int
    height: int


def read_info(info_file: str | os.PathLike[str], *, check_files: bool = False) -> list[InfoEntry]:
    """The oracle of write_info: parse an info file back, refusing anything the seed's writer could not
    have produced: a line without exactly four single-space fields, indices not 0, 1, 2 ... in order, a
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

BIN_BYTES = 6_291_456  # 3 x 512 x 1024 float32, from the spec


def _bin(directory: Path, name: str, size: int = BIN_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: the content is irrelevant to the info file
    return path


@pytest.fixture
def bins(tmp_path: Path) -> Path:
    d = tmp_path / "pre_dataset_bin"
    for name in ("munster_000001_000001_leftImg8bit.bin", "frankfurt_000000_000294_leftImg8bit.bin",
                 "lindau_000000_000019_leftImg8bit.bin"):
        _bin(d, name)
    return d


def test_lines_are_exactly_the_seeds(bins: Path, tmp_path: Path) -> None:
    info = tmp_path / "intraDA_deeplabv2_pre_bin_512_1024.info"
    assert write_info(bins, info, "512", "1024") == 3
    assert info.read_text() == (
        f"0 {bins}/frankfurt_000000_000294_leftImg8bit.bin 512 1024\n"
        f"1 {bins}/lindau_000000_000019_leftImg8bit.bin 512 1024\n"
        f"2 {bins}/munster_000001_000001_leftImg8bit.bin 512 1024\n")


def test_relative_dir_is_kept_as_given_like_glob(bins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_info("./pre_dataset_bin", "a.info", 512, 1024)  # ints are written the same way
    assert (tmp_path / "a.info").read_text().splitlines()[0] == \
        "0 ./pre_dataset_bin/frankfurt_000000_000294_leftImg8bit.bin 512 1024"
    write_info("pre_dataset_bin/", "b.info", "512", "1024")
    assert (tmp_path / "b.info").read_text().splitlines()[0].split(" ")[1] == \
        "pre_dataset_bin/frankfurt_000000_000294_leftImg8bit.bin"


def test_width_and_height_are_verbatim_not_corrected(bins: Path, tmp_path: Path) -> None:
    write_info(bins, tmp_path / "x.info", "1024", "0512")
    assert all(line.endswith(" 1024 0512") for line in (tmp_path / "x.info").read_text().splitlines())


def test_only_visible_bin_files_are_listed(bins: Path, tmp_path: Path) -> None:
    _bin(bins, ".frankfurt_000000_000001_leftImg8bit.bin.123-abcd.tmp")  # a killed run's leftover
    _bin(bins, ".hidden.bin")
    (bins / "dir.bin").mkdir()
    (bins / "notes.txt").write_text("x")
    assert [os.path.basename(p) for p in list_bins(bins)] == [
        "frankfurt_000000_000294_leftImg8bit.bin",
        "lindau_000000_000019_leftImg8bit.bin", "munster_000001_000001_leftImg8bit.bin"]


def test_round_trip(bins: Path, tmp_path: Path) -> None:
    info = tmp_path / "x.info"
    write_info(bins, info, "512", "1024")
    entries = read_info(info, check_files=True)
    assert entries[0] == InfoEntry(0, f"{bins}/frankfurt_000000_000294_leftImg8bit.bin", 512, 1024)
    assert [e.index for e in entries] == [0, 1, 2]


def test_atomic_rewrite_leaves_no_temporary_file(bins: Path, tmp_path: Path) -> None:
    info = tmp_path / "x.info"
    info.write_text("old\n")
    write_info(bins, info, "512", "1024")
    assert sorted(os.listdir(tmp_path)) == ["pre_dataset_bin", "x.info"]
    assert info.read_text().startswith("0 ")


# --- errors ---------------------------------------------------------------------------------------

def test_empty_or_missing_bin_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BinsError, match=r"empty: no .bin files in the bin directory\. Hint: run `intrada preprocess"):
        write_info(tmp_path / "empty", tmp_path / "x.info", "512", "1024")
    with pytest.raises(BinsError, match=r"nowhere: bin directory not found"):
        write_info(tmp_path / "nowhere", tmp_path / "x.info", "512", "1024")
    assert not (tmp_path / "x.info").exists()


def test_wrong_sized_bin_is_refused(bins: Path, tmp_path: Path) -> None:
    _bin(bins, "short.bin", BIN_BYTES - 4)
    with pytest.raises(BinsError, match=r"short.bin: 6,291,452 bytes, expected 6,291,456 \(float32 3x512x1024\)"):
        write_info(bins, tmp_path / "x.info", "512", "1024")
    assert not (tmp_path / "x.info").exists()


def test_bad_dimensions_and_paths_with_spaces(bins: Path, tmp_path: Path) -> None:
    with pytest.raises(BinsError, match=r"gen-info width: must be a positive integer, got 'W'"):
        write_info(bins, tmp_path / "x.info", "W", "1024")
    with pytest.raises(BinsError, match=r"gen-info height: must be a positive integer, got '0'"):
        write_info(bins, tmp_path / "x.info", "512", 0)
    spaced = tmp_path / "my bins"
    _bin(spaced, "a.bin")
    with pytest.raises(BinsError, match=r"a.bin: the path contains whitespace"):
        write_info(spaced, tmp_path / "x.info", "512", "1024")


def test_unwritable_info_file(bins: Path, tmp_path: Path) -> None:
    with pytest.raises(BinsError, match=r"x.info: cannot write the info file"):
        write_info(bins, tmp_path / "no" / "such" / "x.info", "512", "1024")


@pytest.mark.parametrize("text, pattern", [
    ("", r"the info file is empty"),
    ("0 a.bin 512\n", r"x.info:1: expected '<index> <path> <width> <height>' separated by single spaces"),
    ("0  a.bin 512 1024\n", r"x.info:1: expected '<index> <path>"),
    ("1 a.bin 512 1024\n", r"x.info:1: index '1', expected 0"),
    ("0 a.bin 512 1024\n2 b.bin 512 1024\n", r"x.info:2: index '2', expected 1"),
    ("0 a.bin 512 x\n", r"x.info:1: width and height must be integers, got '512' 'x'"),
    ("0 a.bin 512 1024\n1 b.bin 1024 512\n", r"x.info:2: width/height 1024 512 differ from line 1's 512 1024"),
    ("0 a.bin 512 1024\n1 a.bin 512 1024\n", r"x.info:2: a.bin is listed twice"),
])
def test_read_info_refuses_malformed_files(tmp_path: Path, text: str, pattern: str) -> None:
    info = tmp_path / "x.info"
    info.write_text(text)
    with pytest.raises(BinsError, match=pattern):
        read_info(info)


def test_read_info_checks_listed_files_on_request(bins: Path, tmp_path: Path) -> None:
    info = tmp_path / "x.info"
    write_info(bins, info, "512", "1024")
    (bins / "lindau_000000_000019_leftImg8bit.bin").unlink()
    assert len(read_info(info)) == 3
    with pytest.raises(BinsError, match=r"x.info:2: listed bin .*lindau_000000_000019_leftImg8bit.bin does not exist"):
        read_info(info, check_files=True)
    with pytest.raises(BinsError, match=r"missing.info: info file not found"):
        read_info(tmp_path / "missing.info")
    (tmp_path / "bin.info").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BinsError, match=r"bin.info: not a text file"):
        read_info(tmp_path / "bin.info")
