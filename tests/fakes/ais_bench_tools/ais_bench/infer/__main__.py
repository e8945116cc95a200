"""Fake of the tools-generation CLI, ``python3 -m ais_bench`` (github.com/Ascend/tools 9d6da90,
ais-bench_workload/tool/ais_bench/ais_bench/infer/__main__.py), for static and dynamic-batch oms:

* flags as ``get_args`` (:215-265), snake_case, ``--dymBatch`` an int defaulting to 0; no path is
  checked;
* ``version_check`` (miscellaneous.py:9-24): aclruntime's version through ``pkg_resources``; when
  that fails (no pkg_resources, setuptools 82+) or says 0.0.1, a warning and ``--run_mode tensor``;
* ``set_session_options`` (:27-49): ``--dymBatch N`` calls ``set_dynamic_batchsize(N)``, else
  ``set_staticbatch()``; without ``--batchsize`` the batch is dim 0 of input 0 (``--dymBatch`` when
  given, miscellaneous.py:59-71), logged as ``try get model batchsize:N``; a dynamic-batch om
  without ``--dymBatch`` is not refused (it logs batchsize -1);
* ``main`` (:275-351): the output folder ``<output>/<output_dirname or timestamp>`` (0o755), the
  batches (intrada_fake_aisbench), ``warmup`` (:83-104: warmup_count runs, then the timings are
  reset with ``reset_sumaryinfo``), the ``array`` / ``tensor`` run loops (:114-124, :155-164), the
  summary with ``npu_compute_time_list = sumary().exec_time_list`` as is (:340-345), then
  ``session.finalize()`` (:351);
* a failure is a Python exception: a traceback and exit status 1.

Not implemented (a RuntimeError says so): profiler, dump, acl.json, multi-device lists, dynamic HW /
dims / shape, ``--dymShape_range``.
"""
import argparse
import os
import sys
import time

import intrada_fake_aisbench as common
import intrada_fake_npu as fake
from ais_bench.infer.interface import InferSession, MemorySummary


def _bool(v):
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def _positive(value):
    ivalue = int(value)
    if ivalue <= 0:
        raise argparse.ArgumentTypeError("%s is an invalid positive int value" % value)
    return ivalue


def _nonnegative(value):
    ivalue = int(value)
    if ivalue < 0:
        raise argparse.ArgumentTypeError("%s is an invalid nonnegative int value" % value)
    return ivalue


def _device(value):
    if "," in value:
        return [int(v) for v in value.split(",")]
    ivalue = int(value)
    if not 0 <= ivalue <= 255:
        raise argparse.ArgumentTypeError(f"device:{ivalue} is invalid. valid value range is [0, 255]")
    return ivalue


def get_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", default=None)
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", type=str, default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=_positive, default=1)
    p.add_argument("--debug", type=_bool, default=False)
    p.add_argument("--device", "-d", type=_device, default=0)
    p.add_argument("--dymBatch", type=int, default=0)
    p.add_argument("--dymHW", type=str, default=None)
    p.add_argument("--dymDims", type=str, default=None)
    p.add_argument("--dymShape", type=str, default=None)
    p.add_argument("--outputSize", type=str, default=None)
    p.add_argument("--auto_set_dymshape_mode", type=_bool, default=False)
    p.add_argument("--auto_set_dymdims_mode", type=_bool, default=False)
    p.add_argument("--batchsize", type=lambda v: None if v is None else _positive(v), default=None)
    p.add_argument("--pure_data_type", type=str, default="zero", choices=["zero", "random"])
    p.add_argument("--profiler", type=_bool, default=False)
    p.add_argument("--dump", type=_bool, default=False)
    p.add_argument("--acl_json_path", type=str, default=None)
    p.add_argument("--output_batchsize_axis", type=_nonnegative, default=0)
    p.add_argument("--run_mode", type=str, default="array", choices=["array", "files", "tensor", "full"])
    p.add_argument("--display_all_summary", type=_bool, default=False)
    p.add_argument("--warmup_count", type=_nonnegative, default=1)
    p.add_argument("--dymShape_range", type=str, default=None)
    args = p.parse_args()
    if args.output is None and args.output_dirname is not None:
        common.error("parameter --output_dirname cann't be used alone. Please use it together with the parameter "
                     "--output!\n")
        raise RuntimeError("error bad parameters --output_dirname")
    return args


