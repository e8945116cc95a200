"""One tiny interface for every runtime (Polygraphy style).

``with runner: aux, main = runner.infer(batch)``. Heavy objects (sessions, models, device
contexts) are built in :meth:`activate`, never in ``__init__``, so constructing a runner is free and
optional runtimes are only imported when a runner of that kind is really used.
"""
from __future__ import annotations

import abc
from types import TracebackType
from typing import Any

import numpy as np

from .. import protocol
from ..errors import IntradaError


class RunnerError(IntradaError):
    """A runner was misused or its backend produced something unusable."""


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
