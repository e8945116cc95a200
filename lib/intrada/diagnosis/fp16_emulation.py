"""The force_fp16 emulation itself (rules and tensors: :mod:`intrada.diagnosis.fp16`): the model's own
FX graph interpreted node by node with the om's arithmetic (:class:`Emulation`), as a runner
(:class:`Fp16EmulationRunner`), and the layer-by-layer diagnosis of a prediction that fails
(:func:`diagnose`)."""
from __future__ import annotations

import operator
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core import protocol
from ..runners.base import Runner
from .fp16 import (EXACT_MODULES, FORCE_FP16, FP16_MAX, PASS_FUNCTIONS, ROUNDED_FUNCTIONS, ConvParams, Fp16Unsupported,
                   Rules, params_from_model, params_from_onnx, round_fp16, round_fp16_, trace)

# -- the interpreter ---------------------------------------------------------------------------------
Observer = Callable[[fx.Node, torch.Tensor, torch.Tensor, torch.Tensor], None]


class Emulation:
    """``Emulation(model)(x)``: the model's outputs as force_fp16 computes them (see the module
    docstring). ``params``: the convs' folded parameters (:func:`params_from_onnx`); by default they
    are folded from ``model``'s own weights (:func:`params_from_model`)."""

    def __init__(self, model: nn.Module, params: Mapping[str, ConvParams] | None = None, *,
                 rules: Rules = FORCE_FP16) -> None:
        model.eval()
        self.rules = rules
        self.gm = trace(model)
        params = dict(params) if params is not None else params_from_model(model, self.gm)
        self.folded = {p.folded for p in params.values() if p.folded}
        self.folded_into = {name: p.folded for name, p in params.items() if p.folded}  # conv -> its BatchNorm
        self.weights: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for name, p in params.items():
            w, b = p.weight, p.bias
            if rules.round_weights:
                w, b = round_fp16(w, saturate=rules.saturate), None if b is None else round_fp16(b, saturate=rules.saturate)
            self.weights[name] = (w.contiguous(), b)
        self.float32 = {name: (p.weight, p.bias) for name, p in params.items()}  # for diagnose()
        self._check()

    def _check(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                mod = self.gm.get_submodule(str(node.target))
                if isinstance(mod, nn.Conv2d) and node.target not in self.weights:
                    raise Fp16Unsupported(str(node.target), "conv without parameters", "pass params for every conv")
                if isinstance(mod, nn.BatchNorm2d) and node.target not in self.folded:
                    raise Fp16Unsupported(str(node.target), "a BatchNorm that follows no conv (nothing to fold it into)",
                                          "the emulation covers conv+BatchNorm, ReLU, MaxPool and Add")
                if not isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, *EXACT_MODULES)):
                    raise Fp16Unsupported(str(node.target), f"no force_fp16 rule for {type(mod).__name__}",
                                          "the emulation covers conv+BatchNorm, ReLU, MaxPool and Add")
            elif node.op == "call_function" and node.target not in (*ROUNDED_FUNCTIONS, *PASS_FUNCTIONS):
                raise Fp16Unsupported(node.name, f"no force_fp16 rule for {getattr(node.target, '__name__', node.target)}",
                                      "the emulation covers conv+BatchNorm, ReLU, MaxPool and Add")
            elif node.op in ("call_method", "get_attr"):
                raise Fp16Unsupported(node.name, f"no force_fp16 rule for {node.op} {node.target}",
                                      "the emulation covers conv+BatchNorm, ReLU, MaxPool and Add")

    def _conv(self, target: str, x: torch.Tensor, fp16: bool) -> torch.Tensor:
        mod = self.gm.get_submodule(target)
        assert isinstance(mod, nn.Conv2d)
        w, b = self.weights[target] if fp16 else self.float32[target]
        return F.conv2d(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)  # type: ignore[arg-type]

    def _apply(self, node: fx.Node, args: Any, kwargs: Any, fp16: bool, inplace: bool) -> tuple[torch.Tensor, bool]:
        """One node's result on one side, unrounded, and whether the om stores it (rounds it)."""
        if node.op == "call_module":
            target = str(node.target)
            mod = self.gm.get_submodule(target)
            if isinstance(mod, nn.Conv2d):
                return self._conv(target, args[0], fp16), True
            if target in self.folded:
                return args[0], False  # computed by the conv it is folded into
            if isinstance(mod, nn.ReLU):  # exact on float16 values; in place where nothing else reads its input
                src = node.args[0]
                alone = inplace and isinstance(src, fx.Node) and src.op != "placeholder" and len(src.users) == 1
                return F.relu(args[0], inplace=alone), False
            return mod(*args, **kwargs), False  # exact on float16 values (EXACT_MODULES)
        if node.op == "call_function":
            fn = operator.add if node.target is operator.iadd else node.target  # never in place: x may be read again
            return fn(*args, **kwargs), node.target in ROUNDED_FUNCTIONS  # type: ignore[operator]
        raise Fp16Unsupported(node.name, f"no force_fp16 rule for {node.op}", "")  # pragma: no cover (_check)

    @staticmethod
    def label(node: fx.Node, folded: Mapping[str, str]) -> str:
        """How a stored result is named in a diagnosis: the conv (with the BatchNorm folded into it) or
        the block an Add belongs to."""
        if node.op == "placeholder":
            return "input"
        if node.op == "call_module":
            bn = folded.get(str(node.target))
            return f"{node.target} (+{bn.rsplit('.', 1)[-1]})" if bn else str(node.target)
        return f"{_scope_of(node)} (add)"

    def run(self, x: torch.Tensor, *, fp16: bool = True) -> Any:
        """Interpret the graph on ``x``; ``fp16=False`` runs the same folded graph in float32 (the
        reference :func:`diagnose` compares with)."""
        return self._run(x, "fp16" if fp16 else "fp32")

    def run_pair(self, x: torch.Tensor, observe: Observer) -> Any:
        """float32 and force_fp16 side by side: ``observe(node, reference, unrounded, rounded)`` for every
        stored result (the float32 value, the float16 side's value before and after rounding); returns
        the float16 side's outputs."""
        return self._run(x, "pair", observe)

    def _run(self, x: torch.Tensor, mode: str, observe: Observer | None = None) -> Any:
        last_use: dict[fx.Node, fx.Node] = {}
        for node in self.gm.graph.nodes:
            for inp in node.all_input_nodes:
                last_use[inp] = node
        sides = {"fp16": (True,), "fp32": (False,), "pair": (False, True)}[mode]
        rnd = self.rules.round_activations
        sat = self.rules.saturate
        env: dict[fx.Node, tuple[Any, ...]] = {}
        for node in self.gm.graph.nodes:
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: env[n][-1])
            outs: list[Any] = []
            stored = False
            for i, fp16 in enumerate(sides):
                if node.op == "placeholder":
                    out, stored = x.float().clone() if fp16 and rnd else x.float(), True
                else:
                    args = fx.node.map_arg(node.args, lambda n: env[n][i])
                    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n][i])
                    out, stored = self._apply(node, args, kwargs, fp16, inplace=True)
                if stored and fp16 and rnd:
                    if observe is not None:
                        rounded = round_fp16_(out.clone(), sat)
                        observe(node, outs[0], out, rounded)
                        out = rounded
                    else:
                        out = round_fp16_(out, sat)
                outs.append(out)
            env[node] = tuple(outs)
            for inp in node.all_input_nodes:
                if last_use.get(inp) is node:
                    env.pop(inp, None)
        raise Fp16Unsupported("graph", "no output node", "")  # pragma: no cover

    def __call__(self, x: torch.Tensor) -> Any:
        with torch.inference_mode():
            return self.run(x)


