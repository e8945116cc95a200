"""PyTorch -> ONNX export (the seed's intrada_pth2onnx.py, with meaningful output names) and the
structural checks every ONNX file must pass before any runner touches it."""
from __future__ import annotations

import errno
import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import fs as cache_fs, protocol
from ..core.atomic import atomic_path
from ..core.errors import OnnxModelError


# The TorchScript exporter, as the seed used it. torch 2.5 added `dynamo` (default True from 2.9);
# older torch, e.g. a device host's, has only the TorchScript exporter and rejects the keyword.
_TORCHSCRIPT: dict[str, Any] = ({"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters
                                 else {})


def export_onnx(model: torch.nn.Module, out_path: str | os.PathLike[str], *, opset: int = protocol.DEFAULT_OPSET,
                do_constant_folding: bool = True) -> Path:
    """Export ``model`` (eval mode) like the seed: input ``image`` [N,3,512,1024] with dynamic N,
    two outputs in ADVENT order (aux, main). Written to a temporary name, checked, then renamed."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    check_room(model, out_path)
    model.eval()
    dummy = torch.zeros(1, *protocol.INPUT_SHAPE_CHW)
    batch = protocol.ONNX_BATCH_DIM
    dynamic_axes = {protocol.ONNX_INPUT_NAME: {0: batch}, **{n: {0: batch} for n in protocol.ONNX_OUTPUT_NAMES}}
    with atomic_path(out_path) as tmp:
        # no_grad: the trace's one full-size forward then records no autograd graph (about a quarter
        # of the export's time); the ONNX bytes are the same. tests/test_onnx_export.py pins both.
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy TorchScript exporter is deliberate (see pytest.ini); silence its notices here too.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(model, (dummy,), str(tmp), input_names=[protocol.ONNX_INPUT_NAME],
                              output_names=list(protocol.ONNX_OUTPUT_NAMES), dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=do_constant_folding, **_TORCHSCRIPT)
        inspect_onnx(tmp, require_dynamic_batch=True)  # a malformed export never gets the final name
    return out_path


def min_export_bytes(model: torch.nn.Module) -> int:
    """A lower bound of the ONNX file's size: the conv weights and biases it must hold (BatchNorm is
    folded into them): 177,984,864 of the real export's 178,247,358 bytes."""
    return sum(p.numel() * p.element_size() for m in model.modules() if isinstance(m, torch.nn.Conv2d)
               for p in m.parameters(recurse=False))


def check_room(model: torch.nn.Module, out_path: Path) -> None:
    """Refuse before the trace (one full-size forward) when the file cannot be written: the OSError the
    write would raise seconds later. A read-only filesystem (EROFS; root included) or folder (EACCES),
    or a disk that cannot hold the conv weights (ENOSPC, with the sizes)."""
    why = cache_fs.not_writable(out_path.parent)
    if why is not None:
        raise OSError(why.errno, why.strerror, str(out_path))
    need, free = min_export_bytes(model), cache_fs.free_bytes(out_path.parent)
    if free < need:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: the export needs at least {need / 2**20:.0f} MiB, "
                      f"{free / 2**20:.0f} MiB free", str(out_path))


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    opset: int
    input_name: str
    output_names: tuple[str, ...]
    batch_dim: int | str  # an int for a static batch, the symbol for a dynamic one
    output_shapes: tuple[tuple[int | str, ...], ...]
    op_types: tuple[str, ...] = field(default=())

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.batch_dim, int)


def _dims(value_info: object) -> tuple[int | str, ...]:
    shape = value_info.type.tensor_type.shape  # type: ignore[attr-defined]
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim)


def inspect_onnx(path: str | os.PathLike[str], *, require_dynamic_batch: bool = False) -> OnnxInfo:
    """Load, run onnx.checker, and verify the IntraDA interface; OnnxModelError on any deviation."""
    import onnx  # lazily: importing the package must not require onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(path, "ONNX file not found", "pass --onnx PATH, or omit it to export from --weights")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... depending on the damage
        raise OnnxModelError(path, f"not an ONNX model ({type(exc).__name__}: {str(exc)[:120]})",
                             "pass the .onnx written by intrada pth2onnx or torch.onnx.export") from None
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise OnnxModelError(path, f"onnx.checker rejects the model ({str(exc).splitlines()[0][:160]})",
                             "re-export the model") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise OnnxModelError(path, f"expected 1 input, found {len(inputs)} ({[i.name for i in inputs]})",
                             "export with a single image input")
    inp = inputs[0]
    if inp.name != protocol.ONNX_INPUT_NAME:
        raise OnnxModelError(path, f"input is named {inp.name!r}, expected {protocol.ONNX_INPUT_NAME!r}",
                             "atc's --input_shape and the device tools refer to 'image'; export with "
                             "input_names=['image']")
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise OnnxModelError(path, "input is not float32", "export from the float32 model")
    in_dims = _dims(inp)
    expected_chw = protocol.INPUT_SHAPE_CHW
    if len(in_dims) != 4 or tuple(in_dims[1:]) != expected_chw:
        raise OnnxModelError(path, f"input shape {list(in_dims)}, expected [N, {', '.join(map(str, expected_chw))}]",
                             "export with a 1x3x512x1024 dummy input")
    batch = in_dims[0]
    if require_dynamic_batch and isinstance(batch, int):
        raise OnnxModelError(path, f"input batch dimension is static ({batch}) but several batch sizes are needed",
                             "export with dynamic_axes={'image': {0: 'batch'}} or pass --batch-sizes "
                             f"{batch}")
    outs = list(graph.output)
    if len(outs) != 2:
        raise OnnxModelError(path, f"expected 2 outputs (aux, main), found {len(outs)} "
                             f"({[o.name for o in outs]})", "export the multi-level model; the main head is output 1")
    shapes = []
    for index, out in enumerate(outs):
        dims = _dims(out)
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise OnnxModelError(path, f"output {index} ({out.name!r}) is not float32", "export the float32 model")
        if len(dims) != 4 or tuple(dims[1:]) != protocol.OUTPUT_SHAPE_CHW:
            raise OnnxModelError(path, f"output {index} ({out.name!r}) has shape {list(dims)}, expected "
                                 f"[N, {', '.join(map(str, protocol.OUTPUT_SHAPE_CHW))}]",
                                 "65x129 needs maxpool ceil_mode=True and the caffe-style strides of ADVENT")
        shapes.append(dims)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    ops = tuple(sorted({n.op_type for n in graph.node}))
    return OnnxInfo(path, opset, inp.name, tuple(o.name for o in outs), batch, tuple(shapes), ops)
