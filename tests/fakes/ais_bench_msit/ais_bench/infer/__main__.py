"""Fake of the msit-generation CLI's argument parsing, ``python3 -m ais_bench`` (github.com/Ascend/msit
42a9c80, ait/components/benchmark/ais_bench/infer/__main__.py:28-281): snake_case flags, ``--dymBatch``
a positive int into ``dym_batch`` (default 0), the paths checked by their argparse types
(path_security_check.py here, args_check.py upstream); then benchmark_process.benchmark_process."""
import argparse

import intrada_fake_npu as fake
from ais_bench.infer.benchmark_process import benchmark_process
from ais_bench.infer.path_security_check import (check_input_path_legality, check_om_path_legality,
                                                 check_output_path_legality)


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
    try:
        if "," in value:
            return [int(v) for v in value.split(",")]
        ivalue = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Argument npu-id invalid input value: {value}.") from None
    if not 0 <= ivalue <= 255:
        raise argparse.ArgumentTypeError(f"device:{ivalue} is invalid. valid value range is [0, 255]")
    return ivalue


def get_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", "-m", type=check_om_path_legality, required=True)
    p.add_argument("--input", "-i", type=check_input_path_legality, default=None)
    p.add_argument("--output", "-o", type=check_output_path_legality, default=None)
    p.add_argument("--output_dirname", type=check_output_path_legality, default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=_positive, default=1)
    p.add_argument("--debug", type=_bool, default=False)
    p.add_argument("--device", "-d", type=_device, default=0)
    p.add_argument("--dymBatch", dest="dym_batch", type=_positive, default=0)
    p.add_argument("--dymHW", dest="dym_hw", default=None)
    p.add_argument("--dymDims", dest="dym_dims", default=None)
    p.add_argument("--dymShape", "--dym-shape", dest="dym_shape", default=None)
    p.add_argument("--outputSize", dest="output_size", default=None)
    p.add_argument("--auto_set_dymshape_mode", type=_bool, default=False)
    p.add_argument("--auto_set_dymdims_mode", type=_bool, default=False)
    p.add_argument("--batchsize", type=_positive, default=None)
    p.add_argument("--pure_data_type", type=str, default="zero", choices=["zero", "random"])
    p.add_argument("--profiler", type=_bool, default=False)
    p.add_argument("--dump", type=_bool, default=False)
    p.add_argument("--acl_json_path", default=None)
    p.add_argument("--output_batchsize_axis", type=_nonnegative, default=0)
    p.add_argument("--run_mode", type=str, default="array", choices=["array", "files", "tensor", "full"])
    p.add_argument("--display_all_summary", type=_bool, default=False)
    p.add_argument("--warmup_count", "--warmup-count", type=_nonnegative, default=1)
    p.add_argument("--dymShape_range", dest="dym_shape_range", default=None)
    p.add_argument("--aipp_config", default=None)
    p.add_argument("--energy_consumption", type=_bool, default=False)
    p.add_argument("--npu_id", type=_nonnegative, default=0)
    p.add_argument("--backend", type=str, default=None, choices=["trtexec"])
    p.add_argument("--perf", type=_bool, default=False)
    p.add_argument("--pipeline", type=_bool, default=False)
    p.add_argument("--profiler_rename", type=_bool, default=True)
    p.add_argument("--dump_npy", type=_bool, default=False)
    p.add_argument("--divide_input", type=_bool, default=False)
    p.add_argument("--threads", type=_positive, default=1)
    return p.parse_args()


if __name__ == "__main__":
    fake.require_declared("ais_bench")
    exit(benchmark_process(get_args()))
