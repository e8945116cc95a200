"""Contract-test fake of the ``aclruntime`` binding (pybind11) of both ais_bench generations.

``tests/fakes/aclruntime_tools/aclruntime`` and ``tests/fakes/aclruntime_msit/aclruntime`` export
what each generation's binding registers; this module holds what they share and where they differ.
Sources (T = github.com/Ascend/tools 9d6da90 ais-bench_workload/tool/ais_bench/backend, M =
github.com/Ascend/msit 42a9c80 ait/components/benchmark/backend):

* module contents: T python/src/PyInferenceSession/PyInferenceSession.cpp:316-366 and
  python/src/PyTensor/PyTensor.cpp (Tensor, MemorySummary); M PyInferenceSession.cpp:659-758;
* a session loads its model on construction and throws ``std::runtime_error`` (a Python
  RuntimeError) on any failure (T PyInferenceSession.cpp:80-95, M :106-120);
* an input's byte size must equal the input's ``realsize`` (T base/module/ModelInfer/
  ModelInferenceProcessor.cpp:193-198, M :220); each of the ``loop`` executions is timed and kept
  (T :385-398, :409-427; M :552-563, :612-631): T keeps the duration (``std::vector<float>``,
  base/include/Base/ModelInfer/ModelInferenceProcessor.h:139), M a (start, end) pair in ms from
  the session's zero point (``std::vector<pair<float, float>>``, ModelInferenceProcessor.h:141,
  zero point set at init, ModelInferenceProcessor.cpp:103, :633-640);
* ``sumary`` and ``reset_sumaryinfo`` keep those names on the binding in both (T :336-338, :350,
  :354; M :698-700, :716, :719);
* static / dynamic batch (T ModelInferenceProcessor.cpp:492-515, M :756-788, model_process.cpp
  ``CheckDynamicBatchSize`` :331-360): ``set_dynamic_batchsize(n)`` needs an om converted with
  ``--dynamic_batch_size`` holding n and sets each -1 input's realsize to ``size * n / max``;
* release: T has no per-session call, the destructor unloads the model (T :75-78) and
  ``finalize()`` is an instance method (T :53-73, :363); M adds ``free_resource()`` (M :78-98,
  :728) and makes ``finalize`` static (M :67-76, :729). Both return the error code, they do not
  throw. After the process-wide finalize nothing works (intrada_fake_acl).
* a Tensor on the device cannot become a numpy array (PyTensor.cpp ``ToNumpy``: "tensor is in
  npu. can't convert to numpy array").

The model itself runs in ONNX Runtime (intrada_fake_npu.FakeModel). Not implemented (a RuntimeError
says so): pipelines, AIPP configuration, dynamic HW/dims/shape.
"""
from __future__ import annotations

import atexit
import ctypes
import sys
import time
from typing import Any

import numpy as np

import intrada_fake_acl as acl
import intrada_fake_npu as fake

TOOLS, MSIT = "tools", "msit"


def _f32(x: float) -> float:
    """The binding keeps C floats."""
    return float(np.float32(x))


def _runtime_error(exc: BaseException) -> RuntimeError:
    return RuntimeError(str(exc))


class BaseTensor:
    """``BaseTensor(buf, size)``: an address and a byte size (the frontend passes
    ``array.__array_interface__['data'][0]``, T interface.py:90, M interface.py:443)."""

    def __init__(self, buf: int, size: int) -> None:
        self.buf = int(buf)
        self.size = int(size)


class session_options:  # noqa: N801 - the binding's name
    def __init__(self) -> None:
        self.loop = 1
        self.log_level = 2
        self.acl_json_path = ""


class infer_options:  # noqa: N801 - M only (PyInferenceSession.cpp:683-691)
    def __init__(self) -> None:
        self.output_dir = ""
        self.auto_dym_shape = False
        self.auto_dym_dims = False
        self.out_format = "BIN"
        self.pure_infer_mode = False
        self.output_names: list[str] = []
        self.shapes_list: list[Any] = []


