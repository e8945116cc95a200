"""What the two ais_bench CLIs (the fakes in tests/fakes/ais_bench_tools and tests/fakes/ais_bench_msit)
do alike: how input files become batches, how outputs are named and what the summary holds.

Both generations do these steps the same way; the citations give both (T = github.com/Ascend/tools
9d6da90 ais-bench_workload/tool/ais_bench/ais_bench/infer, M = github.com/Ascend/msit 42a9c80
ait/components/benchmark/ais_bench/infer):

* a folder's ``*.bin``/``*.npy`` (and upper-case) files, sorted then natural-sorted
  (T utils.py:21-41, M utils.py:71-94);
* files per batch = input 0's ``realsize`` / the first file's size, the last batch padded with
  ``padding_infer_fake_file`` entries that read the batch's first file (T io_oprations.py:42-65,
  :75-111, utils.py:12-19; M io_oprations.py:66-93, :106-158, utils.py:50-56);
* outputs ``<prefix>/<first input file's basename up to the first '.'>_<i>.<fmt>``, one per sample
  and output, none for padding (T io_oprations.py:175-203, M io_oprations.py:293-338);
* ``<prefix>_summary.json`` with filesinfo, args, NPU_compute_time / H2D_latency / D2H_latency
  statistics, throughput = 1000 * batchsize / mean, npu_compute_time_list and pid (T summary.py,
  M summary.py:105-226), and the same ``[INFO]`` log lines (logging format ``[%(levelname)s]
  %(message)s`` on stdout).

The summary also carries ``intrada_contract_fake``, which no real ais_bench writes.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PADDING = "padding_infer_fake_file"
MARKER = "intrada-contract-fake"


def info(message: str) -> None:
    print(f"[INFO] {message}", flush=True)


def warning(message: str) -> None:
    print(f"[WARNING] {message}", flush=True)


def error(message: str) -> None:
    print(f"[ERROR] {message}", flush=True)


def natural_sort(items: list[str]) -> list[str]:
    def key(text: str) -> list[Any]:
        return [int(t) if t.isdigit() else t.lower() for t in re.split("([0-9]+)", text)]
    return sorted(items, key=key)


def folder_files(folder: str, check: Callable[[str], None] | None = None) -> list[str]:
    """The input files of a folder; ``check`` sees every entry first (M utils.py:80-86)."""
    if not os.path.exists(folder):
        error(f"dir:{folder} not exist")
        raise RuntimeError()
    files = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if check is not None:
            check(path)
            if os.path.isdir(path):
                continue
        if name.endswith((".npy", ".NPY", ".bin", ".BIN")):
            files.append(path)
    if not files:
        error(f"{folder} of input args not find valid file,valid file format:[*.npy *.NPY *.bin *.BIN]")
        raise RuntimeError()
    files.sort()
    return natural_sort(files)


def batches(files: list[str], realsize: int) -> tuple[list[list[str]], int]:
    """(the files of each batch, padded; files per batch)."""
    size = int(np.load(files[0]).nbytes) if files[0].lower().endswith(".npy") else os.path.getsize(files[0])
    if size == 0 or realsize % size != 0:
        error(f"arg0 tensorsize: {realsize} filesize: {size} not match")
        raise RuntimeError()
    per_batch = realsize // size
    out = []
    for i in range(0, len(files), per_batch):
        chunk = files[i:i + per_batch]
        out.append(chunk + [PADDING] * (per_batch - len(chunk)))
    info(f"get filesperbatch files0 size:{size} tensor0size:{realsize} filesperbatch:{per_batch} runcount:{len(out)}")
    return out, per_batch


def read_batch(files: list[str], realsize: int, read: Callable[[str], bytes]) -> np.ndarray:
    """The batch's bytes as an int8 array (T utils.py:50-56, M utils.py:105-111)."""
    parts = []
    for path in files:
        source = files[0] if path == PADDING else path
        if source.lower().endswith(".npy"):
            parts.append(np.frombuffer(np.ascontiguousarray(np.load(source)).tobytes(), dtype=np.int8))
        else:
            parts.append(np.frombuffer(read(source), dtype=np.int8))
    data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if len(parts) > 1 and data.nbytes != realsize:
        error(f"ndata size:{data.nbytes} not match {realsize}")
        raise RuntimeError()
    return data


class Summary:
    def __init__(self) -> None:
        self.infodict: dict[str, Any] = {"filesinfo": {}}
        self.npu_compute_time_list: list[float] = []

    def reset(self) -> None:
        self.npu_compute_time_list = []

    def save_outputs(self, outputs: Sequence[Any], prefix: str, infiles: list[str], outfmt: str, index: int,
                     axis: int, write: Callable[[str, np.ndarray], None]) -> None:
        per_batch = len(infiles)
        for i, out in enumerate(outputs):
            data = np.array(out)
            if per_batch != 1 and data.shape[axis] % per_batch != 0:
                error(f"save out files error array shape:{data.shape} files_count_perbatch:{per_batch}")
                raise RuntimeError()
            parts = np.array_split(data, per_batch, axis)
            for j, infile in enumerate(infiles):
                if infile == PADDING:
                    continue
                sample = str(index * per_batch + j)
                path = os.path.join(prefix, f"{os.path.basename(infile).split('.')[0]}_{i}.{outfmt.lower()}")
                entry = self.infodict["filesinfo"].setdefault(sample, {"infiles": [], "outfiles": []})
                if not entry["infiles"]:
                    entry["infiles"].append(infile)
                entry["outfiles"].append(path)
                write(path, np.ascontiguousarray(parts[j]))

    @staticmethod
    def _stats(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
        a = np.asarray(values)
        return {"min": float(np.min(a)), "max": float(np.max(a)), "mean": float(np.mean(a)),
                "median": float(np.median(a)), "percentile(99%)": float(np.percentile(a, 99)), "count": len(values)}

    def report(self, batchsize: int, prefix: str | None, write_json: Callable[[str, dict[str, Any]], None]) -> None:
        npu = self._stats(self.npu_compute_time_list)
        throughput = 0 if npu["mean"] == 0 else 1000 * batchsize / npu["mean"]
        self.infodict.update({"args": sys.argv, "NPU_compute_time": npu, "H2D_latency": self._stats([]),
                              "D2H_latency": self._stats([]), "throughput": throughput,
                              "npu_compute_time_list": self.npu_compute_time_list, "pid": os.getpid(),
                              "intrada_contract_fake": MARKER})
        info("-----------------Performance Summary------------------")
        info(f"NPU_compute_time (ms): min = {npu['min']}, max = {npu['max']}, mean = {npu['mean']}, median = "
             f"{npu['median']}, percentile(99%) = {npu['percentile(99%)']}")
        info(f"throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({npu['mean']}): {throughput}")
        info("------------------------------------------------------")
        if prefix is not None:
            write_json(prefix + "_summary.json", self.infodict)


def write_json_plain(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f)


def save_plain(path: str, data: np.ndarray) -> None:
    """T utils.py:65-76: npy, txt rows of the last axis, else raw bytes."""
    if path.lower().endswith(".npy"):
        np.save(path, data)
    elif path.lower().endswith(".txt"):
        np.savetxt(path, data.reshape(-1, data.shape[-1]))
    else:
        data.tofile(path)
