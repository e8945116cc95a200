"""Dumps -> mIoU over a split: one dataset-level confusion matrix, as ADVENT's eval_single.

Per image: read the main-head logits, upsample + argmax (:func:`postprocess.upsample_argmax`,
exact), load the trainId label (decoded once, then cached as its runs in a .npy), count the
confusion matrix.
Images are independent, so they are spread over worker processes and the integer matrices are
summed; the sum does not depend on the order, so the result is identical for any worker count.
Each image's stages are timed (:data:`STAGES`), so a result says where its time went.

:func:`evaluate_dumps_reference` is the seed's procedure written out literally (torch upsample,
argmax, PIL label + lookup table, ``fast_hist``), single process; tests and benchmarks compare
against it.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import protocol
from ..dataset.cityscapes import Sample
from ..dataset.dumps import DumpSet
from ..core.errors import DatasetError, DumpsError
from .metrics import ConfusionMatrix, SegmentationScore, confusion_matrix
from .labels import load_label_cached
from .postprocess import upsample_argmax

_LABEL_SHAPE = (protocol.LABEL_H, protocol.LABEL_W)
#: What each image's time goes to: its label (the .npy cache, or the PNG decoded and cached), its
#: dump read (with the size and NaN/Inf checks), the exact upsample + argmax, the confusion matrix.
STAGES = ("labels", "read", "upsample", "histogram")
# A worker pool's start costs ~0.3-0.4 s when the process holds threads (torch, ONNX Runtime: a
# fresh interpreter from the forkserver), about 16 images' work on smooth logits: a worker pays
# off from 16 images of its own (workers_for).
MIN_IMAGES_PER_WORKER = 16


def workers_for(images: int, available: int = 2) -> int:
    """Worker processes for ``images`` images: up to ``available``, one per MIN_IMAGES_PER_WORKER."""
    return max(1, min(available, images // MIN_IMAGES_PER_WORKER))


@dataclass(frozen=True, eq=False)
class EvalResult:
    """The score plus what the report needs: the dump convention and the kept predictions."""

    score: SegmentationScore
    dump_format: str
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> uint8 trainId map
    label_cache_hits: int = 0
    label_cache_misses: int = 0
    # seconds per stage (STAGES, clocked in the process that ran it) summed over images and workers,
    # and the whole call's wall-clock seconds
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 1

    def cost(self) -> dict[str, Any]:
        """Where the time went, JSON-ready: seconds per stage summed over workers, the wall clock,
        the workers, and their time the stages leave unexplained (``overhead``: wall x workers minus
        the stages, i.e. the pool's start, transfers, idle workers, the checks before the first image)."""
        stages = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        return {"seconds": round(self.seconds, 3), "workers": self.workers, "images": self.score.num_images,
                "stages": stages, "overhead": round(self.seconds * self.workers - sum(self.stage_seconds.values()), 3),
                "label_cache_hits": self.label_cache_hits}

    @property
    def miou(self) -> float:
        return self.score.miou

    def to_json(self) -> dict[str, Any]:
        return {**self.score.to_json(), "dump_format": self.dump_format}


# --- one image ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    name: str
    label: Path
    keep: bool


_Done = tuple[str, np.ndarray, "np.ndarray | None", bool, tuple[float, ...]]


def _evaluate_one(dumps: DumpSet, cache_dir: Path | None, task: _Task) -> _Done:
    clock = time.perf_counter
    t0 = clock()
    logits = dumps.read(task.name, "main")
    t1 = clock()
    pred = upsample_argmax(logits, _LABEL_SHAPE)
    t2 = clock()
    gt, hit = load_label_cached(task.label, cache_dir)
    t3 = clock()
    matrix = confusion_matrix(gt, pred)
    t4 = clock()
    return task.name, matrix, (pred if task.keep else None), hit, (t3 - t2, t1 - t0, t2 - t1, t4 - t3)  # STAGES


# A pool worker's dump set and label cache, set once by the pool's initializer: a task then carries
# one name and one path, not the dump set's list of every name.
_worker_inputs: tuple[DumpSet, Path | None] | None = None


def _init_worker(dumps: DumpSet, cache_dir: Path | None) -> None:
    global _worker_inputs
    _worker_inputs = (dumps, cache_dir)
    keep_freed_memory()


# glibc's mallopt parameters (malloc.h; man 3 mallopt): the free memory at the top of the heap above
# which it is returned to the kernel, and the request size from which a block gets its own mmap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the kernel (glibc
    only; elsewhere nothing changes and False is returned). An image's evaluation allocates and
    frees ~20 MB of 2048x1024 maps and temporaries; with glibc's defaults the freed pages go back to
    the kernel and are faulted in again for the next image (~4,800 page faults per image with the
    label decoded, ~2,000 with it cached), a third to a half of the image's CPU time in a fresh worker.
    With blocks up to 32 MiB served from the heap and up to 256 MiB of it kept, a worker faults its
    pages in once. Called in pool workers, whose whole life is this loop."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    except OSError:
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20)) and bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20))