class tensor_desc:  # noqa: N801
    def __init__(self, name: str = "", shape: list[int] | None = None, size: int = 0, datatype: int = 0) -> None:
        self.name = name
        self.shape = list(shape or [])
        self.datatype = datatype  # TENSOR_DTYPE_FLOAT32 is 0 in Base::TensorDataType
        self.format = 0
        self.size = size
        self.realsize = size

    def copy(self) -> "tensor_desc":
        out = tensor_desc(self.name, self.shape, self.size, self.datatype)
        out.realsize = self.realsize
        return out

    def __repr__(self) -> str:
        return f"<tensor_desc {self.name} {self.shape} size={self.size} realsize={self.realsize}>"


class sumary:  # noqa: N801 - the binding's spelling in both generations
    def __init__(self) -> None:
        self.exec_time_list: list[Any] = []


class _MemorySummary:
    H2D_time_list: list[float] = []
    D2H_time_list: list[float] = []

    def reset(self) -> None:
        _MemorySummary.H2D_time_list = []
        _MemorySummary.D2H_time_list = []


def MemorySummary() -> _MemorySummary:  # noqa: N802 - a class in the binding (one global summary)
    return _MemorySummary()


class Tensor:
    """``aclruntime.Tensor(ndarray)``: a copy on the host; ``to_device``/``to_host`` move it."""

    def __init__(self, array: Any = None, *, _device: int = -1) -> None:
        data = np.ascontiguousarray(array)
        self._data = data.copy()
        self._device = _device

    def to_device(self, device_id: int) -> None:
        acl.require("aclrtMemcpy (host to device)")
        fake.check_device(int(device_id))
        self._device = int(device_id)

    def to_host(self) -> None:
        if self._device >= 0:
            acl.require("aclrtMemcpy (device to host)")
        self._device = -1

    def to_dvpp(self, device_id: int) -> None:
        raise RuntimeError("the fake aclruntime does not implement dvpp memory")

    @property
    def shape(self) -> list[int]:
        return list(self._data.shape)

    @property
    def dtype(self) -> str:
        return str(self._data.dtype)

    @property
    def device(self) -> int:
        return self._device

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._device >= 0:
            raise RuntimeError("tensor is in npu. can't convert to numpy array")
        return self._data if dtype is None else self._data.astype(dtype)

    def __repr__(self) -> str:
        return f"<Tensor shape={self.shape} dtype={self.dtype} device={self._device}>"


# ---------------------------------------------------------------------------------------------
# TensorContext: the process-wide ACL lifetime (see intrada_fake_acl)

class _TensorContext:
    instance: "_TensorContext | None" = None

    def __init__(self) -> None:
        self.init_device_flag = acl.acl_init() == acl.SUCCESS  # InitDevices, once

    @classmethod
    def get(cls) -> "_TensorContext":
        if cls.instance is None:  # a static shared_ptr: built once, never again
            cls.instance = cls()
        return cls.instance

    def set_context(self, device_id: int) -> None:
        acl.require("aclrtSetDevice")
        fake.check_device(device_id)

    def finalize(self) -> int:
        if self.init_device_flag:
            code = acl.acl_finalize()  # DestroyDevices
            if code != acl.SUCCESS:
                return code
            self.init_device_flag = False
        return 0


def _at_exit() -> None:
    """~TensorContext at process exit: finalizes if nothing did."""
    if _TensorContext.instance is not None:
        _TensorContext.instance.finalize()


atexit.register(_at_exit)  # registered at import, so it runs after hooks registered later (as a C++ static)


