"""Image -> network input, byte-identical to ADVENT's arithmetic, for one image or a whole split.

ADVENT: ``Image.open(p).convert('RGB').resize((1024, 512), BICUBIC)`` -> ``np.asarray(float32)``
-> ``[:, :, ::-1]`` (BGR) -> ``- IMG_MEAN`` (float32) -> ``transpose(2, 0, 1)``.

A preprocessed ``.bin`` is that array's raw bytes (little-endian float32, C order, no header), named
``<sample.name>.bin`` like the model-zoo's intrada_preprocess.py writes them.
"""
from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.context
import os
import shutil
import struct
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core import protocol
from ..core.atomic import atomic_path, new_token, temp_path
from ..core.checks import find_nonfinite
from .cityscapes import Sample
from ..core.errors import BinsError, DatasetError, IntradaError

# Everything Pillow raises for an unreadable or damaged image file (UnidentifiedImageError and
# "image file is truncated" / "broken data stream" are OSErrors; the rest come from chunk parsing).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


def _resized_rgb_image(image_path: Path) -> Image.Image:
    """Decode, check the size, convert to RGB only when needed, resize: a Pillow image (512x1024)."""
    try:
        with Image.open(image_path) as im:
            # The header alone gives the size, so a wrong-sized file is refused before decoding it.
            if im.size != (protocol.IMAGE_W, protocol.IMAGE_H):
                raise DatasetError(image_path, f"image is {im.size[0]}x{im.size[1]}, expected "
                                   f"{protocol.IMAGE_W}x{protocol.IMAGE_H}",
                                   "use the original leftImg8bit PNGs (the protocol resizes 2048x1024 to 1024x512)")
            # convert('RGB') of an RGB image is a plain copy, so skipping it changes no byte.
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return rgb.resize((protocol.INPUT_W, protocol.INPUT_H), Image.Resampling[protocol.RESIZE_FILTER])
    except FileNotFoundError:
        raise DatasetError(image_path, "image not found", "check the Cityscapes root") from None
    except DatasetError:
        raise
    except Image.UnidentifiedImageError:
        raise DatasetError(image_path, "not an image Pillow can read (corrupt or not a PNG)",
                           "re-extract leftImg8bit") from None
    except _DECODE_ERRORS as exc:
        raise DatasetError(image_path, f"cannot decode image ({exc})", "re-extract leftImg8bit") from None


_RGB = "RGB"  # the decoded image's channel order (Image.convert("RGB"))


def load_resized_rgb(image_path: str | os.PathLike[str]) -> np.ndarray:
    """uint8 HWC RGB at 512x1024, resized with Pillow's ``protocol.RESIZE_FILTER`` exactly as upstream."""
    return np.asarray(_resized_rgb_image(Path(image_path)), dtype=np.uint8)


