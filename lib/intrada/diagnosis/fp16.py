"""force_fp16 on the CPU: what an Ascend om that atc converted with its default precision mode computes,
emulated in PyTorch over the model's own module tree (the model is not edited: its FX graph is
interpreted node by node, :class:`Emulation`).

The rules, and the CANN documentation each follows:

1. **Weights in float16, BatchNorm folded first.** atc converts the ONNX, and torch's exporter (with
   constant folding: the seed's export and this gate's) has already folded every BatchNorm into the
   conv before it. So the folded weight ``w * gamma / sqrt(var + eps)`` and bias ``beta - mean * gamma /
   sqrt(var + eps)`` are what is rounded to float16, not the checkpoint's conv weights and BN
   parameters separately, and no rounding happens between a conv and its BatchNorm. The gate takes the
   folded tensors from the ONNX itself (:func:`params_from_onnx`): exactly what atc reads.
   [ATC ``--precision_mode``: ``force_fp16`` "forces float16 when an operator supports both float16
   and float32", the default for inference: "ATC Instructions > --precision_mode",
   https://www.hiascend.com/document/detail/en/canncommercial/800/devaids/atc/atlasatcparam_16_0067.html;
   default per scenario in the AOE ``--precision_mode`` page,
   https://www.hiascend.com/document/detail/zh/canncommercial/63RC2/devtools/auxiliarydevtool/aoepar_16_046.html]
2. **Every operator's input and output in float16.** The om's input is cast to float16; each conv
   (with its folded BatchNorm) and each Add stores its result in float16. ReLU and MaxPool of float16
   values are float16 values, so rounding their outputs is the identity and is skipped
   (:data:`EXACT_MODULES`; ``tests/test_fp16.py`` pins that it is). [same page: under force_fp16 every
   AI Core operator that has a float16 implementation runs in float16; "Setting the Precision Mode":
   "Computations are done in float16 unless otherwise specified",
   https://www.hiascend.com/document/detail/en/canncommercial/800/appdevg/aclcppdevg/aclcppdevg_000103.html]
3. **Convolutions multiply float16 and accumulate in float32.** The AI Core's Cube unit reads its
   operands from L0A/L0B and keeps the matrix products and their running sums in L0C ("NPU
   Architecture Version 200x", the Atlas inference products' AI Core,
   https://www.hiascend.com/document/detail/en/canncommercial/850/opdevg/Ascendcopdevg/atlas_ascendc_10_0009.html);
   its multiply-accumulate takes half operands into a float result ("Mmad": half x half -> float
   among the type combinations of Atlas inference products,
   https://www.hiascend.com/document/detail/zh/canncommercial/700/operatordev/Ascendcopdevg/atlasascendc_api_07_0136.html).
   A product of two float16 values is exact in float32, so a float32 convolution of float16-valued
   tensors computes exactly this; the (folded) bias is added in the float32 accumulator and the sum is
   rounded once, when stored (rule 2). That Conv2D keeps the float accumulator until the store is the
   documented data path, assumed here; on a device the om's measured deviation over this prediction
   (the om parity line) checks it.
4. **Overflow saturates.** A result beyond the float16 range becomes +-65504, not Inf (Atlas
   inference products support only the saturation mode: ``aclrtFloatOverflowMode``,
   https://www.hiascend.com/document/detail/en/CANNCommunityEdition/910/API/runtimeapi/aclcppdevg_03_1389.html).

:mod:`intrada.diagnosis.fp16_emulation` applies these rules to a model (``Emulation``), runs them as a
:class:`~intrada.runners.base.Runner` over a split (the gate caches its outputs like any runner's) and,
in ``diagnose``, runs float32 and the emulation side by side on one image to say which layer
overflows or loses most.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core import protocol
from ..core.errors import IntradaError

#: The largest finite float16 value: the saturation bound (rule 4).
FP16_MAX = 65504.0
#: Modules whose output is a float16 value when their input is (no rounding needed, rule 2).
EXACT_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.MaxPool2d, nn.Identity, nn.Dropout, nn.Dropout2d)
#: Elementwise functions whose result is stored in float16 (rule 2).
ROUNDED_FUNCTIONS = (operator.add, torch.add, operator.iadd)
#: Functions that only select (no arithmetic), or are exact on float16 values: passed through.
PASS_FUNCTIONS = (operator.getitem, torch.relu, F.relu)
#: One emulated image in ONNX Runtime float32 forwards of the same model on the same CPU (the run plan's
#: per-image estimate is ONNX Runtime's): the convolutions are PyTorch's, and an emulated forward costs
#: about one PyTorch float32 forward (BatchNorm folded away pays for the rounding passes), which is
#: 1.6-1.9 ONNX Runtime forwards on a 2-core Xeon (demo checkpoint, full-size images, interleaved in one
#: process: docs/fp16.md).
COST_IN_FP32_FORWARDS = 1.8


class Fp16Unsupported(IntradaError):
    """The model (or its ONNX) holds something the emulation has no rule for."""


@dataclass(frozen=True)
class Rules:
    """The emulation's arithmetic; :data:`FORCE_FP16` is what the module docstring documents. The
    switches exist so that tests can show each rule is visible in the numbers."""

    round_weights: bool = True  # rule 1
    round_activations: bool = True  # rule 2 (input and every stored result)
    saturate: bool = True  # rule 4

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


FORCE_FP16 = Rules()


def round_fp16(t: torch.Tensor, *, saturate: bool = True) -> torch.Tensor:
    """``t`` (float32) rounded to the nearest float16 value (ties to even), as float32. With
    ``saturate`` (rule 4) what IEEE rounds to +-Inf (|t| >= 65520) becomes +-65504 and NaN becomes 0;
    without, they stay Inf and NaN."""
    h = t.to(torch.float16)
    if saturate:
        h = torch.nan_to_num(h, nan=0.0, posinf=FP16_MAX, neginf=-FP16_MAX)
    return h.to(torch.float32)


def round_fp16_(t: torch.Tensor, saturate: bool) -> torch.Tensor:
    """In place (``t`` is a fresh result nobody else holds): one float16 round trip; saturation is
    applied on the float16 copy, half the bytes of a clamp on ``t``: +-Inf -> +-65504, NaN -> 0 (the
    saturation mode's two rules, rule 4)."""
    h = t.to(torch.float16)
    if saturate:
        torch.nan_to_num_(h, nan=0.0, posinf=FP16_MAX, neginf=-FP16_MAX)
    return t.copy_(h)


# -- the model's convolutions, with their BatchNorms folded ---------------------------------------------
@dataclass(frozen=True)
class ConvParams:
    """A conv's weight and bias as the om holds them before rounding (BatchNorm folded in)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    folded: str | None = None  # the BatchNorm module folded into it


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn(conv(x)) == conv'(x)`` in eval mode: the folding torch's ONNX exporter applies (float32)."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = (bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = shift - bn.running_mean * scale + (bias * scale if bias is not None else 0)
    return w.detach().float(), b.detach().float()


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's FX graph (symbolic: no arithmetic, no weights needed)."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # torch.fx raises TraceError, TypeError ... on data-dependent control flow
        raise Fp16Unsupported(type(model).__name__, f"the model cannot be traced by torch.fx ({exc})",
                              "the emulation interprets the model's FX graph") from None


def conv_bn_pairs(gm: fx.GraphModule) -> dict[str, str]:
    """conv module -> the BatchNorm module that reads its output and nothing else does (folded)."""
    pairs: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(str(node.target)), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1 and \
                isinstance(gm.get_submodule(str(src.target)), nn.Conv2d):
            pairs[str(src.target)] = str(node.target)
    return pairs


def params_from_model(model: nn.Module, gm: fx.GraphModule | None = None) -> dict[str, ConvParams]:
    """Each conv's parameters with the BatchNorm after it folded in, from the model's own weights."""
    gm = gm if gm is not None else trace(model)
    pairs = conv_bn_pairs(gm)
    out: dict[str, ConvParams] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            bn_name = pairs.get(name)
            if bn_name is None:
                b = mod.bias.detach().float() if mod.bias is not None else None
                out[name] = ConvParams(mod.weight.detach().float(), b)
            else:
                bn = model.get_submodule(bn_name)
                assert isinstance(bn, nn.BatchNorm2d)
                w, b = fold_batchnorm(mod.weight, mod.bias, bn)
                out[name] = ConvParams(w, b, bn_name)
    return out


def params_from_onnx(model: nn.Module, onnx_model: Any, where: str = "onnx") -> dict[str, ConvParams]:
    """Each conv's folded parameters read from the ONNX's initializers (what atc converts), matched to
    ``model``'s conv modules by :func:`intrada.diagnosis.layermap.map_layers`. ``model`` may live on the meta
    device: only its structure is used. Fp16Unsupported when a conv is not matched, a BatchNorm has a
    node of its own, or a shape differs."""
    from onnx import numpy_helper

    from .layermap import map_layers

    graph = onnx_model.graph
    bn_nodes = [n.name or n.output[0] for n in graph.node if n.op_type == "BatchNormalization"]
    if bn_nodes:
        raise Fp16Unsupported(where, f"the ONNX keeps {len(bn_nodes)} BatchNormalization node(s) ({bn_nodes[0]} ...): "
                              "exported without constant folding", "export with do_constant_folding=True (the "
                              "seed's and intrada pth2onnx's default), the graph atc is given")
    lmap = map_layers(model, graph, (1, *protocol.INPUT_SHAPE_CHW))
    inits = {i.name: i for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    modules = dict(model.named_modules())
    out: dict[str, ConvParams] = {}
    for p in lmap.points:
        conv = modules.get(p.name)
        if p.op != "Conv" or not isinstance(conv, nn.Conv2d):  # graph outputs, containers
            continue
        node = nodes.get(p.onnx_node) or next((n for n in graph.node if n.output and n.output[0] == p.onnx_value), None)
        if node is None or len(node.input) < 2 or node.input[1] not in inits:
            raise Fp16Unsupported(where, f"conv {p.name}: no weight initializer in the ONNX node {p.onnx_node!r}",
                                  "export the model with its weights as initializers")
        w = torch.from_numpy(numpy_helper.to_array(inits[node.input[1]]).astype(np.float32, copy=True))
        b = (torch.from_numpy(numpy_helper.to_array(inits[node.input[2]]).astype(np.float32, copy=True))
             if len(node.input) > 2 and node.input[2] in inits else None)
        if tuple(w.shape) != tuple(conv.weight.shape):
            raise Fp16Unsupported(where, f"conv {p.name}: ONNX weight {list(w.shape)}, model {list(conv.weight.shape)}",
                                  "the ONNX is not an export of this architecture")
        out[p.name] = ConvParams(w, b, p.folded)
    missing = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in out]
    if missing:
        raise Fp16Unsupported(where, f"{len(missing)} of the model's convolutions have no ONNX Conv node ({missing[0]} "
                              f"...; unmatched ONNX nodes: {', '.join(lmap.unmatched_onnx[:2]) or 'none'})",
                              "the ONNX is not an export of the IntraDA DeepLabv2")
    return out
