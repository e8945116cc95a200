"""Fake of msit's ``ais_bench.infer.benchmark_process`` (github.com/Ascend/msit 42a9c80,
ait/components/benchmark/ais_bench/infer/benchmark_process.py), for static and dynamic-batch oms:

* ``args_rules`` (:654-684): an absolute ``--output_dirname`` is a ValueError; ``--output_dirname``
  needs ``--output``;
* ``version_check`` (miscellaneous.py:49-70): aclruntime's version through ``pkg_resources``; when
  that import or lookup fails, a warning and ``--run_mode tensor``, and then the unset version is
  read: an UnboundLocalError (so this CLI fails where setuptools 82+ removed pkg_resources); a
  version other than 0.0.2 also means ``--run_mode tensor``;
* ``set_session_options`` (:61-111): ``--dymBatch N`` calls ``set_dynamic_batchsize(N)`` and
  ``get_max_dym_batchsize()``, else ``set_staticbatch()``; without ``--batchsize`` the batch is dim
  0 of input 0 (or N), logged as ``try get model batchsize:N``; a dynamic-batch om (batch < 0)
  without a dynamic flag raises "dynamic batch om model detected, but dymbatch, dymdims or dymshape
  not set!" (:81-83); ``get_dym_aipp_input_exist`` must be 0;
* ``main`` (:417-569): the output folder is created 0o750 and ``--output`` chmod'ed 0o750
  (:454-463); every entry of the input folder passes ``FileStat(...).is_basically_legal('read')``
  (utils.py:77-94, a RuntimeError "input data:... is illegal"), files are read with ``ms_open``;
  ``warmup`` resets the timings with ``reset_summaryinfo`` (:150-173); the ``array`` / ``tensor``
  loops (:200-265); ``npu_compute_time_list = [end - start for start, end in
  summary().exec_time_list]`` (:537-541); outputs and the summary JSON written 0o640 (ms_open);
  then ``free_resource()`` and the static ``InferSession.finalize()`` (:562-566).

Not implemented (a RuntimeError says so): profiler, dump, acl.json, AIPP, pipelines, energy,
multi-device lists, dynamic HW / dims / shape, ``--dymShape_range``, the trtexec backend.
"""
import json
import logging
import os
import sys
import time

import numpy as np

import intrada_fake_aisbench as common
from ais_bench.infer.interface import InferSession, MemorySummary
from ais_bench.infer.path_security_check import FileStat, ms_open_write

PERMISSION_DIR = 0o750
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[%(levelname)s] %(message)s")


def args_rules(args):
    if args.output_dirname and args.output_dirname[0] == "/":
        raise ValueError("--output_dirname do not support abs path!")
    if args.output is None and args.output_dirname is not None:
        common.error("parameter --output_dirname cann't be used alone. Please use it together with the parameter "
                     "--output!\n")
        raise RuntimeError("error bad parameters --output_dirname")
    return args


def get_modules_version(name):
    try:
        import pkg_resources
    except ImportError as err:
        raise Exception("importerror") from err
    return pkg_resources.get_distribution(name).version


def version_check(args):
    try:
        aclruntime_version = get_modules_version("aclruntime")
    except Exception:
        common.warning("can't find aclruntime, please visit gitee ait to install ais_bench(benchmark)")
        args.run_mode = "tensor"
    if aclruntime_version != "0.0.2":  # unset when the lookup failed: UnboundLocalError, as upstream
        common.warning(f"aclruntime{aclruntime_version} version is lower please update aclruntime")
        args.run_mode = "tensor"


