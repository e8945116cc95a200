"""The legacy benchmark tool runner (``benchmark.<arch>``, the seed's 310 tool)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path


from ..core import protocol
from ..core.errors import ToolError
from ..runners.base import RunRecord
from .device import AscendRunner, DeviceRun, stage_inputs, tool_timeout
from .parsers import parse_benchmark_perf
from .provenance import run_is_fake
from .tools import run_logged

_OUT_SHAPE = protocol.OUTPUT_SHAPE_CHW
# the seed's gen_dataset_info call writes "512 1024" (width and height swapped, written verbatim)
INFO_WIDTH, INFO_HEIGHT = "512", "1024"
INFO_NAME = "intraDA_deeplabv2_pre_bin_512_1024.info"  # the seed's info file name




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
