"""Parsers of what the Ascend tools print and write, in one place.

Each follows the real tool (sources read from github.com/Ascend/tools ais-bench_workload/tool/ais_bench at
9d6da90, github.com/Ascend/msit ait/components/benchmark at 42a9c80, and the CANN documentation):

* ``npu-smi info``: the device table (driver tool; format from the CANN documentation's examples);
* ais_bench's ``<dirname>_summary.json`` (``ais_bench/infer/summary.py``: ``throughput`` =
  1000 * batchsize / NPU_compute_time.mean) and its log line ``try get model batchsize:N``
  (``infer/__main__.py`` set_session_options -> ``miscellaneous.get_batchsize``, printed when no
  --batchsize is passed; both generations: tools infer/__main__.py:41-43, msit
  infer/benchmark_process.py:77-79), which says ``-1`` for a dynamic-batch om;
* the legacy benchmark tool's ``perf_vision_batchsize_{bs}_device_{id}.txt`` (the seed's parse.py).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ToolError


@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    name: str  # e.g. "310P3", "310", "910B3"
    chip_id: int
    device_id: int | None  # the logical device id ais_bench / benchmark take; None when npu-smi omits it


@dataclass(frozen=True)
class NpuSmiInfo:
    version: str
    chips: tuple[NpuChip, ...]
    raw: str = field(repr=False, default="")

    def chip_name(self, device_id: int) -> str:
        """Name of the chip behind logical device ``device_id`` (the first chip when ids are absent)."""
        if not self.chips:
            raise ToolError("npu-smi info", "lists no NPU", "check the driver with `npu-smi info` and `dmesg`")
        for chip in self.chips:
            if chip.device_id == device_id:
                return chip.name
        if all(c.device_id is None for c in self.chips):
            return self.chips[0].name
        ids = ", ".join(str(c.device_id) for c in self.chips)
        raise ToolError("npu-smi info", f"no device {device_id} (devices: {ids})", "pass --device-id with one of them")


_ROW_RE = re.compile(r"^\|\s*(\d+)\s+(\S+)\s*\|")


def parse_npu_smi_info(text: str) -> NpuSmiInfo:
    """Parse the table of ``npu-smi info``.

    The device table has a header pair ``| NPU Name | Health ...`` / ``| Chip Device | Bus-Id ...``,
    then one block per NPU between ``+===...`` separators: its first row is ``| <npu> <name> | ...``
    and each further row is ``| <chip> <device> | <bus-id> ...`` (one per chip: a 310 card lists four
    chips). The process table that may follow (``| NPU Chip | Process id ...``) is ignored.
    """
    version = ""
    m = re.search(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)", text)
    if m:
        version = m.group(2)
    chips: list[NpuChip] = []
    in_devices = False
    block: list[tuple[int, str]] = []

    def flush() -> None:
        if block:
            npu_id, name = block[0]
            rows = block[1:] or [(0, "")]
            for chip_id, device in rows:
                chips.append(NpuChip(npu_id, name, chip_id, int(device) if device.isdigit() else None))
        block.clear()

    for raw_line in text.splitlines():
        line = raw_line.strip()
        if re.match(r"^\|\s*NPU\s+Name\b", line):
            in_devices = True
            continue
        if re.match(r"^\|\s*NPU\s+Chip\b", line):  # the process table
            flush()
            in_devices = False
            continue
        if not in_devices:
            continue
        if line.startswith("+"):
            flush()
            continue
        row = _ROW_RE.match(line)
        if row:
            block.append((int(row.group(1)), row.group(2)))
    flush()
    return NpuSmiInfo(version, tuple(chips), text)


def batch_mismatch(model_bs: int, expected: int, source: str) -> str:
    return (f"the om's batch size is {model_bs} ({source}) but it was given as bs{expected} (its file name or "
            f"--batch-sizes); a throughput computed with bs{expected} would be {expected / model_bs:g}x its real value")


_MODEL_BATCH_RE = re.compile(r"try get model batchsize:\s*(\d+)")


def ais_bench_model_batch(output: str, summary: dict[str, Any], where: Path) -> tuple[int, str]:
    """The batch size ais_bench ran the om with, from what it says of the model: the log line
    ``try get model batchsize:N`` (printed when no --batchsize is passed), cross-checked with the
    summary, whose throughput is ``1000 * batchsize / NPU_compute_time.mean`` (summary.py)."""
    mean = summary["NPU_compute_time"].get("mean")
    from_summary = None
    if isinstance(mean, (int, float)) and mean > 0:
        from_summary = summary["throughput"] * mean / 1000.0
    m = _MODEL_BATCH_RE.findall(output)
    if m:
        logged = int(m[-1])
        if from_summary is not None and abs(from_summary - logged) > 0.01 * logged:
            raise ToolError(where, f"throughput {summary['throughput']:.3f} with NPU_compute_time.mean {mean} ms "
                            f"implies batch size {from_summary:.2f}, but ais_bench read {logged} from the om",
                            "the summary does not belong to this run; re-run ais_bench")
        return logged, "ais_bench: 'try get model batchsize'"
    if from_summary is None or abs(from_summary - round(from_summary)) > 0.01 or round(from_summary) < 1:
        raise ToolError(where, "cannot tell the batch size ais_bench ran the om with: no 'try get model batchsize' "
                        f"line and the summary's throughput/NPU_compute_time give {from_summary!r}",
                        "use an ais_bench that reads the batch from the om (2023 or newer), or the Python API runner")
    return int(round(from_summary)), "ais_bench summary: throughput x NPU_compute_time.mean / 1000"


# get_batchsize returns dim 0 of the om's input, -1 for a dynamic-batch om (tools infer/miscellaneous.py:59-71,
# msit infer/miscellaneous.py:155-169); msit then refuses to run (infer/benchmark_process.py:81-83)
_DYNAMIC_BATCH_RE = re.compile(r"try get model batchsize:\s*-\d+|dynamic batch om model detected")


def ais_bench_dynamic_batch(output: str) -> bool:
    """Whether ais_bench's log says the om has a dynamic batch (and no --dymBatch was given)."""
    return _DYNAMIC_BATCH_RE.search(output) is not None


