"""Fake of ``python3 -m ais_bench`` (the documented CLI, static-batch models).

* ``--input DIR`` takes every ``*.bin``/``*.npy`` in DIR, natural-sorted; files are combined into
  batches of (model input size / file size) and the last batch is padded with its first file,
  whose outputs are not saved.
* Outputs go to ``<output>/<output_dirname>/`` (or ``<output>/<YYYY_MM_DD-HH_MM_SS>/``), one file per
  input file and model output: ``<input basename up to the first '.'>_<i>.<bin|npy|txt>``, i 0-based.
* The summary ``<output>/<dirname>_summary.json`` has filesinfo, args, NPU_compute_time,
  H2D_latency, D2H_latency, throughput = 1000*batchsize/NPU_compute_time.mean, npu_compute_time_list,
  pid - and ``intrada_contract_fake``, which no real ais_bench writes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

import intrada_fake_npu as fake

from . import INTRADA_CONTRACT_FAKE


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "t", "yes", "y"):
        return True
    if text.lower() in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"Boolean value expected, got {text!r}")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is an invalid positive int value")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ais_bench")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", default=None)
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=_positive, default=1)
    p.add_argument("--debug", type=_bool, default=False)
    p.add_argument("--device", "-d", default="0")
    p.add_argument("--dymBatch", type=int, default=0)
    p.add_argument("--dymHW", default=None)
    p.add_argument("--dymDims", default=None)
    p.add_argument("--dymShape", default=None)
    p.add_argument("--outputSize", default=None)
    p.add_argument("--auto_set_dymshape_mode", type=_bool, default=False)
    p.add_argument("--auto_set_dymdims_mode", type=_bool, default=False)
    p.add_argument("--batchsize", type=_positive, default=None)
    p.add_argument("--pure_data_type", default="zero", choices=["zero", "random"])
    p.add_argument("--profiler", type=_bool, default=False)
    p.add_argument("--dump", type=_bool, default=False)
    p.add_argument("--acl_json_path", default=None)
    p.add_argument("--output_batchsize_axis", type=int, default=0)
    p.add_argument("--run_mode", default="array", choices=["array", "files", "tensor", "full"])
    p.add_argument("--display_all_summary", type=_bool, default=False)
    p.add_argument("--warmup_count", type=int, default=1)
    p.add_argument("--dymShape_range", default=None)
    return p


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _input_files(spec: str) -> list[str]:
    items = spec.split(",")
    if os.path.isdir(items[0]):
        if len(items) != 1:
            raise fake.FakeNpuError(f"Invalid args. args input dir num:{len(items)} not equal to model inputs num:1")
        names = sorted(n for n in os.listdir(items[0]) if n.endswith((".bin", ".npy")))
        return [os.path.join(items[0], n) for n in sorted(names, key=_natural_key)]
    for item in items:
        if not os.path.isfile(item):
            raise fake.FakeNpuError(f"Invalid input args.--input:{spec} {item} not exist")
    return items


def _stats(values: list[float]) -> dict:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "median": float(np.median(a)),
            "percentile(99%)": float(np.percentile(a, 99)), "count": len(values)}


def _save(path: str, array: np.ndarray, outfmt: str) -> None:
    if outfmt == "BIN":
        array.tofile(path)
    elif outfmt == "NPY":
        np.save(path, array)
    else:
        np.savetxt(path, array.reshape(-1, array.shape[-1]))


def run(args: argparse.Namespace) -> None:
    fake.injected_failure()
    if "," in str(args.device):
        raise fake.FakeNpuError("the fake runs on one device; multi-device --device lists are not implemented")
    device = int(args.device)
    for flag in ("dymHW", "dymDims", "dymShape", "outputSize", "acl_json_path", "dymShape_range"):
        if getattr(args, flag) is not None:
            raise fake.FakeNpuError(f"--{flag} is not implemented by the fake (static models only)")
    if args.dymBatch or args.profiler or args.dump or args.auto_set_dymshape_mode or args.auto_set_dymdims_mode:
        raise fake.FakeNpuError("dynamic shapes, profiler and dump are not implemented by the fake")
    if args.output is None and args.output_dirname is not None:
        raise fake.FakeNpuError("parameter --output_dirname cann't be used alone. Please use it together with "
                                "the parameter --output!")
    model = fake.FakeModel(args.model, device)
    desc = model.inputs[0]
    print(f"[INFO] load model {args.model} success")
    batchsize = args.batchsize if args.batchsize is not None else model.batch_size
    if args.batchsize is None:
        print(f"[INFO] try get model batchsize:{batchsize}")

    prefix = None
    if args.output is not None:
        prefix = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
        os.makedirs(prefix, exist_ok=True)
        print(f"[INFO] output path:{prefix}")

    if args.input is None:  # pure inference on zeros
        batches = [[None]]
        per_batch = 1
    else:
        files = _input_files(args.input)
        if not files:
            raise fake.FakeNpuError(f"no .bin/.npy files in {args.input}")
        file_size = os.path.getsize(files[0])
        if file_size == 0 or desc.realsize % file_size != 0:
            raise fake.FakeNpuError(f"arg0 tensorsize: {desc.realsize} filesize: {file_size} not match")
        per_batch = desc.realsize // file_size
        batches = [files[i:i + per_batch] for i in range(0, len(files), per_batch)]

    def load(batch: list) -> np.ndarray:
        if batch[0] is None:
            return np.zeros(desc.shape, dtype=np.float32)
        arrays = []
        for f in batch + [batch[0]] * (per_batch - len(batch)):  # pad with the chunk's first file
            data = np.load(f) if f.endswith(".npy") else np.fromfile(f, dtype=np.uint8)
            arrays.append(np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8))
        raw = np.concatenate(arrays)
        if raw.nbytes != desc.realsize:
            raise fake.FakeNpuError(f"ndata size:{raw.nbytes} not match {desc.realsize}")
        return raw.view(np.float32).reshape(desc.shape)

    for _ in range(args.warmup_count):
        model.run(load(batches[0]))
    print(f"[INFO] warm up {args.warmup_count} done")

    times: list[float] = []
    filesinfo: dict[str, dict] = {}
    for index, batch in enumerate(batches):
        outputs, ms = model.run(load(batch))
        times.extend([ms] * args.loop)
        if prefix is None:
            continue
        for j, infile in enumerate(batch):
            sample_id = index * per_batch + j
            stem = "pure_infer_data" if infile is None else os.path.basename(infile).split(".")[0]
            info = filesinfo.setdefault(str(sample_id), {"infiles": [] if infile is None else [infile], "outfiles": []})
            for i, out in enumerate(outputs):
                parts = np.array_split(out, per_batch, axis=args.output_batchsize_axis)
                path = os.path.join(prefix, f"{stem}_{i}.{args.outfmt.lower()}")
                _save(path, np.ascontiguousarray(parts[j]), args.outfmt)
                info["outfiles"].append(path)
        print(f"Inference array Processing: {index + 1}/{len(batches)}", flush=True)

    npu = _stats(times)
    throughput = 1000.0 * batchsize / npu["mean"] if npu["mean"] else 0
    summary = {"filesinfo": filesinfo, "args": sys.argv, "NPU_compute_time": npu, "H2D_latency": _stats([]),
               "D2H_latency": _stats([]), "throughput": throughput, "npu_compute_time_list": times,
               "pid": os.getpid(), "intrada_contract_fake": INTRADA_CONTRACT_FAKE}
    print("[INFO] -----------------Performance Summary------------------")
    print(f"[INFO] NPU_compute_time (ms): min = {npu['min']}, max = {npu['max']}, mean = {npu['mean']}, "
          f"median = {npu['median']}, percentile(99%) = {npu['percentile(99%)']}")
    print(f"[INFO] throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({npu['mean']}): {throughput}")
    print("[INFO] ------------------------------------------------------")
    if prefix is not None:
        with open(prefix + "_summary.json", "w") as f:
            json.dump(summary, f)


def main() -> int:
    fake.require_declared("ais_bench")
    args = parser().parse_args()
    try:
        run(args)
    except fake.FakeNpuError as exc:
        fake.fail("ais_bench", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
