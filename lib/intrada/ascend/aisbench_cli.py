"""The ais_bench CLI runner: ``python3 -m ais_bench`` in a subprocess, either generation
(:mod:`intrada.ascend.aisbench`), on inputs staged as the strictest one accepts."""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from ..core import protocol
from ..core.errors import ToolError
from ..runners.base import RunRecord
from .aisbench import AisBenchPackage, find_package
from .pathrules import PATH_CHARS, file_problem, path_string_problem
from .device import STAGED_DIR_MODE, AscendRunner, DeviceRun, stage_inputs, tool_timeout
from .parsers import (ais_bench_dynamic_batch, ais_bench_failure_hint, ais_bench_model_batch, batch_mismatch,
                      read_ais_bench_summary)
from .provenance import run_is_fake
from .tools import run_logged

_OUT_SHAPE = protocol.OUTPUT_SHAPE_CHW
# the seed's gen_dataset_info call writes "512 1024" (width and height swapped, written verbatim)
INFO_WIDTH, INFO_HEIGHT = "512", "1024"
INFO_NAME = "intraDA_deeplabv2_pre_bin_512_1024.info"  # the seed's info file name




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
