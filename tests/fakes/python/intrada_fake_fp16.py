"""What a faithful force_fp16 om computes, for the contract-fake device: the om's ONNX rewritten so that
ONNX Runtime computes on the CPU what the device computes (used by intrada_fake_npu.FakeModel).

Deliberately independent of the ``intrada`` package (a fake that reused the gate's emulation would
only prove that the gate agrees with itself): the gate's emulation interprets the PyTorch module tree
(intrada.diagnosis.fp16); this rewrites the ONNX graph atc is given. The device's arithmetic, from the CANN
documentation:

* ``atc --precision_mode=force_fp16``, the default for inference: float16 wherever an operator has a
  float16 implementation ("ATC Instructions > --precision_mode",
  https://www.hiascend.com/document/detail/en/canncommercial/800/devaids/atc/atlasatcparam_16_0067.html):
  the weights and every operator's result are stored in float16;
* the AI Core's Cube unit multiplies float16 operands into a float accumulator (Ascend C "Mmad":
  half x half -> float for Atlas inference products,
  https://www.hiascend.com/document/detail/zh/canncommercial/700/operatordev/Ascendcopdevg/atlasascendc_api_07_0136.html);
* overflow saturates to +-65504 (Atlas inference products support only the saturation mode:
  ``aclrtFloatOverflowMode``,
  https://www.hiascend.com/document/detail/en/CANNCommunityEdition/910/API/runtimeapi/aclcppdevg_03_1389.html).

The rewrite: every float32 initializer is replaced by its float16 value (saturated; still typed
float32), and the graph input and every float32 node output go through ``Clip(-65504, 65504) ->
Cast(float16) -> Cast(float)``. The nodes themselves still compute in float32, on float16 values: a
product of two float16 values is exact in float32, so a Conv sums float16 products in float32 and
its result is rounded once, when stored. A Conv here is the exported Conv with its BatchNorm already
folded in (torch's exporter folds it), so the folded weights are what gets rounded.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FP16_MAX = 65504.0
SUFFIX = "__intrada_fake_fp32"


def _round(a: np.ndarray) -> np.ndarray:
    return np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16).astype(np.float32)


def force_fp16(onnx_bytes: bytes) -> bytes:
    """The rewritten model (serialized), ready for an ONNX Runtime session."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.output, *shape_inference.infer_shapes(model).graph.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {i.name for i in graph.initializer}
    for i, init in enumerate(graph.initializer):
        types[init.name] = init.data_type
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(_round(numpy_helper.to_array(init)), init.name))

    bounds: list[Any] = []
    if opset >= 11:
        bounds = [numpy_helper.from_array(np.array(-FP16_MAX, np.float32), f"fp16_min{SUFFIX}"),
                  numpy_helper.from_array(np.array(FP16_MAX, np.float32), f"fp16_max{SUFFIX}")]
        graph.initializer.extend(bounds)

    def chain(src: str, dst: str) -> list[Any]:
        """src (float32) -> saturated -> float16 -> dst (float32)."""
        clip_in = [src] + [b.name for b in bounds]
        clip_attrs = {} if opset >= 11 else {"min": -FP16_MAX, "max": FP16_MAX}
        return [helper.make_node("Clip", clip_in, [f"{dst}{SUFFIX}_clip"], name=f"{dst}{SUFFIX}_clip", **clip_attrs),
                helper.make_node("Cast", [f"{dst}{SUFFIX}_clip"], [f"{dst}{SUFFIX}_f16"], name=f"{dst}{SUFFIX}_f16",
                                 to=TensorProto.FLOAT16),
                helper.make_node("Cast", [f"{dst}{SUFFIX}_f16"], [dst], name=f"{dst}{SUFFIX}_f32", to=TensorProto.FLOAT)]

    nodes: list[Any] = []
    renamed: dict[str, str] = {}
    for inp in graph.input:
        if inp.name not in inits and types.get(inp.name) == TensorProto.FLOAT:
            renamed[inp.name] = f"{inp.name}{SUFFIX}_in"
            nodes += chain(inp.name, renamed[inp.name])
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
        stored = []
        for k, name in enumerate(node.output):
            if name and types.get(name) == TensorProto.FLOAT:
                node.output[k] = f"{name}{SUFFIX}"
                stored.append(name)
        nodes.append(node)
        for name in stored:
            nodes += chain(f"{name}{SUFFIX}", name)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # the renamed intermediates are re-inferred by the runtime
    return model.SerializeToString()  # type: ignore[no-any-return]