def version_check(args):
    try:
        import pkg_resources
        version = pkg_resources.get_distribution("aclruntime").version
    except Exception:  # as upstream: any failure means "unknown"
        version = None
    if version is None or version == "0.0.1":
        common.warning(f"aclruntime version:{version} is lower please update aclruntime follow any one method")
        args.run_mode = "tensor"


def set_session_options(session, args):
    if args.dymBatch != 0:
        session.set_dynamic_batchsize(args.dymBatch)
    elif args.dymHW is not None or args.dymDims is not None or args.dymShape is not None:
        raise RuntimeError("the fake ais_bench implements --dymBatch only")
    else:
        session.set_staticbatch()
    if args.batchsize is None:
        args.batchsize = int(args.dymBatch) if args.dymBatch != 0 else session.get_inputs()[0].shape[0]
        common.info(f"try get model batchsize:{args.batchsize}")
    if args.outputSize is not None:
        raise RuntimeError("the fake ais_bench does not implement --outputSize")


def main(args):
    for flag in ("profiler", "dump", "auto_set_dymshape_mode", "auto_set_dymdims_mode"):
        if getattr(args, flag):
            raise RuntimeError(f"the fake ais_bench does not implement --{flag}")
    if args.acl_json_path is not None or args.dymShape_range is not None or isinstance(args.device, list):
        raise RuntimeError("the fake ais_bench does not implement acl.json, --dymShape_range or device lists")
    if args.run_mode not in ("array", "tensor"):
        raise RuntimeError(f"the fake ais_bench implements --run_mode array and tensor, not {args.run_mode}")
    session = InferSession(args.device, args.model, None, args.debug, args.loop)
    set_session_options(session, args)
    desc = session.get_inputs()[0]
    prefix = None
    if args.output is not None:
        prefix = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
        if not os.path.exists(prefix):
            os.makedirs(prefix, 0o755)
        common.info(f"output path:{prefix}")
    if args.input is None:
        raise RuntimeError("the fake ais_bench does not implement pure inference (no --input)")
    items = args.input.split(",")
    if not os.path.isdir(items[0]) or len(items) != 1:
        raise RuntimeError("the fake ais_bench takes one input folder")
    batches, _ = common.batches(common.folder_files(items[0]), desc.realsize)

    def feed(files):
        data = common.read_batch(files, desc.realsize, lambda p: open(p, "rb").read())
        return session.create_tensor_from_arrays_to_device(data) if args.run_mode == "tensor" else data

    session.set_loop_count(1)
    for _ in range(args.warmup_count):
        session.run([feed(batches[0])], True)
    session.set_loop_count(args.loop)
    summary = common.Summary()
    session.reset_sumaryinfo()
    MemorySummary.reset()
    common.info(f"warm up {args.warmup_count} done")
    for i, files in enumerate(batches):
        outputs = session.run([feed(files)])
        session.convert_tensors_to_host(outputs)
        if args.output is not None:
            summary.save_outputs(outputs, prefix, files, args.outfmt, i, args.output_batchsize_axis, common.save_plain)
        print(f"Inference {args.run_mode} Processing: {i + 1}/{len(batches)}", flush=True)
    summary.npu_compute_time_list = session.sumary().exec_time_list
    summary.report(args.batchsize, prefix, common.write_json_plain)
    session.finalize()


if __name__ == "__main__":
    fake.require_declared("ais_bench")
    arguments = get_args()
    version_check(arguments)
    main(arguments)
