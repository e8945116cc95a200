"""First diverging layer between an ONNX export and its PyTorch checkpoint.

:func:`diff_layers` runs the PyTorch model on one image with forward hooks and, in step with it,
ONNX Runtime on the same image one graph segment at a time (:class:`intrada.diagnosis.onnxstream.OnnxStream`),
so each pair of intermediate tensors is compared as soon as both exist and then dropped. Rows
follow PyTorch's execution order (a topological order of the graph). A layer diverges when its
``max |diff| / max |reference|`` exceeds the per-layer limit, its cosine falls below the cosine
limit, or (graph outputs only) the class-map agreement falls below the parity limit: the same
statistics as the parity gate (:mod:`intrada.parity.compare`), per layer (:mod:`intrada.diagnosis.layerstats`).

Measured on the demo checkpoint (one image, ONNX Runtime 1.32 vs torch 2.13): every faithful layer
lies between 3e-7 and 2.3e-6 relative, within 2x of the fp32-vs-float64 floor of the outputs
(:mod:`intrada.parity.noise`), so the parity gate's noise-derived limit serves as the per-layer limit.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..parity.compare import Limits, swapped_heads
from ..core.errors import OnnxModelError
from .layermap import LayerMap, Point, map_layers
from .layerstats import LayerRow, Scratch, compare_layer
from .onnxstream import OnnxStream


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
        return {**self.details, "reference": self.reference, "candidate": self.candidate, "image": self.image,
                "passed": self.passed, "first": None if first is None else first.layer,
                "first_onnx_node": None if first is None else first.onnx_node,
                "layers_compared": len(self.all_rows), "layers_matched": self.matched, "method": self.method,
                "limits": {k: v for k, v in self.limits.__dict__.items() if v is not None},
                "limit_source": self.limit_source, "rows": [r.as_dict() for r in self.rows],
                "unmatched_torch": self.unmatched_torch, "unmatched_onnx": self.unmatched_onnx,
                "seconds": self.seconds}

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
    from ..runners.cpu import physical_cores

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

    from ..core.atomic import write_text

    for path, text in ((json_path, lambda: json.dumps(result.as_dict(), indent=1)), (markdown_path, result.markdown)):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text())


def first_diverging_layer(weights: str | os.PathLike[str] | Any, onnx_path: str | os.PathLike[str],
                          bin_path: str | os.PathLike[str], limits: Limits, *, limit_source: str = "",
                          crop: tuple[int, int] | None = None) -> LayerDiff:
    """:func:`diff_layers` of a checkpoint (a path, or the loaded network) and an ONNX on one
    preprocessed .bin (the gate's call when its parity test fails).

    ``crop`` (h, w): diff the centre crop first, a fraction of the cost (a changed weight, op or
    attribute moves every position, so the crop names the same layer); only when no layer diverges
    there (a difference that depends on the input's size or position) is the whole image diffed."""
    from ..model.checkpoint import load_model
    from ..parity.noise import centre_crop
    from ..dataset.preprocess import read_bin

    model = load_model(weights)[0] if isinstance(weights, (str, os.PathLike)) else weights
    image, name = read_bin(bin_path)[None], Path(bin_path).stem
    if crop is not None and (crop[0] < image.shape[-2] or crop[1] < image.shape[-1]):
        on_crop = diff_layers(model, onnx_path, centre_crop(image, crop), limits,
                              image_name=f"{name} (centre {crop[0]}x{crop[1]})", candidate=str(onnx_path),
                              limit_source=limit_source)
        if not on_crop.passed:
            return on_crop
    return diff_layers(model, onnx_path, image, limits, image_name=name, candidate=str(onnx_path),
                       limit_source=limit_source)


def locate_divergence(reference: Any, candidate: Any, names: Sequence[str], limits: Limits, *,
                      weights: str | os.PathLike[str], onnx_path: str | os.PathLike[str],
                      bin_path: str | os.PathLike[str], limit_source: str = "",
                      crop: tuple[int, int] | None = None) -> tuple[str, LayerDiff | None]:
    """Where a failed PyTorch-vs-ONNX parity starts, cheapest answer first: heads in the wrong order
    (read from the stored outputs, :func:`intrada.parity.compare.swapped_heads`), else the first diverging
    layer (:func:`first_diverging_layer`). Returns the line and the layer diff when one ran."""
    crossed = swapped_heads("pytorch", "onnxruntime", reference, candidate, names, limits)
    if crossed is not None:
        return crossed, None
    layers = first_diverging_layer(weights, onnx_path, bin_path, limits, limit_source=limit_source, crop=crop)
    return layers.report(), layers