def _evaluate_in_worker(task: _Task) -> _Done:
    assert _worker_inputs is not None, "the pool's initializer did not run"
    return _evaluate_one(*_worker_inputs, task)


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))  # OS threads, including torch/OpenMP ones
    except OSError:
        import threading

        return threading.active_count()


def _pool_context() -> mp.context.BaseContext:
    # fork is fastest and needs no `if __name__ == "__main__"` guard, but forking a process that
    # runs other threads (torch/OpenMP pools, tqdm's monitor) can deadlock the child and warns on
    # Python >= 3.12. Then workers come from a forkserver: a clean single-threaded process, with
    # this module preloaded so each worker starts warm.
    methods = mp.get_all_start_methods()
    if "fork" in methods and _thread_count() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return mp.get_context("spawn")


def _check_inputs(samples: Sequence[Sample], dumps: DumpSet, keep_predictions: Collection[str]) -> list[_Task]:
    if not samples:
        raise DatasetError("evaluate", "no samples to evaluate", "check the Cityscapes root and max_images")
    names = {s.name for s in samples}
    opened = set(dumps.names)
    absent = [s.name for s in samples if s.name not in opened]
    if absent:
        raise DumpsError(dumps.directory, f"{len(absent)} of {len(samples)} samples were not opened in this dump set "
                         f"(e.g. {absent[0]})", "open the DumpSet with the same samples you evaluate")
    unknown = [n for n in keep_predictions if n not in names]
    if unknown:
        raise ValueError(f"keep_predictions names {unknown[:3]} are not among the evaluated samples")
    keep = set(keep_predictions)
    return [_Task(s.name, s.label_required, s.name in keep) for s in samples]


