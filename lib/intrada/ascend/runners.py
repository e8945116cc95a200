"""Running an om: the ais_bench Python API, the ``python3 -m ais_bench`` CLI, the legacy benchmark tool.

Each is a :class:`~intrada.runners.base.Runner` (``with runner: aux, main = runner.infer(batch)``)
through :class:`intrada.ascend.device.AscendRunner`, and each can also run a whole directory of
preprocessed bins, which is how the device tools work and where their own throughput comes from:
:meth:`AscendRunner.run_split` returns a :class:`~intrada.ascend.device.DeviceRun` (the
per-sample output files in the tool's naming + the tool's throughput).

Throughput is always the tool's own timing of the device, never a wall clock around a subprocess:

* ais_bench (API and CLI): ``throughput = 1000 * batchsize / mean(NPU compute time in ms)``, the
  summary's ``throughput`` (the API's ``sumary().exec_time_list`` gives the same list);
* benchmark: the ``[infer]`` line's ``Interface throughputRate`` in
  ``result/perf_vision_batchsize_{bs}_device_{id}.txt``.

Both are per device (one chip). The seed's 310 card figure multiplies the benchmark rate by 4
chips; that conversion belongs to the perf gate, which knows the target's unit.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import protocol
from ..dataset.dumps import write_dumps
from ..core.errors import BinsError, ToolError
from ..runners.base import RunnerError, RunRecord
from .device import AscendRunner, DeviceRun, stage_inputs, tool_timeout
from .parsers import ais_bench_model_batch, batch_mismatch, parse_benchmark_perf, read_ais_bench_summary
from .provenance import run_is_fake
from .tools import run_logged

_OUT_SHAPE = protocol.OUTPUT_SHAPE_CHW
# the seed's gen_dataset_info call writes "512 1024" (width and height swapped, written verbatim)
INFO_WIDTH, INFO_HEIGHT = "512", "1024"
INFO_NAME = "intraDA_deeplabv2_pre_bin_512_1024.info"  # the seed's info file name


# ----------------------------------------------------------------------------------------------
# ais_bench Python API

class AisBenchApiRunner(AscendRunner):
    """``ais_bench.infer.interface.InferSession`` in this process. The om's batch is static, so
    every call is cut into batches of ``batch_size`` and the last one is padded by repeating its first
    sample (what the CLI does); padded outputs are dropped."""

    kind = "ais_bench-api"

    def __init__(self, om: str | os.PathLike[str], *, batch_size: int, device_id: int = 0,
                 warmup: int = 1) -> None:
        super().__init__(om, batch_size=batch_size, device_id=device_id)
        self.warmup = warmup  # the CLI's --warmup_count default
        self._session: Any = None

    def _activate(self) -> None:
        self._check_om()
        try:
            with warnings.catch_warnings():  # see tools.ais_bench_api_error
                warnings.simplefilter("ignore")
                from ais_bench.infer.interface import InferSession
        except Exception as exc:  # ImportError, or OSError from the ACL shared libraries
            raise ToolError("ais_bench.infer.interface", f"cannot import the ais_bench Python API ({exc})",
                            "install the aclruntime and ais_bench wheels and source CANN's set_env.sh") from None
        try:
            self._session = InferSession(self.device_id, str(self.om))
        except Exception as exc:  # aclruntime raises RuntimeError with ACL error codes
            raise ToolError(f"ais_bench InferSession({self.device_id}, {self.om.name})",
                            f"cannot load the om ({str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r})",
                            "check --device-id and that the om was built for this chip (--soc-version)") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = [int(d) for d in getattr(inputs[0], "shape", [])] if inputs else []
        expected = [self.batch_size, *protocol.INPUT_SHAPE_CHW]
        if len(inputs) != 1 or not shape or shape[1:] != expected[1:]:
            self._finalize()
            raise ToolError(self.om, f"om input is {[list(getattr(i, 'shape', [])) for i in inputs]}, expected "
                            f"[{expected}]", f"convert with atc --input_shape=image:{self.batch_size},3,512,1024")
        if shape[0] != self.batch_size:
            self._finalize()
            raise ToolError(self.om, batch_mismatch(shape[0], self.batch_size, "its input shape via InferSession"),
                            f"rename it to <name>_bs{shape[0]}.om, or convert with atc "
                            f"--input_shape=image:{self.batch_size},3,512,1024")
        if len(outputs) != 2:
            self._finalize()
            raise ToolError(self.om, f"om has {len(outputs)} output(s), expected 2 (aux, main)",
                            "convert the two-output IntraDA ONNX")

    def _finalize(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.finalize()

    def _deactivate(self) -> None:
        self._finalize()

    def _infer_static(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = chunk.shape[0]
        if n < self.batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], self.batch_size - n, axis=0)])
        outputs = self._session.infer([np.ascontiguousarray(chunk)])
        heads = []
        for i, out in enumerate(outputs[:2]):
            arr = np.asarray(out, dtype=np.float32)
            if arr.size != self.batch_size * math.prod(_OUT_SHAPE):
                raise RunnerError(self.name, f"output {i} has {arr.size} values, expected "
                                  f"{self.batch_size} x {'x'.join(map(str, _OUT_SHAPE))}",
                                  "check that the om is the IntraDA model for 512x1024 input")
            heads.append(arr.reshape(self.batch_size, *_OUT_SHAPE)[:n])
        if len(heads) != 2:
            raise RunnerError(self.name, f"InferSession returned {len(outputs)} output(s), expected 2", None)
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
            first = read_bins([bins_dir / f"{names[0]}.bin"])
            for _ in range(self.warmup):  # the first run includes one-time setup; ais_bench leaves it out
                self._infer_static(first)
            self._session.reset_sumaryinfo()
            with tqdm(total=len(names), desc=f"{self.kind} bs{self.batch_size}", unit="img", disable=not progress,
                      leave=False) as bar:
                for start in range(0, len(names), self.batch_size):
                    chunk = names[start:start + self.batch_size]
                    aux, main = self._infer_static(read_bins([bins_dir / f"{n}.bin" for n in chunk]))
                    for i, name in enumerate(chunk):
                        write_dumps(out_dir, name, aux[i], main[i])
                    bar.update(len(chunk))
            times = [float(t) for t in self._session.sumary().exec_time_list]
        if not times or not all(math.isfinite(t) and t > 0 for t in times):
            raise ToolError(f"ais_bench InferSession({self.om.name})", f"sumary().exec_time_list is unusable: "
                            f"{times[:5]}", "update ais_bench; the throughput needs the NPU compute times")
        mean_ms = float(np.mean(times))
        return DeviceRun(self.kind, self.om, self.batch_size, self.device_id, out_dir, "ais_bench", tuple(names),
                         1000.0 * self.batch_size / mean_ms,
                         "ais_bench 1000*batchsize/mean(NPU compute time) from InferSession.sumary().exec_time_list",
                         fake=run_is_fake(self.kind),
                         details={"npu_compute_time_mean_ms": mean_ms, "npu_compute_runs": len(times)},
                         batch_source="the om's input shape (InferSession.get_inputs)", batch_verified=True)


# ----------------------------------------------------------------------------------------------
# ais_bench CLI

class AisBenchCliRunner(AscendRunner):
    """``python3 -m ais_bench --model M --input DIR --output OUT --output_dirname NAME --batchsize N
    --device D``; reads ``OUT/NAME/<stem>_{0,1}.bin`` and ``OUT/NAME_summary.json``."""

    kind = "ais_bench-cli"

    def __init__(self, om: str | os.PathLike[str], *, batch_size: int, device_id: int = 0,
                 python: str | None = None) -> None:
        super().__init__(om, batch_size=batch_size, device_id=device_id)
        # the interpreter that found the package, so the CLI sees the same environment
        self.python = python or sys.executable

    def command(self, input_dir: Path, output: Path, dirname: str) -> list[str]:
        # No --batchsize: ais_bench computes throughput from that flag without checking the model
        # (a bs1 om run with --batchsize 4 reports 4x its speed). Without it ais_bench reads dim 0
        # of the om's input and logs "try get model batchsize:N" (infer/__main__.py,
        # set_session_options -> miscellaneous.get_batchsize).
        return [self.python, "-m", "ais_bench", "--model", str(self.om), "--input", str(input_dir),
                "--output", str(output), "--output_dirname", dirname, "--device", str(self.device_id)]

    def run_split(self, bins_dir: str | os.PathLike[str], names: Sequence[str], out_dir: str | os.PathLike[str], *,
                  batch_size: int | None = None, progress: bool = False, desc: str | None = None) -> RunRecord:
        self._check_om()
        bins_dir, out_dir = Path(bins_dir), Path(out_dir).absolute()
        out_dir.mkdir(parents=True, exist_ok=True)
        input_dir = stage_inputs(bins_dir, names, out_dir / "inputs")
        dirname = f"bs{self.batch_size}"
        outputs = out_dir / dirname
        summary_path = out_dir / f"{dirname}_summary.json"
        for stale in (outputs, summary_path):  # files of an earlier run must not pass for this one's
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        cmd = self.command(input_dir, out_dir, dirname)
        log = out_dir / f"{dirname}.log"
        output = run_logged(cmd, what=f"ais_bench ({self.om.name}, bs{self.batch_size}, device {self.device_id})",
                            log_path=log, timeout=tool_timeout(len(names)),
                            hint="check --device-id, and that the om was built for this chip")
        summary = read_ais_bench_summary(summary_path)
        model_bs, source = ais_bench_model_batch(output, summary, summary_path)
        if model_bs != self.batch_size:
            raise ToolError(self.om, batch_mismatch(model_bs, self.batch_size, source),
                            f"rename it to <name>_bs{model_bs}.om, or convert with atc "
                            f"--input_shape=image:{self.batch_size},3,512,1024")
        return DeviceRun(self.kind, self.om, self.batch_size, self.device_id, outputs, "ais_bench", tuple(names),
                         summary["throughput"], f"ais_bench {summary_path.name} 'throughput' "
                         "(1000*batchsize/NPU_compute_time.mean)", tuple(cmd), log,
                         fake=run_is_fake(self.kind),
                         details={"npu_compute_time_mean_ms": summary["NPU_compute_time"].get("mean"),
                                  "summary": str(summary_path)},
                         batch_source=f"the om's input shape ({source})", batch_verified=True)


# ----------------------------------------------------------------------------------------------
# legacy benchmark.<arch>

class LegacyBenchmarkRunner(AscendRunner):
    """``./benchmark.<arch> -model_type=vision -device_id=D -batch_size=N -om_path=M -input_text_path=INFO
    -input_width=1024 -input_height=512 -output_binary=True -useDvpp=False`` run in a work directory;
    reads ``result/dumpOutput_device{D}/<stem>_{1,2}.bin`` and
    ``result/perf_vision_batchsize_{N}_device_{D}.txt``."""

    kind = "benchmark"

    def __init__(self, om: str | os.PathLike[str], *, batch_size: int, device_id: int = 0,
                 executable: str | os.PathLike[str] | None = None) -> None:
        super().__init__(om, batch_size=batch_size, device_id=device_id)
        if executable is None:  # on PATH, or ./benchmark.<arch> as the seed's scripts call it
            from .tools import benchmark_name, find_benchmark

            executable = find_benchmark()
            if executable is None:
                raise ToolError(benchmark_name(), "not found on PATH nor in the current directory",
                                "put the legacy benchmark tool on PATH or use --om-runner ais_bench-api")
        self.executable = Path(executable).absolute()

    def command(self, info_path: Path) -> list[str]:
        return [str(self.executable), "-model_type=vision", f"-device_id={self.device_id}",
                f"-batch_size={self.batch_size}", f"-om_path={self.om}", f"-input_text_path={info_path}",
                f"-input_width={protocol.INPUT_W}", f"-input_height={protocol.INPUT_H}", "-output_binary=True",
                "-useDvpp=False"]

    def run_split(self, bins_dir: str | os.PathLike[str], names: Sequence[str], out_dir: str | os.PathLike[str], *,
                  batch_size: int | None = None, progress: bool = False, desc: str | None = None) -> RunRecord:
        from ..dataset.info import write_info

        self._check_om()
        bins_dir, work = Path(bins_dir), Path(out_dir).absolute()
        work.mkdir(parents=True, exist_ok=True)
        input_dir = stage_inputs(bins_dir, names, work / "inputs").absolute()
        info = work / INFO_NAME
        write_info(input_dir, info, INFO_WIDTH, INFO_HEIGHT)
        result = work / "result"
        dumps = result / f"dumpOutput_device{self.device_id}"
        perf = result / f"perf_vision_batchsize_{self.batch_size}_device_{self.device_id}.txt"
        # the seed's eval_acc_perf.sh deletes the dump folder first: the tool adds to it otherwise
        if dumps.exists():
            shutil.rmtree(dumps)
        if perf.exists():
            perf.unlink()
        cmd = self.command(info)
        log = work / f"benchmark_bs{self.batch_size}.log"
        run_logged(cmd, what=f"{self.executable.name} ({self.om.name}, bs{self.batch_size}, device {self.device_id})",
                   log_path=log, cwd=work, timeout=tool_timeout(len(names)),
                   hint="check --device-id, and that the om was built for this chip")
        if not perf.is_file():
            raise ToolError(perf, "the benchmark tool wrote no perf file",
                            f"look in {result} for what it wrote; the seed reads this exact name")
        text = perf.read_text(errors="replace")
        rates = parse_benchmark_perf(text, perf)
        return DeviceRun(self.kind, self.om, self.batch_size, self.device_id, dumps, "benchmark", tuple(names),
                         rates["interface_throughput"],
                         f"benchmark {perf.name} [infer] 'Interface throughputRate' (per chip)", tuple(cmd), log,
                         fake=run_is_fake(self.kind),
                         details={"perf_file": str(perf), "e2e_throughput": rates.get("e2e_throughput")},
                         batch_source="-batch_size flag only: the legacy tool does not report the om's batch")


RUNNERS: dict[str, type[AscendRunner]] = {
    AisBenchApiRunner.kind: AisBenchApiRunner,
    AisBenchCliRunner.kind: AisBenchCliRunner,
    LegacyBenchmarkRunner.kind: LegacyBenchmarkRunner,
}


def make_runner(kind: str, om: Path, *, batch_size: int, device_id: int = 0) -> AscendRunner:
    if kind not in RUNNERS:
        raise ValueError(f"unknown runner kind {kind!r}; known: {', '.join(RUNNERS)}")
    return RUNNERS[kind](om, batch_size=batch_size, device_id=device_id)
