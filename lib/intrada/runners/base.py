"""One tiny interface for every runtime (Polygraphy style).

``with runner: aux, main = runner.infer(batch)``. Heavy objects (sessions, models, device
contexts) are built in :meth:`activate`, never in ``__init__``, so constructing a runner is free and
optional runtimes are only imported when a runner of that kind is really used.
"""
from __future__ import annotations

import abc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..core import protocol
from ..core.errors import IntradaError


class RunnerError(IntradaError):
    """A runner was misused or its backend produced something unusable."""


@dataclass(frozen=True)
class RunRecord:
    """One run of a runner over a set of preprocessed bins: where its outputs are (one file per
    sample and head, in the tool's naming), how fast it was and where that timing came from, which
    batch size ran and where that was read, and whether the run is a device result at all."""

    tool: str  # "torch", "onnxruntime", "openvino", "ais_bench-api", "ais_bench-cli", "benchmark"
    om: Path | None  # the offline model an Ascend tool ran (None for CPU runners)
    batch_size: int
    device_id: int | None
    dumps: Path
    convention: str  # key of intrada.dataset.dumps.CONVENTIONS
    names: tuple[str, ...]
    throughput: float  # samples/s (one device / chip for Ascend tools)
    throughput_field: str  # where the timing came from
    command: tuple[str, ...] = ()
    log: Path | None = None
    fake: bool = False  # the tool or the om is a contract-test fake: not a device result
    details: dict[str, Any] = field(default_factory=dict)
    # where batch_size was read: what ran (an output's dim 0, the om's input shape) or only a flag
    # the tool was given (unchecked: a throughput then rests on a name and is not judged)
    batch_source: str = "unchecked"
    batch_verified: bool = False

    def open(self, samples: Sequence[Any] | None = None) -> Any:
        """The outputs as a :class:`intrada.dataset.dumps.DumpSet`."""
        from ..dataset.dumps import DumpSet

        return DumpSet.open(self.dumps, list(samples) if samples is not None else list(self.names),
                            convention=self.convention)

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "om": None if self.om is None else str(self.om), "batch_size": self.batch_size,
                "device_id": self.device_id, "dumps": str(self.dumps), "convention": self.convention,
                "images": len(self.names), "throughput": self.throughput, "throughput_field": self.throughput_field,
                "command": list(self.command), "log": None if self.log is None else str(self.log),
                "fake": self.fake, "batch_source": self.batch_source, "batch_verified": self.batch_verified,
                **self.details}


class Runner(abc.ABC):
    #: short backend name used in reports and cache keys: torch, onnxruntime, openvino, ascend
    backend: str = "abstract"

    def __init__(self) -> None:
        self._active = False

    # -- lifecycle -----------------------------------------------------------------------------
    def activate(self) -> None:
        if not self._active:
            self._activate()
            self._active = True

    def deactivate(self) -> None:
        if self._active:
            try:
                self._deactivate()
            finally:
                self._active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.deactivate()

    # -- inference ------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [N, 3, 512, 1024] -> (aux, main), each float32 [N, 19, 65, 129]."""
        if not self._active:
            raise RunnerError(self.name, "infer() called before activate()", "use the runner as a context manager")
        self.validate_input(batch)
        aux, main = self._infer(np.ascontiguousarray(batch))
        self.validate_output(batch.shape[0], aux, "aux")
        self.validate_output(batch.shape[0], main, "main")
        return aux, main

    def validate_input(self, batch: np.ndarray) -> None:
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            got = getattr(batch, "dtype", type(batch).__name__)
            raise RunnerError(self.name, f"input must be a float32 numpy array, got {got}",
                              "feed preprocessed bins (BGR minus mean, float32)")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != protocol.INPUT_SHAPE_CHW or batch.shape[0] < 1:
            raise RunnerError(self.name, f"input shape {tuple(batch.shape)}, expected [N, "
                              f"{', '.join(map(str, protocol.INPUT_SHAPE_CHW))}]", "stack preprocessed images along axis 0")

    def validate_output(self, n: int, out: np.ndarray, which: str) -> None:
        expected = (n, *protocol.OUTPUT_SHAPE_CHW)
        if tuple(out.shape) != expected:
            raise RunnerError(self.name, f"{which} output has shape {tuple(out.shape)}, expected {list(expected)}",
                              "check that the model is the IntraDA DeepLabv2 export for 512x1024 input")

    # -- a whole split ---------------------------------------------------------------------------
    def run_split(self, bins_dir: str | os.PathLike[str], names: Sequence[str], out_dir: str | os.PathLike[str], *,
                  batch_size: int = 1, progress: bool = False, desc: str | None = None) -> RunRecord:
        """Infer ``<bins_dir>/<name>.bin`` for every name, ``batch_size`` at a time, and write
        ``<out_dir>/<name>_{0,1}.bin`` (the ais_bench layout). Timing is the wall clock around each
        :meth:`infer` call in this process. Device tools that run whole directories override this.

        The last batch is simply smaller (a dynamic batch takes any N); ais_bench pads it instead
        and drops the padded outputs, which gives the same files."""
        from tqdm import tqdm

        from ..core.checks import check_model_outputs
        from ..dataset.dumps import write_dumps
        from ..dataset.preprocess import read_bins

        bins, out = Path(bins_dir), Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = list(names)
        seconds, ran = 0.0, set()
        where = getattr(self, "onnx_path", None) or getattr(self, "checkpoint", None) or self.name
        with self, tqdm(total=len(names), desc=desc or f"{self.backend} inference", unit="img",
                        disable=not progress, leave=False) as bar:
            for start in range(0, len(names), batch_size):
                chunk = names[start:start + batch_size]
                batch = read_bins([bins / f"{n}.bin" for n in chunk])
                t0 = time.perf_counter()
                aux, main = self.infer(batch)
                seconds += time.perf_counter() - t0
                ran.add(int(main.shape[0]))
                check_model_outputs(where, (aux, main), ", ".join(chunk), backend=self.backend)
                for i, name in enumerate(chunk):
                    write_dumps(out, name, aux[i], main[i])
                bar.update(len(chunk))
        return RunRecord(self.backend, None, batch_size, None, out, "ais_bench", tuple(names),
                         len(names) / seconds if seconds > 0 else float("nan"),
                         f"wall clock around {self.name}.infer() in this process", fake=False,
                         details=self.describe(), batch_source=f"dim 0 of the outputs ({sorted(ran)})",
                         batch_verified=max(ran, default=0) <= batch_size)

    @property
    def name(self) -> str:
        return f"{self.backend}-runner"

    def describe(self) -> dict[str, Any]:
        """Backend, version and device, for the report and the cache key."""
        return {"backend": self.backend}

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
