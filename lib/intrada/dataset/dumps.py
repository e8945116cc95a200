"""Recorded device outputs ("dumps"): one raw float32 file per sample and per model output.

Three tools name them differently (the legacy benchmark tool as the seed's test/eval_acc_perf.sh at
Ascend/ModelZoo-PyTorch 053601716 reads it; ais_bench, github.com/Ascend/tools
ais-bench_workload/tool/ais_bench and Ascend/msit ait/components/benchmark; msame,
github.com/Ascend/tools msame);
``<stem>`` is the Sample name (image basename up to the first '.'):

* ``ais_bench`` (also msit benchmark and our own ONNX Runtime runner): 0-based,
  ``<stem>_0.bin`` aux, ``<stem>_1.bin`` main;
* ``benchmark`` (legacy benchmark.x86_64 / aarch64): 1-based, ``<stem>_1.bin`` aux,
  ``<stem>_2.bin`` main;
* ``msame``: ``<stem>_output_0.bin`` aux, ``<stem>_output_1.bin`` main.

The convention is detected from the files present for the requested samples. A directory holding
only ``_1.bin`` files is ambiguous (ais_bench main or benchmark aux) and is refused rather than
guessed: evaluating the aux head by mistake would silently cost several mIoU points.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import protocol
from ..core.atomic import atomic_path
from ..core.checks import find_nonfinite
from .cityscapes import Sample
from ..core.errors import DumpsError

HEADS: tuple[str, str] = ("aux", "main")
_OUTPUT_INDEX = {"aux": protocol.AUX_OUTPUT_INDEX, "main": protocol.MAIN_OUTPUT_INDEX}
# file suffix per convention and head: the tools number the files by ONNX output index, ais_bench
# and msame from 0, the legacy benchmark from 1
CONVENTIONS: dict[str, dict[str, str]] = {
    "ais_bench": {h: f"_{i}.bin" for h, i in _OUTPUT_INDEX.items()},
    "benchmark": {h: f"_{i + 1}.bin" for h, i in _OUTPUT_INDEX.items()},
    "msame": {h: f"_output_{i}.bin" for h, i in _OUTPUT_INDEX.items()},
}
#: what --dump-format accepts (the CLI and the gate's option): a convention, or "auto" to detect it
DUMP_FORMATS: tuple[str, ...] = ("auto", *CONVENTIONS)
CONVENTION_OPTION = "convention= (CLI: --dump-format {" + ",".join(CONVENTIONS) + "})"
# longest first, so `<stem>_output_1.bin` is never read as `<stem>_output` + `_1.bin`
_ALL_SUFFIXES = tuple(sorted({s for c in CONVENTIONS.values() for s in c.values()}, key=len, reverse=True))
# any `<stem>_<k>.bin` or `<stem>_output_<k>.bin`, to tell other samples' dumps from stray files
_DUMP_RE = re.compile(r"^(?P<stem>.+?)(?P<suffix>_output_\d+\.bin|_\d+\.bin)$")
_SHAPE = protocol.OUTPUT_SHAPE_CHW
_VALUES = int(np.prod(_SHAPE))
_SHOW = 3  # names listed in an error before "..."


def _split_known(file_name: str, wanted: set[str]) -> tuple[str, str] | None:
    """(stem, suffix) when the file is a known-suffix dump of a wanted sample. Matching against
    the sample names, not a regex alone, keeps stems that themselves end in _<k> unambiguous."""
    for suffix in _ALL_SUFFIXES:
        if file_name.endswith(suffix) and file_name[: -len(suffix)] in wanted:
            return file_name[: -len(suffix)], suffix
    return None


def _first(names: Iterable[str], n: int = _SHOW) -> str:
    names = sorted(names)
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _names_of(samples: Sequence[Sample | str]) -> tuple[str, ...]:
    names = tuple(s.name if isinstance(s, Sample) else str(s) for s in samples)
    if not names:
        raise DumpsError("dumps", "no samples given", "pass the samples whose dumps should be read")
    return names


def _check_size(path: Path, size: int) -> None:
    expected = protocol.DUMP_BYTES
    if size == expected:
        return
    shape = "x".join(map(str, _SHAPE))
    if size > expected and size % expected == 0:
        n = size // expected
        raise DumpsError(path, f"{size:,} bytes, expected {expected:,} (float32 {shape}); it is exactly {n} "
                         f"samples' worth, so it looks like an unsplit batch of {n}",
                         "split batch outputs into one file per sample (benchmark and ais_bench do this "
                         "themselves; re-run the tool with its per-sample output)")
    if size < expected:
        raise DumpsError(path, f"{size:,} bytes, expected {expected:,} (float32 {shape}): the file is truncated",
                         "the device run was interrupted or the disk filled up; re-run inference")
    raise DumpsError(path, f"{size:,} bytes, expected {expected:,} (float32 {shape})",
                     "check that these are outputs of the IntraDA 512x1024 model saved as BIN (not TXT or NPY)")


@dataclass(frozen=True)
class DumpSet:
    """Validated dumps of a list of samples. Plain paths and strings only, so it pickles into
    worker processes; files are read on demand."""

    directory: Path
    convention: str
    names: tuple[str, ...]
    has_aux: bool

    @classmethod
    def open(cls, directory: str | os.PathLike[str], samples: Sequence[Sample | str],
             convention: str | None = None) -> "DumpSet":
        """Find, classify and size-check the dumps of ``samples`` in ``directory``.

        ``convention`` is one of :data:`CONVENTIONS` or None to detect it. Dumps of samples not
        asked for are ignored (a subset may be evaluated); every asked-for sample needs its main
        head file. Raises DumpsError for an ambiguous or mixed layout, missing, unknown or
        wrongly sized files.
        """
        directory = Path(directory)
        names = _names_of(samples)
        if convention is not None and convention not in CONVENTIONS:
            raise DumpsError(directory, f"unknown dump convention {convention!r}",
                             f"choose one of {', '.join(CONVENTIONS)} with {CONVENTION_OPTION}")
        if not directory.is_dir():
            raise DumpsError(directory, "dump directory does not exist or is not a directory",
                             "pass the folder the device tool wrote its .bin outputs to")
        wanted = set(names)
        found: dict[str, dict[str, int]] = {}  # stem -> suffix -> size
        unknown: list[str] = []
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.name.endswith(".bin") or not entry.is_file():
                    continue
                known = _split_known(entry.name, wanted)
                if known is None:
                    m = _DUMP_RE.match(entry.name)
                    if m is None or m.group("stem") in wanted:
                        # not a dump name at all, or an output index no convention has (e.g. _3.bin)
                        unknown.append(entry.name)
                    # otherwise another sample's output: evaluating a subset is allowed
                    continue
                stem, suffix = known
                found.setdefault(stem, {})[suffix] = entry.stat().st_size
        if unknown:
            raise DumpsError(directory, f"{len(unknown)} .bin file(s) match no dump convention: {_first(unknown)}",
                             "dumps are <image stem>_<k>.bin (ais_bench, benchmark) or <stem>_output_<k>.bin "
                             "(msame); move other files out of the dump directory")
        if not found:
            raise DumpsError(directory, f"no dumps for any of the {len(names)} samples "
                             f"(looked for e.g. {names[0]}_1.bin)", _empty_dir_hint(directory))

        present = {suffix for per in found.values() for suffix in per}
        if convention is None:
            convention = _detect(directory, present, found)
        else:
            foreign = present - set(CONVENTIONS[convention].values())
            if foreign:
                example = next(f"{s}{x}" for s, per in sorted(found.items()) for x in sorted(per) if x in foreign)
                raise DumpsError(directory, f"files such as {example} do not belong to the {convention} convention "
                                 f"(aux {CONVENTIONS[convention]['aux']}, main {CONVENTIONS[convention]['main']}): "
                                 "mixed conventions", "keep one tool's outputs per directory")

        suffixes = CONVENTIONS[convention]
        missing = [n for n in names if suffixes["main"] not in found.get(n, {})]
        if missing:
            raise DumpsError(directory, f"main-head dumps ({suffixes['main']}) missing for {len(missing)} of "
                             f"{len(names)} samples: {_first(missing)}",
                             "run inference on every sample, or evaluate a subset explicitly "
                             "(max_images= / --max-images, or pass only those samples)")
        with_aux = [n for n in names if suffixes["aux"] in found[n]]
        has_aux = len(with_aux) == len(names)
        for n in names:
            for head in HEADS:
                size = found[n].get(suffixes[head])
                if size is not None:
                    _check_size(directory / f"{n}{suffixes[head]}", size)
        return cls(directory, convention, names, has_aux)

    def path(self, name: str, head: str = "main") -> Path:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        return self.directory / f"{name}{CONVENTIONS[self.convention][head]}"

    def read(self, name: str, head: str = "main") -> np.ndarray:
        """float32 [19, 65, 129] logits of one sample and head, checked for size and NaN/Inf."""
        if name not in self.names:
            raise DumpsError(self.directory, f"sample {name!r} is not part of this dump set",
                             "open the DumpSet with every sample you want to read")
        path = self.path(name, head)
        try:
            data = np.fromfile(path, dtype=protocol.BIN_DTYPE)
        except FileNotFoundError:
            raise DumpsError(path, f"{head}-head dump not found", "re-run inference for this sample" if head == "main"
                             else "this run did not record the aux head; only the main head is evaluated") from None
        if data.size != _VALUES:
            _check_size(path, data.size * protocol.BIN_DTYPE.itemsize)
        bad = find_nonfinite(data)
        if bad is not None:
            raise DumpsError(path, f"{bad.count} non-finite values ({bad.nan} NaN, {bad.inf} Inf) of {data.size:,}",
                             "the device produced invalid logits (overflow in fp16?); check the OM conversion")
        return data.reshape(_SHAPE).astype(np.float32, copy=False)

    def __len__(self) -> int:
        return len(self.names)


def _detect(directory: Path, present: set[str], found: dict[str, dict[str, int]]) -> str:
    def example(suffix: str) -> str:
        return next(f"{s}{suffix}" for s, per in sorted(found.items()) if suffix in per)

    msame = {s for s in present if s.startswith("_output_")}
    plain = present - msame
    if msame and plain:
        raise DumpsError(directory, f"mixed conventions: msame files ({example(min(msame))}) next to "
                         f"ais_bench/benchmark files ({example(min(plain))})", "keep one tool's outputs per directory")
    if msame:
        return "msame"
    if "_0.bin" in plain and "_2.bin" in plain:
        raise DumpsError(directory, f"mixed conventions: 0-based ais_bench files ({example('_0.bin')}) next to "
                         f"1-based benchmark files ({example('_2.bin')})", "keep one tool's outputs per directory")
    if "_0.bin" in plain:
        return "ais_bench"
    if "_2.bin" in plain:
        return "benchmark"
    raise DumpsError(directory, f"ambiguous dump names: only <stem>_1.bin files (e.g. {example('_1.bin')}), which are "
                     "the main head for ais_bench but the aux head for the legacy benchmark tool",
                     f"choose the convention with {CONVENTION_OPTION}")


def _empty_dir_hint(directory: Path) -> str:
    subdirs = sorted(p.name for p in directory.iterdir()
                     if p.is_dir() and any(f.suffix == ".bin" for f in p.iterdir()))
    if subdirs:
        # ais_bench without --output_dirname and msame write into a timestamped sub-folder
        # (multi-device ais_bench into device<N>/); the user passed its parent.
        return f"the .bin files are one level down; pass the sub-folder ({_first(subdirs)})"
    if any(f.suffix in (".npy", ".txt") for f in directory.iterdir()):
        return "found .npy/.txt outputs; re-run the device tool with --outfmt BIN"
    return "check the directory and that the dump names start with the image stems (<city>_<seq>_<frame>_leftImg8bit)"


def write_dumps(directory: str | os.PathLike[str], name: str, aux: np.ndarray, main: np.ndarray) -> tuple[Path, Path]:
    """Write one sample's two outputs in the ais_bench layout; each file appears atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for head, arr in (("aux", aux), ("main", main)):
        arr = np.asarray(arr)
        if arr.shape not in (_SHAPE, (1, *_SHAPE)):
            raise ValueError(f"{head} output for {name} has shape {arr.shape}, expected {list(_SHAPE)}")
        final = directory / f"{name}{CONVENTIONS['ais_bench'][head]}"
        # the temporary name does not end in .bin, so a concurrent DumpSet.open never sees it
        with atomic_path(final) as tmp:
            np.ascontiguousarray(arr, dtype=protocol.BIN_DTYPE).tofile(tmp)
        paths.append(final)
    return paths[0], paths[1]
