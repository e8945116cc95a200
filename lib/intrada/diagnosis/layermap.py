"""Which ONNX tensor is which PyTorch module's output.

torch's TorchScript exporter names nodes after the module scopes they were traced in
(``/layer4/layer4.1/conv2/Conv``); with constant folding (the default, and the seed's) each
BatchNorm is folded into the conv before it, so that node computes ``bn2(conv2(x))``. PyTorch's
side comes from one forward pass on the meta device (no memory, no arithmetic): which modules run,
in which order, which BatchNorm reads which conv's output. A compared point is

* a leaf module with parameters or pooling: the last node in its scope (a conv whose BatchNorm has
  no node of its own is compared after that BatchNorm);
* a container (a residual block, a classifier head): the last node inside its scope, the block's
  output after its final ReLU;
* each graph output, by position, against the model's outputs.

Elementwise activations are not rows: each is an exact function of a compared tensor. Exports
without scopes (torch < 1.13 writes ``Conv_12``) are matched by order: Conv / MaxPool /
BatchNormalization / Gemm nodes against modules of the same kind in execution order, each pair
checked by weight shape; the first mismatch ends the matching and the rest is reported unmatched.

The matched ONNX tensors are computed by :class:`intrada.diagnosis.onnxstream.OnnxStream`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

# Not compared on their own: exact elementwise functions of the tensor before them.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
               nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout, nn.Dropout2d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# ONNX ops that compute something worth a row; the others (Relu, Add, Reshape ...) are covered by
# the rows around them.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "MaxPool", "AveragePool",
                         "GlobalAveragePool", "InstanceNormalization", "LayerNormalization", "Resize"})
# For matching by order: ONNX op -> PyTorch module types.
_ORDER_KINDS: dict[str, tuple[type, ...]] = {
    "Conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "MaxPool": (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d),
    "BatchNormalization": BATCHNORM, "Gemm": (nn.Linear,)}


@dataclass(frozen=True)
class Point:
    """One compared tensor: ``module``'s forward hook gives the PyTorch value (``tuple_index`` picks
    one of several outputs), ``onnx_value`` the ONNX one."""

    name: str  # shown in the table: the module the row is about
    module: str  # whose forward hook yields the PyTorch tensor ("" = the model's outputs)
    onnx_value: str
    onnx_node: str
    op: str
    folded: str | None = None  # BatchNorm folded into this conv by the export
    output_index: int | None = None  # graph output position, when the tensor is one
    tuple_index: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} (+{self.folded})" if self.folded else self.name


@dataclass
class LayerMap:
    points: list[Point]  # in PyTorch execution order, which is topological
    unmatched_torch: list[str] = field(default_factory=list)
    unmatched_onnx: list[str] = field(default_factory=list)
    method: str = "scopes"  # or "order"


@dataclass
class _Call:
    name: str
    module: nn.Module
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def trace_calls(model: nn.Module, input_shape: Sequence[int]) -> tuple[list[_Call], dict[str, int]]:
    """Module calls of one forward pass on the meta device, in completion order, and call counts."""
    calls: list[_Call] = []
    keep: list[Any] = []  # holds every tensor so that ids stay unique during the pass

    def tensor_ids(obj: Any) -> tuple[int, ...]:
        items = obj if isinstance(obj, (tuple, list)) else (obj,)
        keep.append(items)
        return tuple(id(t) for t in items if isinstance(t, torch.Tensor))

    handles = []
    for name, mod in model.named_modules():
        def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
            calls.append(_Call(name, m, tensor_ids(args), tensor_ids(out)))
        handles.append(mod.register_forward_hook(hook))
    state = {k: torch.empty_like(v, device="meta") for k, v in (*model.named_parameters(), *model.named_buffers())}
    try:
        with torch.no_grad():
            torch.func.functional_call(model, state, (torch.empty(tuple(input_shape), device="meta"),))
    finally:
        for h in handles:
            h.remove()
    return calls, dict(Counter(c.name for c in calls))


_CALL_SUFFIX = re.compile(r"_\d+$")


def scope_of(node_name: str, modules: set[str]) -> str | None:
    """``/layer1/layer1.0/downsample/downsample.0/Conv`` -> ``layer1.0.downsample.0``; None when the
    name carries no scope that resolves to a module ("" is the model itself)."""
    if not node_name.startswith("/"):
        return None
    path = ""
    for seg in node_name.split("/")[1:-1]:
        last = path.rsplit(".", 1)[-1] if path else ""
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        # The exporter names a child of a Sequential/ModuleList "<attr>.<index>", e.g. layer1.0 under layer1.
        options = ([f"{parent}.{seg}".lstrip(".")] if last and seg.startswith(last + ".") else []) + \
            [f"{path}.{seg}".lstrip("."), f"{path}.{_CALL_SUFFIX.sub('', seg)}".lstrip(".")]
        found = next((o for o in options if o in modules), None)
        if found is None:
            return path if path in modules else None
        path = found
    return path


def _is_compute_leaf(mod: nn.Module) -> bool:
    return not any(True for _ in mod.children()) and not isinstance(mod, ELEMENTWISE)


def map_layers(model: nn.Module, graph: Any, input_shape: Sequence[int]) -> LayerMap:
    """Match ``graph`` (an onnx GraphProto) to ``model``; see the module docstring."""
    calls, counts = trace_calls(model, input_shape)
    modules = {n for n, _ in model.named_modules()}
    scopes = [scope_of(n.name, modules) for n in graph.node]
    if not any(s for s in scopes):  # no node resolves below the model itself
        return _map_by_order(model, graph, calls, counts)
    last_in: dict[str, int] = {}  # module -> index of its last node (exact scope)
    last_under: dict[str, int] = {}  # module -> index of the last node at or below its scope
    for i, s in enumerate(scopes):
        if s is None:
            continue
        last_in[s] = i
        parts = s.split(".") if s else []
        for k in range(len(parts) + 1):
            last_under[".".join(parts[:k])] = i
    consumers: dict[str, set[int]] = {}
    for i, n in enumerate(graph.node):
        for v in n.input:
            consumers.setdefault(v, set()).add(i)
    graph_outputs = [o.name for o in graph.output]
    producer_of = {v: i for i, n in enumerate(graph.node) for v in n.output}
    out_id_to_call: dict[int, _Call] = {}
    for c in calls:
        for t in c.outputs:
            out_id_to_call.setdefault(t, c)
    points: list[Point] = []
    unmatched_torch = _shared(calls, counts)
    for c in calls:  # completion order
        if not c.name or counts[c.name] != 1:
            continue
        mod = c.module
        if _is_compute_leaf(mod):
            if isinstance(mod, BATCHNORM) and c.name not in last_in:
                src = out_id_to_call.get(c.inputs[0]) if c.inputs else None
                if src is not None and src.name in last_in and not isinstance(src.module, BATCHNORM):
                    node = graph.node[last_in[src.name]]
                    points.append(Point(src.name, c.name, node.output[0], node.name, node.op_type, folded=c.name))
                    continue
            if c.name not in last_in:
                unmatched_torch.append(f"{c.name} ({type(mod).__name__})")
                continue
            if _folded_later(c, calls, last_in):
                continue  # its BatchNorm, later in `calls`, makes the point
            node = graph.node[last_in[c.name]]
            points.append(Point(c.name, c.name, node.output[0], node.name, node.op_type))
        elif not isinstance(mod, ELEMENTWISE) and c.name in last_under:
            node = graph.node[last_under[c.name]]
            value = node.output[0]
            inside = {i for i, s in enumerate(scopes) if s is not None and (s == c.name or s.startswith(c.name + "."))}
            if value in graph_outputs or consumers.get(value, set()) - inside:
                points.append(Point(c.name, c.name, value, node.name, node.op_type))
    root_outputs = next((c for c in calls if c.name == ""), None)
    n_out = len(root_outputs.outputs) if root_outputs else 0
    points = _with_graph_outputs(points, graph, n_out, producer_of)
    seen = {p.onnx_value for p in points}
    unmatched_onnx = [f"{n.name or n.output[0]} ({n.op_type})" for n in graph.node
                      if n.op_type in COMPUTE_OPS and n.output[0] not in seen]
    return LayerMap(points, unmatched_torch, unmatched_onnx, "scopes")


def _shared(calls: list[_Call], counts: dict[str, int]) -> list[str]:
    """Compute modules run more than once: which call an ONNX node belongs to is ambiguous."""
    seen = {c.name: c.module for c in calls if c.name and counts[c.name] > 1 and _is_compute_leaf(c.module)}
    return [f"{n} ({type(m).__name__}, run {counts[n]} times)" for n, m in seen.items()]


def _folded_later(conv: _Call, calls: list[_Call], last_in: dict[str, int]) -> bool:
    """True when a BatchNorm without ONNX node of its own reads this conv's output."""
    if isinstance(conv.module, BATCHNORM) or not conv.outputs:
        return False
    return any(isinstance(c.module, BATCHNORM) and c.name not in last_in and c.inputs[:1] == conv.outputs[:1]
               for c in calls)


