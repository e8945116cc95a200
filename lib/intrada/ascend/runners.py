"""Running an om: the ais_bench Python API, the ``python3 -m ais_bench`` CLI, the legacy benchmark tool.

Each is a :class:`~intrada.runners.base.Runner` (``with runner: aux, main = runner.infer(batch)``)
through :class:`intrada.ascend.device.AscendRunner`, and each can also run a whole directory of
preprocessed bins, which is how the device tools work and where their own throughput comes from:
:meth:`AscendRunner.run_split` returns a :class:`~intrada.ascend.device.DeviceRun` (the
per-sample output files in the tool's naming + the tool's throughput).

Throughput is always the tool's own timing of the device, never a wall clock around a subprocess:

* ais_bench (API and CLI, either generation, :mod:`intrada.ascend.aisbench`): ``throughput = 1000 *
  batchsize / mean(NPU compute time in ms)``, the summary's ``throughput``; the API's
  ``summary().exec_time_list`` (``sumary()`` in the tools generation) gives the same times;
* benchmark: the ``[infer]`` line's ``Interface throughputRate`` in
  ``result/perf_vision_batchsize_{bs}_device_{id}.txt``.

Both are per device (one chip). The seed's 310 card figure multiplies the benchmark rate by 4
chips; that conversion belongs to the perf gate, which knows the target's unit.
"""
from __future__ import annotations

import gc
import importlib
import math
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import protocol
from ..dumps import write_dumps
from ..errors import BinsError, IntradaError, ToolError
from ..runners.base import RunRecord
from .aisbench import (ACL_LIFETIME, PATH_CHARS, AisBenchPackage, Frontend, check_status, detect_frontend,
                       file_problem, find_package, npu_compute_ms, path_string_problem, throughput_fps)
from .device import STAGED_DIR_MODE, AscendRunner, DeviceRun, stage_inputs, tool_timeout
from .parsers import (ais_bench_dynamic_batch, ais_bench_failure_hint, ais_bench_model_batch, batch_mismatch,
                      parse_benchmark_perf, read_ais_bench_summary)
from .provenance import run_is_fake
from .tools import run_logged

_OUT_SHAPE = protocol.OUTPUT_SHAPE_CHW
# the seed's gen_dataset_info call writes "512 1024" (width and height swapped, written verbatim)
INFO_WIDTH, INFO_HEIGHT = "512", "1024"
INFO_NAME = "intraDA_deeplabv2_pre_bin_512_1024.info"  # the seed's info file name


# ----------------------------------------------------------------------------------------------
# ais_bench Python API

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

        from ..preprocess import read_bins

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


# ----------------------------------------------------------------------------------------------
# ais_bench CLI