def _scope_of(node: fx.Node) -> str:
    """The module whose forward an FX call_function node came from (``layer1.0``), from the module
    stack the tracer records; the node's own name when it has none."""
    stack = node.meta.get("nn_module_stack")
    return str(next(reversed(stack))) if stack else node.name


# -- the runner ----------------------------------------------------------------------------------------
def load_emulation(onnx_path: str | os.PathLike[str]) -> Emulation:
    """The emulation of what atc converts from ``onnx_path``: the DeepLabv2 module tree (meta device:
    structure only) with the ONNX's own folded conv parameters."""
    import onnx

    from ..model.deeplab import get_deeplab_v2

    try:
        m = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf raises several types depending on the damage
        raise Fp16Unsupported(onnx_path, f"not an ONNX model ({type(exc).__name__})", "pass the exported .onnx") from None
    with torch.device("meta"):
        skeleton = get_deeplab_v2()
    skeleton.eval()
    params = params_from_onnx(skeleton, m, str(onnx_path))
    del m
    return Emulation(skeleton, params)


class Fp16EmulationRunner(Runner):
    """The emulation of an ONNX's om as a runner: ``with runner: aux, main = runner.infer(batch)``."""

    backend = "fp16-emulation"

    def __init__(self, onnx_path: str | os.PathLike[str] | None = None, *, emulation: Emulation | None = None) -> None:
        super().__init__()
        if (onnx_path is None) == (emulation is None):
            raise ValueError("pass exactly one of onnx_path or emulation")
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None
        self._given = emulation
        self._emulation: Emulation | None = emulation
        self.seconds = 0.0  # emulated forwards, this runner's lifetime

    def _activate(self) -> None:
        if self._emulation is None:
            assert self.onnx_path is not None
            self._emulation = load_emulation(self.onnx_path)

    def _deactivate(self) -> None:
        self._emulation = self._given

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._emulation is not None
        t0 = time.perf_counter()
        outputs = self._emulation(torch.from_numpy(batch))
        self.seconds += time.perf_counter() - t0
        aux, main = outputs[protocol.AUX_OUTPUT_INDEX], outputs[protocol.MAIN_OUTPUT_INDEX]
        return aux.numpy(), main.numpy()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": torch.__version__, "device": "cpu",
                "rules": FORCE_FP16.as_dict(), "threads": torch.get_num_threads()}