def _error_log(message: str) -> None:
    print(f"[ERROR] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the session

class _InferenceSession:
    generation = ""

    def __init__(self, model_path: str, device_id: int, options: session_options | None = None) -> None:
        fake.require_declared("ais_bench")
        self._init_flag = False
        self._device = int(device_id)
        self._options = options if options is not None else session_options()
        context = _TensorContext.get()
        try:
            context.set_context(self._device)
            acl.require("aclmdlLoadFromFile")
            self._model = fake.FakeModel(model_path, self._device)
        except (fake.FakeNpuError, acl.AclError) as exc:
            raise _runtime_error(exc) from None
        self._init_flag = True
        header = self._model.header
        self._profiles = sorted(int(b) for b in header.get("dynamic_batch_size", []))
        max_batch = max(self._profiles) if self._profiles else None
        self._inputs = [self._desc(i, max_batch) for i in header["inputs"]]
        self._outputs = [self._desc(o, max_batch) for o in header["outputs"]]
        self._batch: int | None = None  # the dynamic batch selected; None: static
        self._exec: list[Any] = []
        self._zero = time.time()  # M InitSumaryInfo: the zero point of the (start, end) pairs

    @staticmethod
    def _desc(io: dict[str, Any], max_batch: int | None) -> tensor_desc:
        shape = [int(d) for d in io["shape"]]
        dims = [max_batch if d < 0 and max_batch else d for d in shape]
        return tensor_desc(io["name"], shape, int(np.prod(dims)) * 4)

    # -- what both generations register ----------------------------------------------------
    def options(self) -> session_options:
        return self._options

    def get_inputs(self) -> list[tensor_desc]:
        return [d.copy() for d in self._inputs]

    def get_outputs(self) -> list[tensor_desc]:
        return [d.copy() for d in self._outputs]

    def _alive(self, call: str) -> None:
        try:
            acl.require(call)
        except acl.AclError as exc:
            raise _runtime_error(exc) from None
        if not self._init_flag:
            raise RuntimeError(f"{call} failed: the session's model was released (free_resource/finalize)")

    def set_staticbatch(self) -> int:
        self._alive("aclmdlSetDynamicBatchSize")
        self._batch = None
        for d in self._inputs:
            d.realsize = d.size
        return 0

    def set_dynamic_batchsize(self, batchsize: Any) -> int:
        self._alive("aclmdlGetDynamicBatch")
        n = int(batchsize)
        if not self._profiles:
            raise RuntimeError("[ERROR] the dynamic_batch_size parameter is not specified for model conversion")
        if n not in self._profiles:
            raise RuntimeError(f"[ERROR] the dymBatch parameter is not correct: {n} is not one of the om's "
                               f"batch sizes {self._profiles}")
        for d in self._inputs:
            if -1 in d.shape:
                d.realsize = d.size * n // max(self._profiles)
        self._batch = n
        return 0

    def set_dynamic_hw(self, *args: Any) -> int:
        raise RuntimeError("the fake aclruntime does not implement dynamic HW")

    def set_dynamic_dims(self, *args: Any) -> int:
        raise RuntimeError("the fake aclruntime does not implement dynamic dims")

    def set_dynamic_shape(self, *args: Any) -> int:
        raise RuntimeError("the fake aclruntime does not implement dynamic shapes")

    def set_custom_outsize(self, *args: Any) -> int:
        raise RuntimeError("the fake aclruntime does not implement custom output sizes")

    def sumary(self) -> sumary:
        out = sumary()
        out.exec_time_list = list(self._exec)
        return out

    def reset_sumaryinfo(self) -> int:
        self._exec = []
        return 0

    def _static_batch(self) -> int:
        shape = self._inputs[0].shape
        if shape[0] >= 0:
            return shape[0]
        if self._batch is None:
            raise RuntimeError("aclmdlExecute failed: a dynamic-batch om run with no batch selected "
                               "(aclmdlSetDynamicBatchSize); the fake runs one only at a selected batch")
        return self._batch

    def _execute(self, data: bytes) -> list[Tensor]:
        desc = self._inputs[0]
        if len(data) != desc.realsize:
            raise RuntimeError(f"[ERROR] Check i:0 name:{desc.name} in size:{len(data)} needsize:{desc.realsize} not "
                               "match")
        batch = self._static_batch()
        shape = [batch, *desc.shape[1:]]
        self._model.inputs = [fake.TensorDesc(desc.name, shape)]  # the profile this execution runs at
        x = np.frombuffer(data, dtype=np.float32).reshape(shape)
        try:
            acl.require("aclmdlExecute")
            outputs, ms = self._model.run(x)
        except (fake.FakeNpuError, acl.AclError) as exc:
            raise _runtime_error(exc) from None
        for _ in range(max(1, int(self._options.loop))):
            self._record(ms)
        return [Tensor(o, _device=self._device) for o in outputs]

    def _record(self, ms: float) -> None:
        raise NotImplementedError

    def run(self, output_names: Any, feeds: Any) -> list[Tensor]:
        self._alive("aclmdlExecute")
        if isinstance(feeds, dict):
            feeds = list(feeds.values())
        if len(feeds) != len(self._inputs):
            raise RuntimeError(f"[ERROR] {len(feeds)} inputs given, the model has {len(self._inputs)}")
        feed = feeds[0]
        if isinstance(feed, BaseTensor):  # the binding copies buf..buf+size to the device
            data = ctypes.string_at(feed.buf, feed.size)
        elif isinstance(feed, Tensor):
            data = np.ascontiguousarray(feed._data).tobytes()
        else:
            raise TypeError(f"run(): incompatible function arguments: {type(feed).__name__}")
        return self._execute(data)

    def create_tensor_from_fileslist(self, desc: tensor_desc, files: list[str]) -> Tensor:
        self._alive("aclrtMemcpy")
        data = b"".join(open(f, "rb").read() for f in files)
        if len(data) != desc.realsize:
            raise RuntimeError(f"[ERROR] files hold {len(data)} bytes, tensor needs {desc.realsize}")
        tensor = Tensor(np.frombuffer(data, dtype=np.uint8))
        tensor.to_device(self._device)
        return tensor

    def _destroy(self) -> int:
        """Destroy(): the model is unloaded once (InitFlag_)."""
        if not self._init_flag:
            return 0
        if not acl.alive():
            _error_log("ModelInfer Deinit failed: aclmdlUnload after aclFinalize (error code 100001)")
            acl.record("refused", "aclmdlUnload")
            return acl.ACL_ERROR_UNINITIALIZE
        self._init_flag = False
        acl.record("aclmdlUnload", self._model.path.name)
        return 0

    def __del__(self) -> None:
        try:
            self._destroy()
        except Exception:  # a destructor never throws
            pass

    def __repr__(self) -> str:
        return f"<Model>\ndevice:\t{self._device}\ninput:\n  {self._inputs}\noutput:\n  {self._outputs}\n"


class ToolsInferenceSession(_InferenceSession):
    """T: durations; ``finalize()`` is an instance method: SetContext, Destroy, TensorContext
    Finalize, errors returned (PyInferenceSession.cpp:53-73)."""

    generation = TOOLS

    def _record(self, ms: float) -> None:
        self._exec.append(_f32(ms))

    def finalize(self) -> int:
        if not acl.alive():
            _error_log("TensorContext::SetContext failed. ret=100001")
            acl.record("refused", "finalize")
            return acl.ACL_ERROR_UNINITIALIZE
        ret = self._destroy()
        if ret:
            return ret
        return _TensorContext.get().finalize()


class MsitInferenceSession(_InferenceSession):
    """M: (start, end) pairs; ``free_resource()`` per session; ``finalize()`` static."""

    generation = MSIT

    def _record(self, ms: float) -> None:
        start = (time.time() - self._zero) * 1000.0
        self._exec.append((_f32(start), _f32(start + ms)))

    def free_resource(self) -> int:
        if not acl.alive():
            _error_log("TensorContext::SetContext failed. ret=100001")
            acl.record("refused", "free_resource")
            return acl.ACL_ERROR_UNINITIALIZE
        return self._destroy()  # then DestroyContext

    @staticmethod
    def finalize() -> int:
        return _TensorContext.get().finalize()

    def get_max_dym_batchsize(self) -> int:
        self._alive("aclmdlGetDynamicBatch")
        return max(self._profiles) if self._profiles else 0

    def get_dym_aipp_input_exist(self) -> int:
        self._alive("aclmdlGetAippType")
        return 0

    def check_dym_aipp_input_exist(self) -> int:
        return 0

    def run_pipeline(self, *args: Any) -> Any:
        raise RuntimeError("the fake aclruntime does not implement run_pipeline")

    def first_inner_run(self, *args: Any) -> Any:
        raise RuntimeError("the fake aclruntime does not implement inner runs")

    inner_run = first_inner_run
