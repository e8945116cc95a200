"""First diverging layer between an ONNX export and its PyTorch checkpoint.

:func:`diff_layers` runs the PyTorch model on one image with forward hooks and, in step with it,
ONNX Runtime on the same image one graph segment at a time (:class:`intrada.layermap.OnnxStream`),
so each pair of intermediate tensors is compared as soon as both exist and then dropped. Rows
follow PyTorch's execution order (a topological order of the graph). A layer diverges when its
``max |diff| / max |reference|`` exceeds the per-layer limit, its cosine falls below the cosine
limit, or (graph outputs only) the class-map agreement falls below the parity limit: the same
statistics as the parity gate (:mod:`intrada.compare`), per layer.

Measured on the demo checkpoint (one image, ONNX Runtime 1.32 vs torch 2.13): every faithful layer
lies between 3e-7 and 2.3e-6 relative, within 2x of the fp32-vs-float64 floor of the outputs
(:mod:`intrada.noise`), so the parity gate's noise-derived limit serves as the per-layer limit.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .compare import Limits, TensorStats
from .errors import OnnxModelError
from .layermap import LayerMap, OnnxStream, Point, map_layers


@dataclass(frozen=True)
class LayerRow:
    """Statistics of one compared tensor (PyTorch = reference, ONNX Runtime = candidate)."""

    index: int
    layer: str
    onnx_node: str
    op: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    p99_abs: float
    reference_absmax: float
    cosine: float
    rel_euclidean: float
    nonfinite: int
    argmax_agreement: float | None  # graph outputs only (class axis -3)
    failures: tuple[str, ...] = ()

    @property
    def max_abs_over_scale(self) -> float:
        return self.max_abs / self.reference_absmax if self.reference_absmax > 0 else self.max_abs

    @property
    def diverged(self) -> bool:
        return bool(self.failures)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape), "max_abs_over_scale": self.max_abs_over_scale,
                "diverged": self.diverged, "failures": list(self.failures)}


@dataclass
class LayerDiff:
    """Truthy when no layer diverges; ``first`` is the first that does, ``rows`` the table up to it."""

    reference: str
    candidate: str
    image: str
    all_rows: list[LayerRow]
    limits: Limits
    unmatched_torch: list[str] = field(default_factory=list)
    unmatched_onnx: list[str] = field(default_factory=list)
    method: str = "scopes"
    limit_source: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # provenance: noise floor, derived limits
    matched: int = 0  # tensor pairs matched (the run may stop at the first diverging one)

    @property
    def first(self) -> LayerRow | None:
        return next((r for r in self.all_rows if r.diverged), None)

    @property
    def rows(self) -> list[LayerRow]:
        first = self.first
        return self.all_rows if first is None else self.all_rows[: first.index + 1]

    @property
    def passed(self) -> bool:
        return self.first is None

    def __bool__(self) -> bool:
        return self.passed

    def _unmatched(self) -> str:
        return f"unmatched: {len(self.unmatched_torch)} PyTorch modules, {len(self.unmatched_onnx)} ONNX nodes"

    def report(self) -> str:
        first, n = self.first, max(self.matched, len(self.all_rows))
        where = f"{self.candidate} vs {self.reference} on {self.image}"
        if first is None:
            worst = max(self.all_rows, key=lambda r: r.max_abs_over_scale, default=None)
            peak = f"; largest max|d|/scale {worst.max_abs_over_scale:.3g} at {worst.layer}" if worst else ""
            return f"no layer diverges ({len(self.all_rows)} layers compared{peak}) | {where}; {self._unmatched()}"
        return (f"first diverging layer: {first.layer} (ONNX {first.onnx_node}, row {first.index + 1} of {n}): "
                f"{'; '.join(first.failures)}; the {first.index} layers before it are within limits | "
                f"{where}; {self._unmatched()}")

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {"reference": self.reference, "candidate": self.candidate, "image": self.image,
                "passed": self.passed, "first": None if first is None else first.layer,
                "first_onnx_node": None if first is None else first.onnx_node,
                "layers_compared": len(self.all_rows), "layers_matched": self.matched, "method": self.method,
                "limits": {k: v for k, v in self.limits.__dict__.items() if v is not None},
                "limit_source": self.limit_source, "rows": [r.as_dict() for r in self.rows],
                "unmatched_torch": self.unmatched_torch, "unmatched_onnx": self.unmatched_onnx,
                "seconds": self.seconds, **self.details}

    def markdown(self) -> str:
        first = self.first
        title = "no layer diverges" if first is None else f"first diverging layer: **{first.layer}**"
        limit = self.limit_source or f"max|d|/scale limit {self.limits.max_abs_over_scale:.3g}"
        lines = [f"### Layer diff: {title}", "", f"{self.candidate} vs {self.reference}, {self.image}; per layer: {limit}",
                 "", "| # | layer | ONNX node | shape | max abs | scale | max/scale | mean abs | p99 abs | cosine | argmax "
                 "| verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            verdict = "; ".join(r.failures).replace("|", "\\|") if r.failures else "ok"
            argmax = "" if r.argmax_agreement is None else f"{r.argmax_agreement:.4%}"
            lines.append(f"| {r.index + 1} | {r.layer} | `{r.onnx_node}` | {'x'.join(map(str, r.shape))} | "
                         f"{r.max_abs:.3g} | {r.reference_absmax:.3g} | {r.max_abs_over_scale:.3g} | {r.mean_abs:.3g} | "
                         f"{r.p99_abs:.3g} | {r.cosine:.7f} | {argmax} | {verdict} |")
        for label, items in (("PyTorch modules without an ONNX counterpart", self.unmatched_torch),
                             ("ONNX nodes without a PyTorch counterpart", self.unmatched_onnx)):
            lines += ["", f"{label} ({len(items)}): " + (", ".join(f"`{i}`" for i in items) if items else "none")]
        return "\n".join(lines) + "\n"


def _failures(row: LayerRow, limits: Limits, ref_nonfinite: int) -> tuple[str, ...]:
    out = []
    if ref_nonfinite:
        out.append(f"{ref_nonfinite} NaN/Inf values in the PyTorch reference")
    if row.nonfinite:
        out.append(f"{row.nonfinite} NaN/Inf values")
    if limits.max_abs_over_scale is not None and not row.max_abs_over_scale <= limits.max_abs_over_scale:
        out.append(f"max|d|/scale {row.max_abs_over_scale:.3g} > {limits.max_abs_over_scale:.3g}")
    if limits.min_cosine is not None and not row.cosine >= limits.min_cosine:
        out.append(f"cosine {row.cosine:.7f} < {limits.min_cosine:g}")
    if limits.max_rel_euclidean is not None and not row.rel_euclidean <= limits.max_rel_euclidean:
        out.append(f"rel. euclidean {row.rel_euclidean:.3g} > {limits.max_rel_euclidean:g}")
    if (row.argmax_agreement is not None and limits.min_argmax_agreement is not None
            and not row.argmax_agreement >= limits.min_argmax_agreement):
        out.append(f"argmax agreement {row.argmax_agreement:.5%} < {limits.min_argmax_agreement:.3%}")
    return tuple(out)


class Scratch:
    """A reusable float32 buffer, grown to the largest tensor: a fresh 70 MB temporary per layer
    would spend much of the comparison time faulting in pages."""

    def __init__(self) -> None:
        self._buf = torch.empty(0)

    def get(self, n: int) -> torch.Tensor:
        if self._buf.numel() < n:
            self._buf = torch.empty(0)  # free the old one first
            self._buf = torch.empty(n)
        return self._buf[:n]


def _finite(flat: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(values with NaN/Inf zeroed, how many there were)."""
    bad = int(flat.numel() - int(torch.isfinite(flat).sum()))
    return (torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0) if bad else flat), bad


