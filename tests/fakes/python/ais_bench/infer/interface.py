"""Fake of ``ais_bench.infer.interface``: InferSession and MemorySummary with the documented signatures.

``InferSession(device_id, model_path, acl_json_path=None, debug=False, loop=1)``; ``get_inputs()`` /
``get_outputs()`` give descriptors with ``.name .shape .datatype .realsize``; ``infer(feeds,
mode='static')`` takes numpy (or torch) arrays whose size must be the model's static input size and
returns a list of numpy arrays in om output order; ``sumary().exec_time_list`` holds the NPU compute
time of each execution in ms (spelling as upstream); ``reset_sumaryinfo()``; ``finalize()``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import intrada_fake_npu as fake


class _Summary:
    def __init__(self, exec_time_list: list[float]) -> None:
        self.exec_time_list = list(exec_time_list)


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1) -> None:
        fake.require_declared("ais_bench")
        try:
            self._model = fake.FakeModel(model_path, int(device_id))
        except fake.FakeNpuError as exc:
            raise RuntimeError(str(exc)) from None
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        self._times: list[float] = []
        self.outputs_names = [o.name for o in self._model.outputs]
        self._finalized = False

    def get_inputs(self) -> list[Any]:
        return list(self._model.inputs)

    def get_outputs(self) -> list[Any]:
        return list(self._model.outputs)

    def set_loop_count(self, loop: int) -> None:
        self.loop = loop

    def set_staticbatch(self) -> None:
        pass

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        if self._finalized:
            raise RuntimeError("session is finalized")
        desc = self._model.inputs[0]
        if array.nbytes != desc.realsize:
            raise RuntimeError(f"input size {array.nbytes} bytes != model input {desc.name} realsize {desc.realsize}: "
                               "aclmdlExecute failed, error code 100000")
        batch = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.float32).reshape(desc.shape)
        try:
            outputs, ms = self._model.run(batch)
        except fake.FakeNpuError as exc:
            raise RuntimeError(str(exc)) from None
        self._times.extend([ms] * max(1, self.loop))
        return outputs

    def infer(self, feeds: list[Any], mode: str = "static", custom_sizes: int | list[int] = 100000) -> list[np.ndarray]:
        if mode != "static":
            raise RuntimeError(f"the fake InferSession supports mode='static' only, got {mode!r}")
        if len(feeds) != len(self._model.inputs):
            raise RuntimeError(f"{len(feeds)} feeds for {len(self._model.inputs)} model inputs")
        feed = feeds[0]
        if hasattr(feed, "numpy") and not isinstance(feed, np.ndarray):  # a torch tensor
            feed = feed.numpy()
        if not isinstance(feed, np.ndarray):
            raise RuntimeError(f"type:{type(feed)} invalid")
        return self._run(feed)

    def run(self, feeds: list[Any], out_array: bool = False) -> list[np.ndarray]:
        return self.infer(feeds)

    def reset_sumaryinfo(self) -> None:
        self._times = []

    def sumary(self) -> _Summary:
        return _Summary(self._times)

    def finalize(self) -> None:
        self._finalized = True


class MemorySummary:
    @staticmethod
    def get_H2D_time_list() -> list[float]:
        return []

    @staticmethod
    def get_D2H_time_list() -> list[float]:
        return []

    @staticmethod
    def reset() -> None:
        pass
