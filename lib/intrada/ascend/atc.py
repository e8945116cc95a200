"""ONNX -> Ascend offline model with atc, exactly as the seed converts it.

The seed (test/pth2om.sh, README at HEAD) runs, per batch size::

    atc --framework=5 --model=./intraDA_deeplabv2.onnx --output=intraDA_deeplabv2_bs{bs} \\
        --input_format=NCHW --input_shape="image:{bs},3,512,1024" --soc_version=Ascend{chip} --log=error

No --precision_mode, --op_select_implmode or --dynamic_batch_size: the CANN defaults apply
(force_fp16 on 310/310P), and there is one static-batch om per batch size. The shell quotes around
the input shape are shell syntax, not part of the argument.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core import protocol
from ..core.errors import ToolError
from .tools import log_tail, run_logged

OM_STEM = "intraDA_deeplabv2"  # the seed's --output name, suffixed _bs{bs}
LOG_LEVEL = "error"  # the README at HEAD (pth2om.sh used debug)
ATC_TIMEOUT_S = 3600.0  # a ResNet-101 conversion takes minutes; an hour means atc hangs


def input_shape(batch_size: int) -> str:
    c, h, w = protocol.INPUT_SHAPE_CHW
    return f"{protocol.ONNX_INPUT_NAME}:{batch_size},{c},{h},{w}"


def om_stem(batch_size: int) -> str:
    return f"{OM_STEM}_bs{batch_size}"


def seed_flags(batch_size: int, soc_version: str) -> list[str]:
    """The seed's flags without the two paths (--model, --output): what the om cache key holds."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return ["--framework=5", "--input_format=NCHW", f"--input_shape={input_shape(batch_size)}",
            f"--soc_version={soc_version}", f"--log={LOG_LEVEL}"]


def atc_command(atc: str | os.PathLike[str], onnx: str | os.PathLike[str], output: str | os.PathLike[str],
                batch_size: int, soc_version: str) -> list[str]:
    """argv in the seed's order: framework, model, output, input_format, input_shape, soc_version, log.
    ``output`` is the om path without ``.om`` (atc appends it)."""
    flags = seed_flags(batch_size, soc_version)
    return [os.fspath(atc), flags[0], f"--model={os.fspath(onnx)}", f"--output={os.fspath(output)}", *flags[1:]]


def convert(atc: str | os.PathLike[str], onnx: Path, out_dir: Path, batch_size: int, soc_version: str, *,
            log_path: Path | None = None, keep_failed_log: Path | None = None,
            timeout: float = ATC_TIMEOUT_S) -> Path:
    """Run atc into ``out_dir`` and return the om. atc's output is kept in ``log_path`` (default
    ``out_dir/atc_bs{bs}.log``); on failure it is also copied to ``keep_failed_log`` (outside a
    temporary build directory that is about to be removed) and its tail quoted in the ToolError."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = om_stem(batch_size)
    log_path = log_path or out_dir / f"atc_bs{batch_size}.log"
    # absolute paths, and atc runs inside out_dir: it drops fusion_result.json and kernel_meta/ into
    # its working directory, which belong with the om rather than wherever pytest was started
    out_dir = out_dir.absolute()
    cmd = atc_command(atc, onnx.absolute(), out_dir / stem, batch_size, soc_version)
    what = f"atc ({onnx.name} -> {stem}.om, {soc_version})"
    try:
        output = run_logged(cmd, what=what, log_path=log_path, cwd=out_dir, timeout=timeout,
                            hint="check --soc-version against `npu-smi info` and that CANN's set_env.sh was sourced")
    except ToolError as exc:
        kept = _kept(log_path, keep_failed_log)
        raise ToolError(exc.where, exc.problem, (exc.hint or "").replace(str(log_path), str(kept))) from None
    om = _find_om(out_dir, stem)
    if om is None:
        raise ToolError(what, f"exited 0 but wrote no {stem}.om; last output: {log_tail(output)}",
                        f"full log: {_kept(log_path, keep_failed_log)}")
    return om


def _find_om(out_dir: Path, stem: str) -> Path | None:
    exact = out_dir / f"{stem}.om"
    if exact.is_file():
        return exact
    # Some CANN releases append the host OS and arch (…_linux_x86_64.om); accept one such file.
    found = sorted(out_dir.glob(f"{stem}_*.om"))
    return found[0] if len(found) == 1 else None


def _kept(log_path: Path, keep: Path | None) -> Path:
    if keep is None or not log_path.exists():
        return log_path
    try:
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, keep)
    except OSError:
        return log_path
    return keep