def evaluate_dumps(samples: Sequence[Sample], dumpset: DumpSet, *, workers: int = 2,
                   label_cache_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                   keep_predictions: Collection[str] = ()) -> EvalResult:
    """Main-head dumps of ``samples`` -> dataset-level confusion matrix and score.

    ``workers`` processes share the images (1 = in this process). ``label_cache_dir`` keeps each
    label's trainId map as .npy so later runs skip PNG decoding. ``keep_predictions`` names the
    samples whose uint8 prediction maps are returned (for overlays).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    tasks = _check_inputs(samples, dumpset, keep_predictions)
    cache_dir = None if label_cache_dir is None else Path(label_cache_dir)
    acc = ConfusionMatrix(protocol.NUM_CLASSES)
    predictions: dict[str, np.ndarray] = {}
    hits = 0
    stages = np.zeros(len(STAGES))

    from tqdm import tqdm

    def collect(name: str, matrix: np.ndarray, pred: np.ndarray | None, hit: bool, seconds: tuple[float, ...]) -> None:
        nonlocal hits
        acc.add_matrix(matrix)
        hits += hit
        stages[:] += seconds
        if pred is not None:
            predictions[name] = pred

    def running(bar: Any) -> None:
        # the dataset-level mIoU so far (19x19 matrix: free next to an image's postprocess)
        if progress:
            bar.set_postfix_str(f"mIoU {acc.score().miou:.2f}", refresh=False)

    workers = min(workers, len(tasks))
    if workers == 1:
        with tqdm(total=len(tasks), disable=not progress, desc="postprocess", unit="img") as bar:
            for task in tasks:
                collect(*_evaluate_one(dumpset, cache_dir, task))
                running(bar)
                bar.update()
    else:
        # the pool is created before tqdm starts its monitor thread
        with cf.ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker,
                                    initargs=(dumpset, cache_dir)) as pool:
            # A worker's IntradaError reaches us as itself (IntradaError.__reduce__ pickles all its fields).
            futures = [pool.submit(_evaluate_in_worker, t) for t in tasks]
            try:
                with tqdm(total=len(tasks), disable=not progress, desc="postprocess", unit="img") as bar:
                    for fut in cf.as_completed(futures):
                        collect(*fut.result())
                        running(bar)
                        bar.update()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    return EvalResult(acc.score(), dumpset.convention, {n: predictions[n] for n in keep_predictions},
                      label_cache_hits=hits, label_cache_misses=len(tasks) - hits,
                      stage_seconds=dict(zip(STAGES, stages.tolist())), seconds=time.perf_counter() - start,
                      workers=workers)


# --- the seed's procedure, literally ----------------------------------------------------------------
def _reference_label(label: Path) -> np.ndarray:
    """PIL open, NEAREST resize to the label size (a no-op for Cityscapes), int64, 35-entry
    map_vector lookup as ADVENT's dataset does (ids without a trainId -> 255)."""
    from PIL import Image

    map_vector = np.full(protocol.MAX_LABEL_ID + 2, protocol.IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in protocol.LABEL_ID_TO_TRAIN_ID.items():
        map_vector[label_id] = train_id
    with Image.open(label) as im:
        resized = im.resize((protocol.LABEL_W, protocol.LABEL_H), Image.Resampling.NEAREST)
        arr = np.asarray(resized, np.float32).astype(np.int64)
    return map_vector[arr]


def _fast_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def evaluate_dumps_reference(samples: Sequence[Sample], dumpset: DumpSet, *,
                             keep_predictions: Collection[str] = ()) -> EvalResult:
    """The seed's intrada_postprocess.py / ADVENT eval_single loop, single process (slow)."""
    import torch

    tasks = _check_inputs(samples, dumpset, keep_predictions)
    interp = torch.nn.Upsample(size=_LABEL_SHAPE, mode=protocol.UPSAMPLE_MODE,
                               align_corners=protocol.ALIGN_CORNERS)
    hist = np.zeros((protocol.NUM_CLASSES, protocol.NUM_CLASSES))  # float64 like upstream
    predictions: dict[str, np.ndarray] = {}
    for task in tasks:
        data = np.fromfile(dumpset.path(task.name, "main"), dtype=np.float32)
        data = data.reshape(1, *protocol.OUTPUT_SHAPE_CHW)
        with torch.no_grad():
            output = interp(torch.from_numpy(data)).squeeze(0).numpy()
        pred = np.argmax(output.transpose(1, 2, 0), axis=2)
        label = _reference_label(task.label)
        hist += _fast_hist(label.flatten(), pred.flatten(), protocol.NUM_CLASSES)
        if task.keep:
            predictions[task.name] = pred.astype(np.uint8)
    score = SegmentationScore(hist.astype(np.int64), len(tasks))
    return EvalResult(score, dumpset.convention, {n: predictions[n] for n in keep_predictions},
                      label_cache_misses=len(tasks))