def to_network_input(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW in ``protocol.CHANNEL_ORDER`` (BGR) minus the float32 caffe mean,
    times ``protocol.SCALE`` (1: no scaling).

    ``out`` (float32, 3x512x1024, C-contiguous) is filled and returned when given, so a loop over
    many images reuses one buffer instead of faulting in 6 MB of fresh pages per image.
    """
    if out is None:
        out = np.empty(protocol.INPUT_SHAPE_CHW, dtype=np.float32)
    # One pass per channel: output channel c is the image channel named CHANNEL_ORDER[c]. uint8 ->
    # float32 is exact and the float32 subtraction rounds once, exactly like upstream's float32 array
    # minus mean.
    for c, channel in enumerate(protocol.CHANNEL_ORDER):
        np.subtract(rgb[:, :, _RGB.index(channel)], protocol.MEAN_BGR[c], out=out[c], dtype=np.float32)
    if protocol.SCALE != 1.0:
        out *= np.float32(protocol.SCALE)
    return out


def preprocess_image(image_path: str | os.PathLike[str]) -> np.ndarray:
    """float32 (3, 512, 1024) network input for one image."""
    return to_network_input(load_resized_rgb(image_path))


# --- a whole split ------------------------------------------------------------------------------

def bin_name(sample_name: str) -> str:
    return sample_name + ".bin"


def _write_bin(image_path: Path, final: Path, token: str, buffer: np.ndarray) -> None:
    """Preprocess one image into ``final`` through a temporary file and an atomic rename."""
    array = to_network_input(np.asarray(_resized_rgb_image(image_path)), out=buffer)
    if sys.byteorder != "little":  # the bin format is little-endian whatever the host
        array = array.astype(protocol.BIN_DTYPE)
    try:
        # The per-run token names the temporary file, so the run can delete exactly its own
        # leftovers when a worker is killed mid-write (no cleanup runs then).
        with atomic_path(final, token=token) as tmp:
            # No fsync: the guarantee is against killed processes, not power loss, and 500 fsyncs
            # of 6 MB would cost more than the preprocessing itself.
            array.tofile(tmp)
    except OSError as exc:
        # numpy reports a short write without an errno, so look at the disk before blaming anything else.
        try:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or shutil.disk_usage(final.parent).free < protocol.BIN_BYTES
        except OSError:
            full = False
        if full:
            raise BinsError(final, "disk full while writing the bin",
                            "free space on that disk or pass --cache-dir DIR (or another output folder) on another "
                            "one") from None
        raise BinsError(final, f"cannot write bin ({exc.strerror or exc})",
                        "check free space and write permission of the output directory") from None


# Per worker process: one output buffer reused for every image that worker handles.
_worker_buffer: np.ndarray | None = None


def _worker_chunk(jobs: list[tuple[str, str]], token: str) -> int:
    """Preprocess a chunk in a worker process; returns the images written. The first error ends the
    chunk and reaches the parent as itself (IntradaError.__reduce__ pickles all its fields)."""
    global _worker_buffer
    if _worker_buffer is None:
        _worker_buffer = np.empty(protocol.INPUT_SHAPE_CHW, dtype=np.float32)
    for image, final in jobs:
        _write_bin(Path(image), Path(final), token, _worker_buffer)
    return len(jobs)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe, as it is the cheapest start (no interpreter start-up, no re-import of
    the parent's __main__ such as pytest); otherwise forkserver, then spawn.

    Our workers only run Pillow and numpy, which hold no lock across a fork, so forking a parent
    that has other threads (torch's pools, for instance) is safe for them. From Python 3.12 such a
    fork emits a DeprecationWarning, which the test suite turns into an error, and 3.14 no longer
    defaults to fork, so newer Pythons use forkserver.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and sys.version_info < (3, 12):
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm  # imported only when a split is processed

    return tqdm(total=total, unit="img", desc="preprocess", disable=not enabled, dynamic_ncols=True)


def _check_samples(samples: Sequence[Sample], out_dir: Path) -> None:
    if not samples:
        raise DatasetError(out_dir, "no samples to preprocess", "list the split with cityscapes.list_samples first")
    seen: set[str] = set()
    for s in samples:
        if s.name in seen:
            raise DatasetError(s.image, f"two samples share the name {s.name!r}, so their bins would overwrite "
                               "each other", "image names must be unique")
        seen.add(s.name)


def preprocess_split(samples: Iterable[Sample], out_dir: str | os.PathLike[str], *, workers: int = 2,
                     progress: bool = False) -> list[Path]:
    """Write ``<out_dir>/<sample.name>.bin`` for every sample; return the paths in sample order.

    Byte-identical to preprocessing each image in turn with :func:`preprocess_image` and ``tofile``.
    ``workers`` processes each write their own files (only paths, counts and errors cross process
    boundaries). Each bin is written under a temporary name and renamed, so a run that is
    killed or fails never leaves a partial file under a final ``.bin`` name; bins completed before
    a failure stay (they are whole). Other files already in ``out_dir`` are left alone.
    """
    samples = list(samples)
    out = Path(out_dir)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise IntradaError("preprocess workers", f"must be a positive integer, got {workers!r}", "use 1 or 2")
    _check_samples(samples, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BinsError(out, f"cannot create the output directory ({exc.strerror or exc})",
                        "choose a writable path that is not a file") from None
    finals = [out / bin_name(s.name) for s in samples]
    token = new_token()
    bar = _progress_bar(len(samples), progress)
    try:
        if workers == 1 or len(samples) == 1:
            buffer = np.empty(protocol.INPUT_SHAPE_CHW, dtype=np.float32)
            for sample, final in zip(samples, finals):
                _write_bin(sample.image, final, token, buffer)
                bar.update(1)
        else:
            _run_pool(samples, finals, token, min(workers, len(samples)), bar, out)
    finally:
        bar.close()
        _remove_leftovers(out, token)
    return finals


def _run_pool(samples: Sequence[Sample], finals: list[Path], token: str, workers: int, bar: Any,
              out: Path) -> None:
    jobs = [(os.fspath(s.image), os.fspath(f)) for s, f in zip(samples, finals)]
    # A task costs well under a millisecond against ~50 ms of CPU per image, so chunks only need to
    # be large enough to amortise that at dataset scale; small splits use single images so that both
    # workers finish together (a long last chunk on one worker would idle the other core).
    size = max(1, min(4, len(jobs) // (workers * 8)))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    try:
        futures = [executor.submit(_worker_chunk, chunk, token) for chunk in chunks]
        for future in as_completed(futures):
            bar.update(future.result())
    except BrokenProcessPool:
        raise BinsError(out, "a preprocessing worker process died (killed, or out of memory)",
                        "rerun; bins already written are complete, and workers=1 needs less memory") from None
    finally:
        # Queued chunks are dropped; chunks in flight run to their end (at most 4 images), so no
        # file is left half-written by us. A worker killed from outside leaves a hidden .tmp file,
        # which the caller removes by this run's token.
        executor.shutdown(wait=True, cancel_futures=True)


def _remove_leftovers(out: Path, token: str) -> None:
    for leftover in out.glob(temp_path("*", token).name):
        leftover.unlink(missing_ok=True)


# --- reading bins -------------------------------------------------------------------------------

_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\x93NUMPY", "a .npy file (bins are raw, without a header)"),
          (b"PK\x03\x04", "a zip archive (a torch checkpoint?)"))


def _size_problem(path: Path, size: int) -> str:
    expected = protocol.BIN_BYTES
    what = (f"{size:,} bytes, expected {expected:,} (float32 {'x'.join(map(str, protocol.INPUT_SHAPE_CHW))})")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"not a preprocessed bin but {kind}: {what}"
    if size == protocol.DUMP_BYTES:
        return f"not an input bin but a 19x65x129 output dump: {what}"
    if size == 0:
        return f"empty: {what}"
    if size < expected:
        return f"truncated: {what}"
    if size > expected and size % expected == 0:
        return f"holds {size // expected} images, one expected: {what}"
    return f"not a preprocessed bin: {what}"


def _read_into(path: Path, dest: np.ndarray) -> None:
    """Fill ``dest`` (float32, C-contiguous, 3x512x1024) from ``path`` with every check."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != protocol.BIN_BYTES:
                raise BinsError(path, _size_problem(path, size),
                                "regenerate it with `intrada preprocess` (a killed run or a copy may have cut it)")
            got = f.readinto(memoryview(dest).cast("B"))  # type: ignore[arg-type]  # numpy arrays are buffers
    except FileNotFoundError:
        raise BinsError(path, "bin file not found", "run `intrada preprocess` for this split") from None
    except IsADirectoryError:
        raise BinsError(path, "is a directory, expected a .bin file", "pass the bin files, not their folder") from None
    except BinsError:
        raise
    except OSError as exc:
        raise BinsError(path, f"cannot read bin ({exc.strerror or exc})", "check the file's permissions") from None
    if got != protocol.BIN_BYTES:  # the file shrank between stat and read
        raise BinsError(path, f"truncated: read {got:,} of {protocol.BIN_BYTES:,} bytes", "regenerate it")
    if sys.byteorder != "little":
        dest.byteswap(inplace=True)
    _check_values(path, dest)


def _check_values(path: Path, array: np.ndarray) -> None:
    bad = find_nonfinite(array)
    if bad is not None:
        c, y, x = bad.first
        raise BinsError(path, f"{bad.count:,} NaN/Inf values, first at [channel {c}, row {y}, col {x}] = "
                        f"{array[c, y, x]}", "the file is corrupt or not a preprocessed image; regenerate it")
    # Every value of a protocol bin is a uint8 minus the channel's mean (times SCALE), so it lies in
    # [-mean, 255 - mean]. Values outside mean the image was not preprocessed this way (0..255
    # without the mean subtracted, or unrelated data). The slack absorbs the seed's
    # ToTensor()*255 round trip, which is off by ~1e-5.
    for c in range(protocol.INPUT_C):
        lo, hi = float(array[c].min()), float(array[c].max())
        mean = float(protocol.MEAN_BGR[c])
        low, high = sorted(((0.0 - mean) * protocol.SCALE, (255.0 - mean) * protocol.SCALE))
        if lo < low - 1e-3 or hi > high + 1e-3:
            raise BinsError(path, f"channel {c} ranges {lo:.3f}..{hi:.3f}, outside [{low:.3f}, {high:.3f}] "
                            f"(uint8 {protocol.CHANNEL_ORDER} minus the caffe mean)", "it was not preprocessed "
                            "with this protocol; regenerate it with `intrada preprocess`")


def read_bin(path: str | os.PathLike[str]) -> np.ndarray:
    """One preprocessed bin as float32 (3, 512, 1024); BinsError for a wrong size or NaN/Inf."""
    out = np.empty(protocol.INPUT_SHAPE_CHW, dtype=np.float32)
    _read_into(Path(path), out)
    return out


def cycle_names(names: Sequence[str], batch_size: int) -> list[str]:
    """``batch_size`` names of real images for a timed batch, cycling through ``names`` when the split
    (or its sample) has fewer."""
    return [names[i % len(names)] for i in range(batch_size)]


def read_bins(paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """Bins stacked into one float32 [N, 3, 512, 1024] batch, in the order given, each checked."""
    if len(paths) == 0:
        raise BinsError("read_bins", "no bin files given", "preprocess at least one image")
    batch = np.empty((len(paths), *protocol.INPUT_SHAPE_CHW), dtype=np.float32)
    for i, path in enumerate(paths):
        _read_into(Path(path), batch[i])
    return batch