def _with_graph_outputs(points: list[Point], graph: Any, n_out: int, producer_of: dict[str, int]) -> list[Point]:
    """Dedupe by ONNX value (the first, innermost module names the row) and tag graph outputs."""
    out_index = {o.name: i for i, o in enumerate(graph.output) if i < n_out}
    kept: dict[str, Point] = {}
    for p in points:
        if p.onnx_value not in kept:
            kept[p.onnx_value] = Point(p.name, p.module, p.onnx_value, p.onnx_node, p.op, p.folded,
                                       out_index.get(p.onnx_value))
    result = list(kept.values())
    for value, i in out_index.items():
        if value not in kept:
            node = graph.node[producer_of[value]] if value in producer_of else None
            result.append(Point(f"output {i}", "", value, node.name if node else value,
                                node.op_type if node else "Identity", output_index=i, tuple_index=i))
    return result


def _map_by_order(model: nn.Module, graph: Any, calls: list[_Call], counts: dict[str, int]) -> LayerMap:
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    onnx_nodes = [n for n in graph.node if n.op_type in _ORDER_KINDS]
    has_bn = any(n.op_type == "BatchNormalization" for n in onnx_nodes)
    leaves = [c for c in calls if c.name and counts[c.name] == 1 and isinstance(
        c.module, sum(_ORDER_KINDS.values(), ()))]
    points: list[Point] = []
    folded: dict[str, str] = {}
    if not has_bn:  # folded export: a BatchNorm reading a conv's output is part of that conv
        by_out = {c.outputs[0]: c for c in leaves if c.outputs}
        for c in leaves:
            if isinstance(c.module, BATCHNORM) and c.inputs and c.inputs[0] in by_out:
                folded[by_out[c.inputs[0]].name] = c.name
        leaves = [c for c in leaves if not (isinstance(c.module, BATCHNORM) and c.name in folded.values())]
    i = 0
    for i, (node, c) in enumerate(zip(onnx_nodes, leaves)):
        if not isinstance(c.module, _ORDER_KINDS[node.op_type]):
            break
        weight = getattr(c.module, "weight", None)
        if node.op_type in ("Conv", "Gemm") and (weight is None or len(node.input) < 2 or
                                                  inits.get(node.input[1]) not in (tuple(weight.shape), None)):
            break
        bn = folded.get(c.name)
        points.append(Point(c.name, bn or c.name, node.output[0], node.name or node.output[0], node.op_type,
                            folded=bn))
    else:
        i = min(len(onnx_nodes), len(leaves))
    producer_of = {v: k for k, n in enumerate(graph.node) for v in n.output}
    root = next((c for c in calls if c.name == ""), None)
    points = _with_graph_outputs(points, graph, len(root.outputs) if root else 0, producer_of)
    unmatched_torch = _shared(calls, counts) + [f"{c.name} ({type(c.module).__name__})" for c in leaves[i:]]
    unmatched_onnx = [f"{n.name or n.output[0]} ({n.op_type})" for n in onnx_nodes[i:]]
    return LayerMap(points, unmatched_torch, unmatched_onnx, "order")