def ais_bench_failure_hint(output: str) -> str | None:
    """What to do about a known ais_bench failure, from its log."""
    if "aclruntime_version" in output and ("UnboundLocalError" in output or "pkg_resources" in output):
        # msit infer/miscellaneous.py:49-70 reads aclruntime's version with pkg_resources, which
        # setuptools 82 removed, and then uses an unset variable
        return ("this ais_bench reads aclruntime's version with pkg_resources, which setuptools 82 removed: "
                "pip install 'setuptools<82', or use --om-runner ais_bench-api")
    return None


def read_ais_bench_summary(path: Path) -> dict[str, Any]:
    """The ``<dirname>_summary.json`` ais_bench writes beside its output folder, checked."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolError(path, "ais_bench wrote no summary file",
                        "this ais_bench is too old or was interrupted; it writes <output>/<dirname>_summary.json") from None
    except ValueError as exc:
        raise ToolError(path, f"summary is not JSON ({exc})", "re-run ais_bench") from None
    throughput = data.get("throughput") if isinstance(data, dict) else None
    if not isinstance(throughput, (int, float)) or isinstance(throughput, bool) or not math.isfinite(throughput) \
            or throughput <= 0:
        raise ToolError(path, f"'throughput' is {throughput!r}, expected a positive number",
                        "ais_bench reports 0 when it timed no inference; check the run's log")
    if not isinstance(data.get("NPU_compute_time"), dict):
        raise ToolError(path, "no 'NPU_compute_time' in the summary", "this file was not written by ais_bench")
    return data


_PERF_LINE_RE = re.compile(r"^\s*\[(?P<label>[^\]]+)\]\s*(?P<body>.*)$")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_benchmark_perf(text: str, where: str | os.PathLike[str] = "perf file") -> dict[str, float]:
    """``[infer] throughputRate: X, Interface throughputRate: Z, moduleLatency: W`` -> Z (and the e2e
    rate). Older tools label the lines ``[inference]`` / ``[postprocess]``; values may carry a
    ``samples/s`` unit (the seed's parse.py strips it)."""
    fields: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _PERF_LINE_RE.match(line)
        if not m:
            continue
        label = m.group("label").strip().lower()
        values: dict[str, float] = {}
        for item in m.group("body").split(","):
            if ":" not in item:
                continue
            key, _, raw = item.partition(":")
            num = _NUMBER_RE.search(raw)
            if num:
                values[key.strip()] = float(num.group(0))
        fields[label] = values
    infer = fields.get("infer") or fields.get("inference")
    rate = None if infer is None else infer.get("Interface throughputRate")
    if rate is None or not math.isfinite(rate) or rate <= 0:
        raise ToolError(where, f"no positive 'Interface throughputRate' on an [infer] line (got {rate!r})",
                        "this is not a benchmark perf_vision_*.txt file, or the run timed nothing")
    out = {"interface_throughput": rate}
    e2e = fields.get("e2e", {}).get("throughputRate")
    if e2e is not None:
        out["e2e_throughput"] = e2e
    return out