def _sq_norm(flat: torch.Tensor, row: int = 1024) -> float:
    """|x|^2 from float32 norms of 1024-value rows summed in float64: one pass, ~1e-9 relative
    (a single float32 vector_norm over 10^7 values is 1e-4 off)."""
    m = flat.numel() // row * row
    r = torch.linalg.vector_norm(flat[:m].view(-1, row), dim=1).double() if m else torch.zeros(0, dtype=torch.float64)
    tail = float(torch.linalg.vector_norm(flat[m:].double())) if m < flat.numel() else 0.0
    return float((r * r).sum()) + tail * tail


_P99_SAMPLES = 1 << 18


def compare_layer(index: int, point: Point, reference: torch.Tensor, candidate: np.ndarray,
                  limits: Limits, scratch: Scratch | None = None) -> LayerRow:
    """One row. Intermediate tensors: a few torch passes over one reused buffer; graph outputs:
    the parity gate's own :class:`TensorStats` (which adds the argmax agreement)."""
    ref = reference.detach()
    shape = tuple(ref.shape)
    if tuple(candidate.shape) != shape:
        nan = float("nan")
        return LayerRow(index, point.label, point.onnx_node, point.op, shape, nan, nan, nan, nan, nan, nan, 0, None,
                        (f"shape {list(candidate.shape)}, PyTorch {list(shape)}",))
    if point.output_index is not None:
        s = TensorStats(point.label)
        s.update(ref.numpy(), candidate)
        row = LayerRow(index, point.label, point.onnx_node, point.op, shape, s.max_abs, s.mean_abs, s.p99_abs,
                       s.ref_absmax, s.cosine, s.rel_euclidean, s.nonfinite, s.argmax_agreement)
        return _judged(row, limits, s.ref_nonfinite)
    n = ref.numel()
    if n == 0:
        return _judged(LayerRow(index, point.label, point.onnx_node, point.op, shape, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0,
                                0, None), limits, 0)
    a = ref.float().reshape(-1)
    lo, hi = (float(v) for v in torch.aminmax(a))
    ref_bad = 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        a, ref_bad = _finite(a)
        lo, hi = (float(v) for v in torch.aminmax(a))
    b = torch.from_numpy(np.ascontiguousarray(candidate, dtype=np.float32)).reshape(-1)
    d = (scratch or Scratch()).get(n)
    torch.sub(a, b, out=d).abs_()
    max_abs = float(d.max())
    bad = 0
    if not np.isfinite(max_abs):  # a is finite here, so b is not
        b, bad = _finite(b)
        torch.sub(a, b, out=d).abs_()
        max_abs = float(d.max())
    mean_abs = float(d.sum()) / n  # torch's float32 sum is a cascade sum: ~1e-7 relative
    # the percentile on a regular subsample: 1 in 7 as TensorStats, at most 2^18 values
    p99 = float(np.percentile(d[:: max(7, n // _P99_SAMPLES)].numpy(), 99))
    nd, na, nb = (_sq_norm(t) ** 0.5 for t in (d, a, b))
    # cos = 1 - (|d|^2 - (|a| - |b|)^2) / (2 |a| |b|): no cancellation near 1, unlike a.b / (|a||b|)
    cosine = 1.0 - (nd * nd - (na - nb) ** 2) / (2 * na * nb) if na > 0 and nb > 0 else float(na == nb)
    rel = nd / na if na > 0 else float(nd > 0)
    row = LayerRow(index, point.label, point.onnx_node, point.op, shape, max_abs, mean_abs, p99, max(-lo, hi),
                   min(cosine, 1.0), rel, bad, None)
    return _judged(row, limits, ref_bad)


def _judged(row: LayerRow, limits: Limits, ref_nonfinite: int) -> LayerRow:
    return replace(row, failures=_failures(row, limits, ref_nonfinite))


def _as_batch(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1 or x.dtype != np.float32:
        raise ValueError(f"diff_layers takes one float32 image [3,H,W] or [1,3,H,W], got {x.dtype} {list(x.shape)}")
    return np.ascontiguousarray(x)


def load_onnx(path: str | os.PathLike[str]) -> Any:
    import onnx

    if not Path(path).is_file():
        raise OnnxModelError(path, "ONNX file not found", "pass the .onnx exported from the checkpoint")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types depending on the damage
        raise OnnxModelError(path, f"not an ONNX model ({type(exc).__name__})", "pass the .onnx written by "
                             "intrada pth2onnx or torch.onnx.export") from None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The comparison passes are memory-bound and short: on one thread they cost the same on an idle
    machine and 3-25x less on a busy one, where every multithreaded op waits for a second core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Stop(Exception):
    """Raised from a forward hook to end the PyTorch run at the first diverging layer."""


def diff_layers(model: torch.nn.Module, onnx_model: str | os.PathLike[str] | Any, image: np.ndarray, limits: Limits,
                *, image_name: str = "image", candidate: str | None = None, limit_source: str = "",
                details: dict[str, Any] | None = None, stop_at_first: bool = True, threads: int | None = None,
                per_segment: int = 8) -> LayerDiff:
    """Compare every matched intermediate tensor of ``model`` (eval mode, float32) and of the ONNX
    (a path or a loaded ModelProto) on one image; see the module docstring.

    ``stop_at_first``: end both runs at the first diverging layer (the table stops there anyway);
    False compares every layer, e.g. to see how far a divergence travels (``all_rows``)."""
    from .runners.cpu import physical_cores

    t0 = time.perf_counter()
    x = _as_batch(image)
    m = onnx_model if hasattr(onnx_model, "graph") else load_onnx(onnx_model)
    candidate = candidate or (str(onnx_model) if not hasattr(onnx_model, "graph") else "onnx")
    inits = {i.name for i in m.graph.initializer}
    inputs = [i.name for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxModelError(candidate, f"expected 1 input, found {len(inputs)}", "export with a single image input")
    model.eval()
    lmap: LayerMap = map_layers(model, m.graph, x.shape)
    stream = OnnxStream(m, {inputs[0]: x}, [p.onnx_value for p in lmap.points], threads=threads or physical_cores(),
                        per_segment=per_segment, where=candidate)
    hooked: dict[str, list[Point]] = {}
    for p in lmap.points:
        hooked.setdefault(p.module, []).append(p)
    rows: list[LayerRow] = []
    fired: set[str] = set()
    clock = {"onnxruntime": 0.0, "compare": 0.0}
    scratch = Scratch()

    def on_forward(name: str, out: Any) -> None:
        for p in hooked[name]:
            tensor = out[p.tuple_index] if p.tuple_index is not None else out
            if not isinstance(tensor, torch.Tensor):
                continue
            t = time.perf_counter()
            cand = stream.take(p.onnx_value)
            t2 = time.perf_counter()
            with _one_thread():
                rows.append(compare_layer(len(rows), p, tensor, cand, limits, scratch))
            del cand
            clock["onnxruntime"] += t2 - t
            clock["compare"] += time.perf_counter() - t2
            fired.add(p.onnx_value)
            if stop_at_first and rows[-1].diverged:
                raise _Stop

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: on_forward(name, out))
               for name in hooked]
    stopped = False
    try:
        with torch.inference_mode():
            model(torch.from_numpy(x))
    except _Stop:
        stopped = True
    finally:
        for h in handles:
            h.remove()
    missed = [] if stopped else [f"{p.label} (not executed)" for p in lmap.points if p.onnx_value not in fired]
    total = time.perf_counter() - t0
    seconds = {"total": total, **clock, "pytorch": total - clock["onnxruntime"] - clock["compare"],
               "onnxruntime_sessions": stream.session_seconds, "segments": float(stream.segments_run)}
    return LayerDiff("pytorch", candidate, image_name, rows, limits, lmap.unmatched_torch + missed,
                     lmap.unmatched_onnx, lmap.method, limit_source, seconds, dict(details or {}), len(lmap.points))


def write_report(result: LayerDiff, json_path: str | os.PathLike[str] | None = None,
                 markdown_path: str | os.PathLike[str] | None = None) -> None:
    """JSON and/or markdown, each written atomically."""
    import json

    from .atomic import write_text

    for path, text in ((json_path, lambda: json.dumps(result.as_dict(), indent=1)), (markdown_path, result.markdown)):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text())