def set_session_options(session, args):
    if args.dym_batch != 0:
        session.set_dynamic_batchsize(args.dym_batch)
        session.get_max_dym_batchsize()
    elif args.dym_hw is not None or args.dym_dims is not None or args.dym_shape is not None:
        raise RuntimeError("the fake ais_bench implements --dymBatch only")
    else:
        session.set_staticbatch()
    if args.batchsize is None:
        args.batchsize = int(args.dym_batch) if args.dym_batch != 0 else session.get_inputs()[0].shape[0]
        common.info(f"try get model batchsize:{args.batchsize}")
    if not args.auto_set_dymshape_mode and not args.auto_set_dymdims_mode:
        if args.batchsize < 0 and not args.dym_batch and not args.dym_dims and not args.dym_shape:
            raise RuntimeError("dynamic batch om model detected, but dymbatch, dymdims or dymshape not set!")
    if session.get_dym_aipp_input_exist() != 0:
        raise RuntimeError("the fake ais_bench does not implement AIPP models")
    if args.output_size is not None:
        raise RuntimeError("the fake ais_bench does not implement --outputSize")


def _check_entry(path):
    if not FileStat(path).is_basically_legal("read"):
        raise RuntimeError(f"input data:{path} is illegal")


def _read(path):
    with open(path, "rb") as f:  # ms_open(path, "rb", max_size=4 GB): the file was checked above
        return f.read()


def _write(path, data):
    with ms_open_write(path) as f:
        if path.lower().endswith(".npy"):
            np.save(f, data)
        elif path.lower().endswith(".txt"):
            np.savetxt(f, data.reshape(-1, data.shape[-1]))
        else:
            data.tofile(f)


def _write_json(path, data):
    with ms_open_write(path) as f:
        f.write(json.dumps(data).encode())


def main(args):
    unsupported = [f for f in ("profiler", "dump", "pipeline", "energy_consumption", "auto_set_dymshape_mode",
                               "auto_set_dymdims_mode", "dump_npy", "perf") if getattr(args, f)]
    if unsupported or args.acl_json_path or args.aipp_config or args.dym_shape_range or args.backend:
        raise RuntimeError(f"the fake ais_bench does not implement {unsupported or 'acl.json/aipp/backends'}")
    if isinstance(args.device, list):
        raise RuntimeError("the fake ais_bench does not implement device lists")
    if args.run_mode not in ("array", "tensor"):
        raise RuntimeError(f"the fake ais_bench implements --run_mode array and tensor, not {args.run_mode}")
    session = InferSession(args.device, args.model, None, args.debug, args.loop)
    set_session_options(session, args)
    desc = session.get_inputs()[0]
    prefix = None
    if args.output is not None:
        prefix = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
        if not os.path.exists(prefix):
            os.makedirs(prefix, PERMISSION_DIR)
        os.chmod(args.output, PERMISSION_DIR)
        common.info(f"output path:{prefix}")
    if args.input is None:
        raise RuntimeError("the fake ais_bench does not implement pure inference (no --input)")
    items = args.input.split(",")
    if not os.path.isdir(items[0]) or len(items) != 1:
        raise RuntimeError("the fake ais_bench takes one input folder")
    batches, _ = common.batches(common.folder_files(items[0], _check_entry), desc.realsize)

    def feed(files):
        data = common.read_batch(files, desc.realsize, _read)
        return session.create_tensor_from_arrays_to_device(data) if args.run_mode == "tensor" else data

    session.set_loop_count(1)
    for _ in range(args.warmup_count):
        session.run([feed(batches[0])], True)
    session.set_loop_count(args.loop)
    summary = common.Summary()
    session.reset_summaryinfo()
    MemorySummary.reset()
    common.info(f"warm up {args.warmup_count} done")
    for i, files in enumerate(batches):
        outputs = session.run([feed(files)])
        session.convert_tensors_to_host(outputs)
        if prefix is not None:
            summary.save_outputs(outputs, prefix, files, args.outfmt, i, args.output_batchsize_axis, _write)
        print(f"Inference {args.run_mode} Processing: {i + 1}/{len(batches)}", flush=True)
    summary.npu_compute_time_list = [end - start for start, end in session.summary().exec_time_list]
    summary.report(args.batchsize, prefix, _write_json)
    session.free_resource()
    InferSession.finalize()


def benchmark_process(args):
    args = args_rules(args)
    version_check(args)
    main(args)
    return 0
