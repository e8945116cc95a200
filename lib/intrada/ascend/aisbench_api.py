"""The ais_bench Python API runner: ``ais_bench.infer.interface.InferSession`` in this process, either
generation (:mod:`intrada.ascend.aisbench`)."""
from __future__ import annotations

import gc
import importlib
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import protocol
from ..core.errors import BinsError, IntradaError, ToolError
from ..dataset.dumps import write_dumps
from ..runners.base import RunRecord
from .aisbench import ACL_LIFETIME, Frontend, check_status, detect_frontend, npu_compute_ms, throughput_fps
from .device import AscendRunner, DeviceRun
from .parsers import batch_mismatch
from .provenance import run_is_fake

_OUT_SHAPE = protocol.OUTPUT_SHAPE_CHW
# the seed's gen_dataset_info call writes "512 1024" (width and height swapped, written verbatim)
INFO_WIDTH, INFO_HEIGHT = "512", "1024"
INFO_NAME = "intraDA_deeplabv2_pre_bin_512_1024.info"  # the seed's info file name




def _tool_line(exc: BaseException) -> str:
    """An exception of the tool (RuntimeError from aclruntime, AttributeError, TypeError...) as one line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


class AisBenchApiRunner(AscendRunner):
    """``ais_bench.infer.interface.InferSession`` in this process, whichever generation is installed
    (:mod:`intrada.ascend.aisbench`: what differs and how it is told apart). The om's batch is
    static (or a dynamic-batch om's profile is selected), so every call is cut into batches of
    ``batch_size`` and the last one is padded by repeating its first sample (what the CLI does);
    padded outputs are dropped. Every failure of the tool is a :class:`ToolError` line."""

    kind = "ais_bench-api"

    def __init__(self, om: str | os.PathLike[str], *, batch_size: int, device_id: int = 0,
                 warmup: int = 1) -> None:
        super().__init__(om, batch_size=batch_size, device_id=device_id)
        self.warmup = warmup  # the CLI's --warmup_count default
        self._session: Any = None
        self.frontend: Frontend | None = None
        self._dynamic = False  # a dynamic-batch om, its profile selected for batch_size

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.frontend is not None:
            info.update(self.frontend.as_dict())
        return info

    def _what(self, call: str) -> str:
        gen = f" ({self.frontend.generation} generation)" if self.frontend is not None else ""
        return f"ais_bench{gen} InferSession.{call} on {self.om.name}"

    def _call(self, call: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IntradaError:
            raise
        except Exception as exc:  # aclruntime raises RuntimeError with ACL error codes; an API it lacks, others
            raise ToolError(self._what(call), _tool_line(exc),
                            "check --device-id, that the om was built for this chip (--soc-version), and that the "
                            "ais_bench and aclruntime wheels come from one release (see README)") from None

    def _import(self) -> tuple[Any, Frontend]:
        try:
            with warnings.catch_warnings():  # the gate runs with filterwarnings=error; not our verdict
                warnings.simplefilter("ignore")
                module = importlib.import_module("ais_bench.infer.interface")
        except Exception as exc:  # ImportError, or OSError from the ACL shared libraries
            raise ToolError("ais_bench.infer.interface", f"cannot import the ais_bench Python API ({_tool_line(exc)})",
                            "install the aclruntime and ais_bench wheels (see README) and source CANN's "
                            "set_env.sh") from None
        return module, detect_frontend(module)

    def _activate(self) -> None:
        self._check_om()
        module, self.frontend = self._import()
        cls = module.InferSession
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._session = self._call(f"__init__({self.device_id}, {self.om.name})", cls, self.device_id, str(self.om))
        ACL_LIFETIME.session_created(cls, self.frontend)
        try:
            self._check_model()
        except BaseException:
            self._release()
            raise

    def _check_model(self) -> None:
        inputs = list(self._call("get_inputs()", self._session.get_inputs))
        outputs = list(self._call("get_outputs()", self._session.get_outputs))
        try:
            shape = [int(d) for d in getattr(inputs[0], "shape", [])] if inputs else []
        except (TypeError, ValueError) as exc:
            raise ToolError(self._what("get_inputs()"), f"input shape {getattr(inputs[0], 'shape', None)!r} is not a "
                            f"list of integers ({exc})", None) from None
        expected = [self.batch_size, *protocol.INPUT_SHAPE_CHW]
        if len(inputs) != 1 or not shape or shape[1:] != expected[1:]:
            raise ToolError(self.om, f"om input is {[list(getattr(i, 'shape', [])) for i in inputs]}, expected "
                            f"[{expected}]", f"convert with atc --input_shape=image:{self.batch_size},3,512,1024")
        if len(outputs) != 2:
            raise ToolError(self.om, f"om has {len(outputs)} output(s), expected 2 (aux, main)",
                            "convert the two-output IntraDA ONNX")
        if shape[0] < 0:  # a dynamic-batch om (atc --input_shape=image:-1,... --dynamic_batch_size=...)
            self._select_dynamic_batch()
        elif shape[0] != self.batch_size:
            raise ToolError(self.om, batch_mismatch(shape[0], self.batch_size, "its input shape via InferSession"),
                            f"rename it to <name>_bs{shape[0]}.om, or convert with atc "
                            f"--input_shape=image:{self.batch_size},3,512,1024")

    def _select_dynamic_batch(self) -> None:
        """msit selects the profile in ``infer(mode="dymbatch")`` from the feed's dim 0 (and resets to
        static in mode "static", interface.py:652-666); tools through ``set_dynamic_batchsize`` once,
        which its ``infer`` keeps (interface.py:51-52, :112-162). A profile the om lacks is the
        binding's error."""
        assert self.frontend is not None
        if self.frontend.dymbatch_mode:
            self._dynamic = True
        elif self.frontend.set_dynamic_batchsize:
            self._call(f"set_dynamic_batchsize({self.batch_size})", self._session.set_dynamic_batchsize,
                       self.batch_size)
            self._dynamic = True
        else:
            raise ToolError(self.om, "is a dynamic-batch om and this ais_bench cannot select its batch",
                            f"convert a static om with atc --input_shape=image:{self.batch_size},3,512,1024")

    def _release(self) -> None:
        """This session's device resources only: never the process-wide finalize, which ends ACL for
        the process (aisbench.AclLifetime)."""
        session, self._session = self._session, None
        if session is None or self.frontend is None:
            return
        try:
            if self.frontend.free_resource:
                check_status(self._what("free_resource()"),
                             self._call("free_resource()", session.free_resource))
        finally:
            del session
            gc.collect()  # a session in a reference cycle (msit's infer_mode_switch) is destroyed now

    def _deactivate(self) -> None:
        self._release()

    def _infer_static(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = chunk.shape[0]
        if n < self.batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], self.batch_size - n, axis=0)])
        mode = "dymbatch" if self._dynamic and self.frontend is not None and self.frontend.dymbatch_mode else "static"
        outputs = self._call(f"infer(mode={mode!r})", self._session.infer, [np.ascontiguousarray(chunk)], mode=mode)
        heads = []
        for i, out in enumerate(list(outputs)[:2]):
            arr = np.asarray(out, dtype=np.float32)
            if arr.size != self.batch_size * math.prod(_OUT_SHAPE):
                raise ToolError(self._what("infer()"), f"output {i} has {arr.size} values, expected "
                                f"{self.batch_size} x {'x'.join(map(str, _OUT_SHAPE))}",
                                "check that the om is the IntraDA model for 512x1024 input")
            heads.append(arr.reshape(self.batch_size, *_OUT_SHAPE)[:n])
        if len(heads) != 2:
            raise ToolError(self._what("infer()"), f"returned {len(list(outputs))} output(s), expected 2", None)
        return heads[0], heads[1]

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._infer_static(batch[s:s + self.batch_size]) for s in range(0, batch.shape[0], self.batch_size)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def run_split(self, bins_dir: str | os.PathLike[str], names: Sequence[str], out_dir: str | os.PathLike[str], *,
                  batch_size: int | None = None, progress: bool = False, desc: str | None = None) -> RunRecord:
        from tqdm import tqdm

        from ..dataset.preprocess import read_bins

        bins_dir, out_dir = Path(bins_dir), Path(out_dir)
        if not names:
            raise BinsError(bins_dir, "no samples to run", "pass at least one name")
        out_dir.mkdir(parents=True, exist_ok=True)
        names = list(names)
        with self:
            assert self.frontend is not None
            frontend = self.frontend
            first = read_bins([bins_dir / f"{names[0]}.bin"])
            for _ in range(self.warmup):  # the first run includes one-time setup; ais_bench leaves it out
                self._infer_static(first)
            self._call(f"{frontend.reset}()", getattr(self._session, frontend.reset))
            with tqdm(total=len(names), desc=f"{self.kind} bs{self.batch_size}", unit="img", disable=not progress,
                      leave=False) as bar:
                for start in range(0, len(names), self.batch_size):
                    chunk = names[start:start + self.batch_size]
                    aux, main = self._infer_static(read_bins([bins_dir / f"{n}.bin" for n in chunk]))
                    for i, name in enumerate(chunk):
                        write_dumps(out_dir, name, aux[i], main[i])
                    bar.update(len(chunk))
            summary = self._call(f"{frontend.summary}()", getattr(self._session, frontend.summary))
            entries = self._call(f"{frontend.summary}().exec_time_list", lambda: list(summary.exec_time_list))
            times = npu_compute_ms(entries, self._what(f"{frontend.summary}()"))
        throughput, mean_ms = throughput_fps(self.batch_size, times)
        entry_kind = "(start, end) pairs: end - start" if isinstance(entries[0], Sequence) else "durations"
        batch_source = ("the om's input shape (InferSession.get_inputs)" if not self._dynamic else
                        f"a dynamic-batch om run at its bs{self.batch_size} profile, "
                        f"{'infer(mode=dymbatch)' if frontend.dymbatch_mode else 'set_dynamic_batchsize'}")
        return DeviceRun(self.kind, self.om, self.batch_size, self.device_id, out_dir, "ais_bench", tuple(names),
                         throughput, f"ais_bench 1000*batchsize/mean(NPU compute time) from InferSession."
                         f"{frontend.summary}().exec_time_list ({entry_kind})",
                         fake=run_is_fake(self.kind),
                         details={"npu_compute_time_mean_ms": mean_ms, "npu_compute_runs": len(times),
                                  **frontend.as_dict()},
                         batch_source=batch_source, batch_verified=True)