class AisBenchCliRunner(AscendRunner):
    """``python3 -m ais_bench --model M --input inputs --output . --output_dirname NAME --device D``
    run in the output folder; reads ``NAME/<stem>_{0,1}.bin`` and ``NAME_summary.json`` there.

    The command line is the one both generations take. Paths are what msit's CLI accepts: the
    inputs are staged as real files in ``inputs`` (:func:`stage_inputs`), the folders are given
    relative to the working directory (only ``[_A-Za-z0-9/.-]``, whatever the temporary folder's
    path), the om by its resolved path (msit refuses a symlink), checked first so that a path msit
    refuses is one line naming it. A dynamic-batch om (the log's ``try get model batchsize:-1``, or
    msit's refusal) is run again with ``--dymBatch N``, which both generations take."""

    kind = "ais_bench-cli"

    def __init__(self, om: str | os.PathLike[str], *, batch_size: int, device_id: int = 0,
                 python: str | None = None) -> None:
        super().__init__(om, batch_size=batch_size, device_id=device_id)
        # the interpreter that found the package, so the CLI sees the same environment
        self.python = python or sys.executable
        self.package: AisBenchPackage | None = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.package is not None:
            info.update({f"ais_bench_{k}": v for k, v in self.package.as_dict().items()})
        return info

    def command(self, input_dir: str, output: str, dirname: str, *, om: str | None = None,
                dym_batch: int | None = None) -> list[str]:
        # No --batchsize: ais_bench computes throughput from that flag without checking the model
        # (a bs1 om run with --batchsize 4 reports 4x its speed). Without it ais_bench reads dim 0
        # of the om's input and logs "try get model batchsize:N" (tools infer/__main__.py:41-43,
        # msit infer/benchmark_process.py:77-79).
        cmd = [self.python, "-m", "ais_bench", "--model", om or str(self.om), "--input", input_dir,
               "--output", output, "--output_dirname", dirname, "--device", str(self.device_id)]
        if dym_batch is not None:
            cmd += ["--dymBatch", str(dym_batch)]
        return cmd

    def _model_path(self, package: AisBenchPackage) -> str:
        """The om as ais_bench is given it: resolved (msit refuses a symlink), and checked the way
        msit checks --model (infer/args_check.py:121-133) when this ais_bench checks paths."""
        real = os.path.realpath(self.om)
        if package.checks_paths:
            problem = file_problem(real)
            if problem is None and not real.endswith(".om"):
                problem = "does not end in .om"
            if problem is not None:
                raise ToolError(real, f"msit's ais_bench CLI refuses this om path ({problem})",
                                "keep oms (--om, or the gate's cache: --cache-dir) on a path of "
                                f"[{PATH_CHARS}] only, owned by you and not group/other-writable (chmod go-w), "
                                "or use --om-runner ais_bench-api, which does not check paths")
        return real

    def _run(self, cmd: list[str], log: Path, cwd: Path, images: int) -> str:
        try:
            return run_logged(cmd, what=f"ais_bench ({self.om.name}, bs{self.batch_size}, device {self.device_id})",
                              log_path=log, cwd=cwd, timeout=tool_timeout(images),
                              hint="check --device-id, and that the om was built for this chip")
        except ToolError as exc:
            text = log.read_text(errors="replace") if log.is_file() else ""
            hint = ais_bench_failure_hint(text)
            if hint is not None:
                raise ToolError(exc.where, exc.problem, f"{hint}; full log: {log}") from None
            raise

    def run_split(self, bins_dir: str | os.PathLike[str], names: Sequence[str], out_dir: str | os.PathLike[str], *,
                  batch_size: int | None = None, progress: bool = False, desc: str | None = None) -> RunRecord:
        self._check_om()
        self.package = package = find_package()
        if not package.inference_tool:
            raise ToolError(f"{self.python} -m ais_bench", package.label(),
                            "install ais_bench with its aclruntime (see README) or choose another --om-runner")
        model = self._model_path(package)
        bad = [n for n in names if path_string_problem(f"{n}.bin") is not None] if package.checks_paths else []
        if bad:
            raise ToolError(Path(bins_dir) / f"{bad[0]}.bin", "msit's ais_bench CLI refuses this input file name "
                            f"({path_string_problem(bad[0] + '.bin')})", "use --om-runner ais_bench-api")
        bins_dir, out_dir = Path(bins_dir), Path(out_dir).absolute()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(out_dir, STAGED_DIR_MODE)  # msit checks --output (infer/args_check.py:150-160), chmods it 0o750
        except OSError as exc:
            raise ToolError(out_dir, f"cannot prepare the output folder ({exc.strerror})",
                            "run with an output folder you own on a writable disk") from None
        stage_inputs(bins_dir, names, out_dir / "inputs")
        dirname = f"bs{self.batch_size}"
        outputs = out_dir / dirname
        summary_path = out_dir / f"{dirname}_summary.json"

        def clean() -> None:  # files of an earlier run must not pass for this one's
            for stale in (outputs, summary_path):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()

        clean()
        cmd = self.command("inputs", ".", dirname, om=model)
        log = out_dir / f"{dirname}.log"
        dym_batch = None
        try:
            output = self._run(cmd, log, out_dir, len(names))
            dynamic = ais_bench_dynamic_batch(output)
        except ToolError:
            if not (log.is_file() and ais_bench_dynamic_batch(log.read_text(errors="replace"))):
                raise
            dynamic = True
        if dynamic:  # msit refused it; tools ran it with batchsize -1 (a throughput of no meaning)
            clean()
            dym_batch = self.batch_size
            cmd = self.command("inputs", ".", dirname, om=model, dym_batch=dym_batch)
            log = out_dir / f"{dirname}_dymbatch.log"
            output = self._run(cmd, log, out_dir, len(names))
        summary = read_ais_bench_summary(summary_path)
        model_bs, source = ais_bench_model_batch(output, summary, summary_path)
        if model_bs != self.batch_size:
            raise ToolError(self.om, batch_mismatch(model_bs, self.batch_size, source),
                            f"rename it to <name>_bs{model_bs}.om, or convert with atc "
                            f"--input_shape=image:{self.batch_size},3,512,1024")
        if dym_batch is not None:
            source = f"a dynamic-batch om run at its bs{dym_batch} profile (--dymBatch {dym_batch})"
        return DeviceRun(self.kind, self.om, self.batch_size, self.device_id, outputs, "ais_bench", tuple(names),
                         summary["throughput"], f"ais_bench {summary_path.name} 'throughput' "
                         "(1000*batchsize/NPU_compute_time.mean)", tuple(cmd), log,
                         fake=run_is_fake(self.kind),
                         details={"npu_compute_time_mean_ms": summary["NPU_compute_time"].get("mean"),
                                  "summary": str(summary_path), "cwd": str(out_dir),
                                  **{f"ais_bench_{k}": v for k, v in package.as_dict().items()}},
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
        from ..info import write_info

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
