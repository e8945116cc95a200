"""PyTorch and ONNX Runtime runners (CPU)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core import protocol
from .base import Runner, RunnerError


def physical_cores() -> int:
    """Threads for intra-op parallelism: the cores this process may use (cgroup/affinity aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class TorchRunner(Runner):
    """The reference: upstream's model in eval mode, fp32, under inference_mode."""

    backend = "torch"

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, *, model: Any = None,
                 ceil_mode: bool = True, network: Any = None) -> None:
        super().__init__()
        if (checkpoint is None) == (model is None):
            raise ValueError("pass exactly one of checkpoint or model")
        from ..model.network import DEEPLABV2

        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._model = model
        self._ceil_mode = ceil_mode
        self.network = network or DEEPLABV2  # the architecture the checkpoint is loaded into

    def _activate(self) -> None:
        import torch

        if self._model is None:
            from ..model.checkpoint import load_model

            self._model, _ = load_model(self.checkpoint, network=self.network,  # type: ignore[arg-type]
                                        ceil_mode=self._ceil_mode)
        self._model.eval()
        self._torch = torch

    def _deactivate(self) -> None:
        if self.checkpoint is not None:
            self._model = None

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            outputs = self._model(torch.from_numpy(batch))
        aux, main = outputs[protocol.AUX_OUTPUT_INDEX], outputs[protocol.MAIN_OUTPUT_INDEX]
        if aux is None:
            raise RunnerError(self.name, "the model has no aux head (multi_level=False)",
                              "use get_deeplab_v2(multi_level=True)")
        return aux.numpy(), main.numpy()

    def describe(self) -> dict[str, Any]:
        import torch

        return {"backend": self.backend, "version": torch.__version__, "device": "cpu",
                "threads": torch.get_num_threads(), "network": self.network.name}


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime CPU session; outputs by index (protocol.AUX_OUTPUT_INDEX, MAIN_OUTPUT_INDEX), never
    by name: the seed's export names the aux head "segmentation" and gives the main head a number."""

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.threads = threads or physical_cores()
        self._session: Any = None

    def _activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise RunnerError(self.onnx_path, f"ONNX Runtime cannot load the model ({str(exc).splitlines()[0][:160]})",
                              "check the file with `intrada inspect` or re-export it") from None
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        if len(outputs) < 2:
            raise RunnerError(self.onnx_path, f"model has {len(outputs)} output(s), expected 2 (aux, main)",
                              "export the multi-level model")
        self._outputs = [outputs[protocol.AUX_OUTPUT_INDEX], outputs[protocol.MAIN_OUTPUT_INDEX]]

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aux, main = self._session.run(self._outputs, {self._input: batch})
        return aux, main

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"backend": self.backend, "version": ort.__version__, "device": "cpu",
                "provider": "CPUExecutionProvider", "threads": self.threads}