# -- where it goes wrong -------------------------------------------------------------------------------
@dataclass
class Fp16Diagnosis:
    """float32 vs force_fp16, every stored result of one image: which layer overflows, which loses most."""

    image: str
    rows: list[Any]  # intrada.diagnosis.layerstats.LayerRow, per stored result, in execution order
    gains: list[float]  # per row: its rel. euclidean minus the largest of the stored results it reads
    overflow: dict[str, int]  # layer -> values beyond +-65504 (saturated), in execution order
    seconds: float = 0.0

    @property
    def first_overflow(self) -> tuple[str, int] | None:
        return next(iter(self.overflow.items()), None)

    @property
    def largest_loss(self) -> tuple[Any, float] | None:
        if not self.rows:
            return None
        i = max(range(len(self.rows)), key=lambda k: self.gains[k])
        return self.rows[i], self.gains[i]

    @property
    def first_beyond(self) -> Any:
        """The first stored result beyond the per-layer limits (the om's), or None."""
        return next((r for r in self.rows if r.diverged), None)

    def report(self) -> str:
        parts = []
        first = self.first_overflow
        if first is not None:
            parts.append(f"float16 overflow in {len(self.overflow)} layer{'s' if len(self.overflow) != 1 else ''}, "
                         f"first {first[0]}: {first[1]:,} values beyond +-65504 saturate")
        else:
            parts.append("no float16 overflow")
        loss = self.largest_loss
        if loss is not None:
            row, gain = loss
            parts.append(f"loses most at {row.layer}: rel. euclidean {row.rel_euclidean - gain:.3g} -> "
                         f"{row.rel_euclidean:.3g}")
        beyond = self.first_beyond
        if beyond is not None:
            parts.append(f"first layer beyond the om limits: {beyond.layer} ({'; '.join(beyond.failures)})")
        return f"{'; '.join(parts)} (force_fp16 emulation vs float32 on {self.image}, {len(self.rows)} stored results)"

    def as_dict(self) -> dict[str, Any]:
        loss = self.largest_loss
        beyond = self.first_beyond
        return {"image": self.image, "report": self.report(), "overflow": dict(self.overflow),
                "largest_loss": None if loss is None else {"layer": loss[0].layer, "gain": loss[1],
                                                           "rel_euclidean": loss[0].rel_euclidean},
                "first_beyond_limits": None if beyond is None else beyond.layer, "seconds": self.seconds,
                "rows": [{**r.as_dict(), "gain": g, "overflow": self.overflow.get(r.layer, 0)}
                         for r, g in zip(self.rows, self.gains)]}

    def markdown(self, top: int = 12) -> str:
        """The layers that lose most (and every overflowing one), in execution order."""
        order = sorted(range(len(self.rows)), key=lambda k: -self.gains[k])[:top]
        keep = sorted(set(order) | {k for k, r in enumerate(self.rows) if r.layer in self.overflow})
        lines = [f"### force_fp16 emulation vs float32, {self.image}", "", self.report(), "",
                 "| # | layer | shape | rel. euclidean | gain | cosine | max/scale | overflow | verdict |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for k in keep:
            r = self.rows[k]
            verdict = "; ".join(r.failures).replace("|", "\\|") if r.failures else "ok"
            lines.append(f"| {r.index + 1} | {r.layer} | {'x'.join(map(str, r.shape))} | {r.rel_euclidean:.3g} | "
                         f"{self.gains[k]:+.3g} | {r.cosine:.7f} | {r.max_abs_over_scale:.3g} | "
                         f"{self.overflow.get(r.layer, 0)} | {verdict} |")
        return "\n".join(lines) + "\n"


def diagnose(emulation: Emulation, image: np.ndarray, limits: Any, *, image_name: str = "image") -> Fp16Diagnosis:
    """float32 and force_fp16 side by side on one image ([3,H,W] or [1,3,H,W] float32): every stored
    result compared (:func:`intrada.diagnosis.layerstats.compare_layer`, judged against ``limits``, the om's),
    values beyond the float16 range counted, and each layer's loss (how much its rounding adds to the
    relative error of what it reads)."""
    from .layermap import Point
    from .layerstats import Scratch, compare_layer

    t0 = time.perf_counter()
    x = np.asarray(image, dtype=np.float32)
    x = np.ascontiguousarray(x[None] if x.ndim == 3 else x)
    gm = emulation.gm
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    outputs = {n: i for i, n in enumerate(out_node.all_input_nodes)}
    stored_inputs = _stored_inputs(emulation)
    rows: list[Any] = []
    gains: list[float] = []
    rel: dict[fx.Node, float] = {}
    overflow: dict[str, int] = {}
    scratch = Scratch()

    def observe(node: fx.Node, reference: torch.Tensor, pre: torch.Tensor, rounded: torch.Tensor) -> None:
        label = Emulation.label(node, emulation.folded_into)
        over = int((pre.abs() > FP16_MAX).sum())
        if over:
            overflow[label] = over
        op = "Conv" if node.op == "call_module" else ("Input" if node.op == "placeholder" else "Add")
        point = Point(label, str(node.target), node.name, node.name, op, output_index=outputs.get(node))
        row = compare_layer(len(rows), point, reference, rounded.numpy(), limits, scratch)
        rows.append(row)
        rel[node] = row.rel_euclidean
        gains.append(row.rel_euclidean - max((rel.get(n, 0.0) for n in stored_inputs[node]), default=0.0))

    with torch.inference_mode():
        emulation.run_pair(torch.from_numpy(x), observe)
    return Fp16Diagnosis(image_name, rows, gains, overflow, time.perf_counter() - t0)


def _stored_inputs(emulation: Emulation) -> dict[fx.Node, set[fx.Node]]:
    """Per node, the stored (rounded) results it reads, through ReLU, MaxPool and folded BatchNorms."""
    stored: dict[fx.Node, set[fx.Node]] = {}
    for node in emulation.gm.graph.nodes:
        found: set[fx.Node] = set()
        for inp in node.all_input_nodes:
            is_stored = inp.op == "placeholder" or (inp.op == "call_module" and isinstance(
                emulation.gm.get_submodule(str(inp.target)), nn.Conv2d)) or (
                inp.op == "call_function" and inp.target in ROUNDED_FUNCTIONS)
            found |= {inp} if is_stored else stored.get(inp, set())
        stored[node] = found
    return stored
