"""Which ONNX tensor is which PyTorch module's output, and an ONNX Runtime run that hands them over
one segment at a time.

Matching. torch's TorchScript exporter names nodes after the module scopes they were traced in
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

Streaming. ~150 intermediate tensors of one 512x1024 image exposed as graph outputs would make ONNX
Runtime hold ~3 GB at once. :class:`OnnxStream` cuts the graph (in its topological node order) into
segments of a few compared tensors and runs one at a time, keeping only what a later segment reads
and the compared tensors not yet taken.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import OnnxModelError

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


# --- streaming ONNX Runtime --------------------------------------------------------------------------


class OnnxStream:
    """``take(value)`` runs the graph segment by segment until ``value`` is computed and returns it."""

    def __init__(self, model: Any, feeds: dict[str, np.ndarray], wanted: Iterable[str], *,
                 threads: int, per_segment: int = 6, where: str = "onnx") -> None:
        self._model = model
        self._threads = threads
        self._where = where
        graph = model.graph
        self._inits = {i.name: i for i in graph.initializer}
        self._wanted = set(wanted)
        self._store: dict[str, np.ndarray] = dict(feeds)
        self._taken: set[str] = set()
        nodes = list(graph.node)
        # nodes with subgraphs (If, Loop) read outer values implicitly: run such a graph in one piece
        subgraphs = any(a.type in (5, 10) for n in nodes for a in n.attribute)  # GRAPH, GRAPHS
        self._segments = [nodes] if subgraphs else self._cut(nodes, per_segment)
        self._check_order(graph)
        # the last segment that reads each value: after it, the value can be dropped
        self._last_use = {v: s for s, seg in enumerate(self._segments) for n in seg for v in n.input}
        self._next = 0
        self.segments_run = 0
        self.session_seconds = 0.0  # building segment sessions, part of take()'s time

    def _cut(self, nodes: list[Any], per_segment: int) -> list[list[Any]]:
        segments: list[list[Any]] = [[]]
        count = 0
        for n in nodes:
            segments[-1].append(n)
            count += sum(v in self._wanted for v in n.output)
            if count >= per_segment:
                segments.append([])
                count = 0
        return [s for s in segments if s]

    def _check_order(self, graph: Any) -> None:
        known = set(self._store) | set(self._inits) | {i.name for i in graph.input} | {""}
        for n in (n for seg in self._segments for n in seg):
            missing = [v for v in n.input if v not in known]
            if missing:
                raise OnnxModelError(self._where, f"node {n.name or n.op_type!r} reads {missing[0]!r} before it is "
                                     "computed (the graph is not topologically sorted)", "re-export the model")
            known.update(n.output)

    @property
    def held(self) -> list[str]:
        """Tensors held now: inputs of later segments, compared tensors not yet taken."""
        return list(self._store)

    def take(self, value: str) -> np.ndarray:
        while value not in self._store:
            if self._next >= len(self._segments):
                raise KeyError(value)
            self._run(self._next)
            self._next += 1
        self._taken.add(value)
        return self._store[value] if self._last_use.get(value, -1) >= self._next else self._store.pop(value)

    def _run(self, s: int) -> None:
        import onnx
        import onnxruntime as ort

        seg = self._segments[s]
        produced = {v for n in seg for v in n.output}
        inputs = list(dict.fromkeys(v for n in seg for v in n.input if v and v not in produced and v not in self._inits))
        # what a later segment reads, and the compared tensors (none of them can be taken yet)
        outputs = [v for n in seg for v in n.output if v and (self._last_use.get(v, -1) > s or v in self._wanted)]
        weights = [self._inits[v] for v in dict.fromkeys(v for n in seg for v in n.input if v in self._inits)]
        value_infos = [onnx.helper.make_tensor_value_info(
            v, onnx.helper.np_dtype_to_tensor_dtype(self._store[v].dtype), list(self._store[v].shape)) for v in inputs]
        g = onnx.helper.make_graph(seg, f"segment{s}", value_infos, [onnx.ValueInfoProto(name=v) for v in outputs],
                                   initializer=weights)
        m = onnx.helper.make_model(g, opset_imports=self._model.opset_import, ir_version=self._model.ir_version)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # PyTorch runs between two segments: idle ONNX Runtime workers must not spin on the cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        t0 = time.perf_counter()
        try:
            session = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
            del m, g
            self.session_seconds += time.perf_counter() - t0
            results = session.run(outputs, {v: self._store[v] for v in inputs})
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise OnnxModelError(self._where, f"ONNX Runtime fails on nodes {seg[0].name or seg[0].op_type!r}.."
                                 f"{seg[-1].name or seg[-1].op_type!r} ({first})",
                                 "check the file with `intrada inspect` or re-export it") from None
        del session
        self.segments_run += 1
        for v in inputs:  # drop what no later segment reads, unless it is a compared tensor not yet taken
            if self._last_use.get(v, -1) <= s and (v not in self._wanted or v in self._taken):
                self._store.pop(v, None)
        self._store.update(zip(outputs, results))
