"""An ONNX Runtime run of a graph that hands over chosen intermediate tensors one segment at a time.

~150 intermediate tensors of one 512x1024 image exposed as graph outputs would make ONNX Runtime
hold ~3 GB at once. :class:`OnnxStream` cuts the graph (in its topological node order) into
segments of a few compared tensors and runs one at a time, keeping only what a later segment reads
and the compared tensors not yet taken. :mod:`intrada.diagnosis.layerdiff` takes the tensors that
:mod:`intrada.diagnosis.layermap` matched to PyTorch modules from it.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from ..core.errors import OnnxModelError


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
