"""OpenVINO CPU runner (optional extra: `pip install openvino`); imported only when used."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core import protocol
from .base import Runner, RunnerError
from .cpu import physical_cores

PRECISIONS = ("f32", "bf16")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoRunner(Runner):
    """Reads the same ONNX; ``precision="bf16"`` sets OpenVINO's inference precision hint (faster on
    CPUs with AMX/AVX512-BF16, less exact: the parity gate reports its argmax agreement)."""

    backend = "openvino"

    def __init__(self, onnx_path: str | os.PathLike[str], *, precision: str = "f32", threads: int | None = None) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        self.onnx_path = Path(onnx_path)
        self.precision = precision
        self.threads = threads or physical_cores()
        self._compiled: Any = None

    def _activate(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RunnerError("openvino", "OpenVINO is not installed", "pip install openvino (optional extra)") from None
        core = ov.Core()
        try:
            model = core.read_model(str(self.onnx_path))
            self._compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": self.precision,
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
            })
        except RuntimeError as exc:
            raise RunnerError(self.onnx_path, f"OpenVINO cannot compile the model ({str(exc).splitlines()[0][:160]})",
                              "check the file with `intrada inspect`") from None
        self._request = self._compiled.create_infer_request()
        if len(self._compiled.outputs) < 2:
            raise RunnerError(self.onnx_path, "model has fewer than 2 outputs", "export the multi-level model")

    def _deactivate(self) -> None:
        self._compiled = None
        self._request = None

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self._request.infer({0: batch})
        # Copies: the request reuses its output buffers on the next call.
        outputs = self._compiled.outputs
        aux = np.array(result[outputs[protocol.AUX_OUTPUT_INDEX]], dtype=np.float32, copy=True)
        main = np.array(result[outputs[protocol.MAIN_OUTPUT_INDEX]], dtype=np.float32, copy=True)
        return aux, main

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        return {"backend": self.backend, "version": ov.get_version(), "device": "cpu", "precision": self.precision,
                "threads": self.threads}
