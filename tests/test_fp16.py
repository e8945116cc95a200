"""The force_fp16 emulation (intrada.diagnosis.fp16, fp16_emulation) against an independent float16 computation.

The reference below is numpy with explicit float16 casts, written from the rules of intrada.diagnosis.fp16's
docstring, not from its code: BatchNorm folded into the conv (float32), folded weights and biases
cast to float16, convolutions as an im2col matrix product of float16 values accumulated in float32
(BLAS sgemm), every conv and Add result cast to float16 (saturating at +-65504), ReLU and MaxPool on
float16 values. The toy network has the DeepLabv2 ops: a strided stem conv + BatchNorm + ReLU +
ceil-mode MaxPool, a dilated bottleneck with a residual Add, a 1x1 aux head and a two-branch
dilated head summed.

Each rule is shown to be visible: a reference with one rule drifted (float16 accumulation, weights
not rounded, BatchNorm rounded on its own, activations not rounded) lies far from the faithful one
by the same measure under which the emulation matches it, so the match test fails if the emulation
drifts (also shown directly for the emulation's own switches).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from intrada.diagnosis import fp16, fp16_emulation
from intrada.parity.compare import Limits

FP16_MAX = 65504.0


# -- the toy network -----------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c // 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c // 2)
        self.conv2 = nn.Conv2d(c // 2, c // 2, 3, padding=2, dilation=2, bias=False)
        self.bn2 = nn.BatchNorm2d(c // 2)
        self.conv3 = nn.Conv2d(c // 2, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + x)


class TinyNet(nn.Module):
    def __init__(self, c: int = 64, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.block = Block(c)
        self.aux = nn.Conv2d(c, classes, 1)
        self.head_a = nn.Conv2d(c, classes, 3, padding=2, dilation=2)
        self.head_b = nn.Conv2d(c, classes, 3, padding=4, dilation=4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.block(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.aux(x), self.head_a(x) + self.head_b(x)


def tiny(seed: int = 0, scale: float = 1.0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.5)
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.3, 3.0)
        net.conv1.weight.mul_(scale)
    return net.eval()


def image(seed: int = 1, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (1, 3, h, w)) - 110.0).astype(np.float32)


# -- the independent reference (numpy, explicit float16 casts) -----------------------------------------
def r16(a: np.ndarray, saturate: bool = True) -> np.ndarray:
    if saturate:
        a = np.clip(a, -FP16_MAX, FP16_MAX)
    with np.errstate(over="ignore", invalid="ignore"):  # IEEE: beyond the range is Inf
        return a.astype(np.float16).astype(np.float32)


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int, dil: int,
            accumulate: str) -> np.ndarray:
    """x [C,H,W], w [O,C,kh,kw]: im2col, then the dot products in float32 (sgemm) or summed one
    product at a time in float16 (every partial sum rounded)."""
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((c, kh, kw, ho * wo), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, i * dil:i * dil + stride * (ho - 1) + 1:stride,
                               j * dil:j * dil + stride * (wo - 1) + 1:stride].reshape(c, -1)
    cols = cols.reshape(c * kh * kw, -1)
    wm = w.reshape(o, -1)
    if accumulate == "fp32":
        y = wm.astype(np.float32) @ cols.astype(np.float32)
        if b is not None:
            y = y + b[:, None]
    else:
        acc = np.zeros((o, ho * wo), np.float16) if b is None else np.repeat(b[:, None], ho * wo, 1).astype(np.float16)
        w16, c16 = wm.astype(np.float16), cols.astype(np.float16)
        for k in range(wm.shape[1]):
            acc = acc + w16[:, k:k + 1] * c16[k:k + 1]
        y = acc.astype(np.float32)
    return y.reshape(o, ho, wo)


def np_maxpool(x: np.ndarray, k: int = 3, s: int = 2, p: int = 1) -> np.ndarray:
    """ceil_mode: the last window may start in the input's last row/column (not in the padding)."""
    c, h, w = x.shape

    def size(n: int) -> int:
        out = -(-(n + 2 * p - k) // s) + 1
        return out - 1 if (out - 1) * s >= n + p else out
    ho, wo = size(h), size(w)
    xp = np.full((c, h + 2 * p + k, w + 2 * p + k), -np.inf, np.float32)
    xp[:, p:p + h, p:p + w] = x
    return np.stack([np.stack([xp[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2)) for j in range(wo)], -1)
                     for i in range(ho)], -2)


def np_fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray | None]:
    w = conv.weight.detach().numpy().astype(np.float32)
    b = None if conv.bias is None else conv.bias.detach().numpy().astype(np.float32)
    if bn is None:
        return w, b
    g, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    scale = (g / np.sqrt(var + np.float32(bn.eps))).astype(np.float32)
    return (w * scale[:, None, None, None]).astype(np.float32), (beta - mean * scale).astype(np.float32)


def reference(net: TinyNet, x: np.ndarray, *, accumulate: str = "fp32", round_weights: bool = True,
              fold: bool = True, round_activations: bool = True, saturate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """TinyNet under force_fp16 (or with one rule drifted), in numpy."""
    def act(a: np.ndarray) -> np.ndarray:
        return r16(a, saturate) if round_activations else a

    def wt(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (r16(a, saturate) if round_weights else a)

    def conv_bn(t: np.ndarray, conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> np.ndarray:
        s, p, d = conv.stride[0], int(conv.padding[0]), conv.dilation[0]  # type: ignore[index]
        if fold or bn is None:
            w, b = np_fold(conv, bn)
            return act(np_conv(t, wt(w), wt(b), s, p, d, accumulate))  # type: ignore[arg-type]
        # drifted: the conv rounded on its own, then BatchNorm with float16 parameters, rounded again
        y = act(np_conv(t, wt(np_fold(conv, None)[0]), None, s, p, d, accumulate))  # type: ignore[arg-type]
        scale = bn.weight.detach().numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
        shift = bn.bias.detach().numpy() - bn.running_mean.numpy() * scale
        return act(y * wt(scale.astype(np.float32))[:, None, None] + wt(shift.astype(np.float32))[:, None, None])

    relu = (lambda a: np.maximum(a, 0))
    t = act(x[0])
    t = np_maxpool(relu(conv_bn(t, net.conv1, net.bn1)))
    blk = net.block
    out = relu(conv_bn(t, blk.conv1, blk.bn1))
    out = relu(conv_bn(out, blk.conv2, blk.bn2))
    t = relu(act(conv_bn(out, blk.conv3, blk.bn3) + t))
    aux = conv_bn(t, net.aux, None)
    main = act(conv_bn(t, net.head_a, None) + conv_bn(t, net.head_b, None))
    return aux[None], main[None]


def apart(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of values of ``a`` more than one float16 step from ``b``'s."""
    with np.errstate(over="ignore"):  # the step above 65504 is Inf
        step = np.abs(np.spacing(b.astype(np.float16)).astype(np.float32))
    return float(np.mean(np.abs(a - b) > step))


def emulate(net: nn.Module, x: np.ndarray, rules: fp16.Rules = fp16.FORCE_FP16) -> tuple[np.ndarray, np.ndarray]:
    aux, main = fp16_emulation.Emulation(net, rules=rules)(torch.from_numpy(x))
    return aux.numpy(), main.numpy()


# Two faithful float32-accumulating implementations differ only where the order of the float32 sums
# moves a result across a float16 rounding boundary: a value one float16 step off, which can move a
# value after it by a step. Measured on this toy (5 seeds): 0 .. 0.8% of the outputs more than one
# step apart; each drifted rule: 28 .. 86%.
MATCH = 0.02


@pytest.fixture(scope="module")
def net() -> TinyNet:
    return tiny()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return image()


def test_emulation_matches_an_independent_float16_computation(net: TinyNet, x: np.ndarray) -> None:
    ref = reference(net, x)
    got = emulate(net, x)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert apart(g, r) < MATCH, apart(g, r)
        assert np.mean(g == r) > 0.95  # most values are the same float16 values, bit for bit
        assert np.array_equal(g, r16(g))  # every output is a float16 value
    # and it is not float32: force_fp16 moves most logits by more than a float16 step
    with torch.inference_mode():
        f32 = [t.numpy() for t in net(torch.from_numpy(x))]
    assert all(apart(f, r) > 10 * MATCH for r, f in zip(ref, f32))


@pytest.mark.parametrize("drift", [
    {"accumulate": "fp16"},  # the Cube accumulates in float32, not float16 (rule 3)
    {"round_weights": False},  # the om stores its weights in float16 (rule 1)
    {"fold": False},  # BatchNorm is folded before rounding, not rounded on its own (rule 1)
    {"round_activations": False},  # every stored result is float16 (rule 2)
])
def test_each_rule_is_visible_so_the_match_test_catches_a_drift(net: TinyNet, x: np.ndarray, drift: dict) -> None:
    faithful = reference(net, x)
    drifted = reference(net, x, **drift)
    assert min(apart(d, f) for d, f in zip(drifted, faithful)) > 10 * MATCH, drift


@pytest.mark.parametrize("rules", [fp16.Rules(round_weights=False), fp16.Rules(round_activations=False)])
def test_a_drifted_emulation_fails_the_match(net: TinyNet, x: np.ndarray, rules: fp16.Rules) -> None:
    ref = reference(net, x)
    assert min(apart(g, r) for g, r in zip(emulate(net, x, rules), ref)) > 10 * MATCH


def test_overflow_saturates_at_the_float16_maximum() -> None:
    """Atlas inference products saturate (rule 4): a stem scaled x300 overflows float16 in its conv."""
    net = tiny(scale=300.0)
    x = image()
    ref = reference(net, x)
    got = emulate(net, x)
    assert all(np.isfinite(g).all() for g in got)
    for g, r in zip(got, ref):
        assert apart(g, r) < MATCH
    stem = fp16_emulation.Emulation(net)
    seen: dict[str, float] = {}

    def observe(node, reference32, pre, rounded) -> None:  # noqa: ANN001
        seen[fp16_emulation.Emulation.label(node, stem.folded_into)] = float(rounded.abs().max())
    with torch.inference_mode():
        stem.run_pair(torch.from_numpy(x), observe)
    assert seen["conv1 (+bn1)"] == FP16_MAX
    with np.errstate(invalid="ignore", over="ignore"):
        ieee = reference(net, x, saturate=False)
    assert not all(np.isfinite(i).all() for i in ieee)  # without saturation the overflow is Inf / NaN


def test_round_fp16_is_numpys_float16_cast() -> None:
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.normal(0, 1, 10000), rng.normal(0, 1e4, 1000), rng.normal(0, 1e-5, 1000),
                        [65504, 65519.99, 65520, -70000, 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11]]).astype(np.float32)
    got = fp16.round_fp16(torch.from_numpy(a), saturate=False).numpy()
    np.testing.assert_array_equal(got, r16(a, saturate=False))  # ties to even, subnormals, Inf
    sat = fp16.round_fp16(torch.from_numpy(np.append(a, np.nan).astype(np.float32))).numpy()
    np.testing.assert_array_equal(sat, np.append(r16(a), 0.0))  # saturation: +-65504, NaN -> 0


def test_relu_and_maxpool_keep_float16_values_so_rounding_them_is_skipped() -> None:
    t = fp16.round_fp16(torch.randn(2, 8, 17, 23) * 100)
    for mod in (nn.ReLU(), nn.MaxPool2d(3, 2, 1, ceil_mode=True)):
        out = mod(t)
        assert torch.equal(out, fp16.round_fp16(out))
    assert nn.ReLU in fp16.EXACT_MODULES and nn.MaxPool2d in fp16.EXACT_MODULES


def test_folded_parameters_are_the_exporters(net: TinyNet, tmp_path) -> None:  # noqa: ANN001
    """The gate reads the folded convs from the ONNX (what atc converts); folding the model's own
    weights gives the same tensors, and an export without constant folding is refused."""
    import onnx

    path = tmp_path / "tiny.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 3, 48, 64),), str(path), input_names=["image"], opset_version=13,
                          do_constant_folding=True, dynamo=False)
    from_onnx = fp16.params_from_onnx(net, onnx.load(str(path)))
    from_model = fp16.params_from_model(net)
    assert set(from_onnx) == set(from_model) == {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    for name, p in from_model.items():
        q = from_onnx[name]
        assert p.folded == q.folded
        torch.testing.assert_close(q.weight, p.weight, rtol=2e-7, atol=0)
        assert torch.equal(fp16.round_fp16(q.weight), fp16.round_fp16(p.weight))
    assert from_model["block.conv3"].folded == "block.bn3" and from_model["head_a"].folded is None
    unfolded = tmp_path / "unfolded.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 3, 48, 64),), str(unfolded), input_names=["image"], opset_version=13,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE, dynamo=False)
    model = onnx.load(str(unfolded))
    if any(n.op_type == "BatchNormalization" for n in model.graph.node):
        with pytest.raises(fp16.Fp16Unsupported, match="BatchNormalization"):
            fp16.params_from_onnx(net, model)


def test_what_the_emulation_has_no_rule_for_is_refused() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.conv(x))

    with pytest.raises(fp16.Fp16Unsupported, match="no force_fp16 rule for sigmoid"):
        fp16_emulation.Emulation(Odd())


def test_diagnosis_names_the_overflowing_layer_and_the_largest_loss() -> None:
    net = tiny(scale=300.0)
    d = fp16_emulation.diagnose(fp16_emulation.Emulation(net), image(), Limits(min_cosine=0.99, max_rel_euclidean=0.05),
                      image_name="toy")
    assert d.first_overflow is not None and d.first_overflow[0] == "conv1 (+bn1)"
    assert d.rows[0].layer == "input" and len(d.rows) == 1 + 7 + 2  # input, 7 convs, 2 adds
    report = d.report()
    assert re.match(r"float16 overflow in \d+ layers, first conv1 \(\+bn1\): [\d,]+ values beyond \+-65504 saturate; "
                    r"loses most at ", report), report
    row, gain = d.largest_loss  # type: ignore[misc]
    assert gain > 0 and row.layer != "input"
    assert "| conv1 (+bn1) |" in d.markdown() and d.as_dict()["overflow"] == dict(d.overflow)
    quiet = fp16_emulation.diagnose(fp16_emulation.Emulation(tiny()), image(), Limits(min_cosine=0.99), image_name="toy")
    assert quiet.first_overflow is None and quiet.report().startswith("no float16 overflow")
    assert quiet.first_beyond is None  # float16 rounding alone stays far within the om limits


def test_the_runner_has_the_intrada_interface(toy_model) -> None:  # noqa: ANN001
    """The conftest's ToyDeepLab ([N,3,512,1024] -> two [N,19,65,129] heads) through the runner."""
    from intrada.core import protocol

    batch = np.random.default_rng(0).normal(0, 50, (1, *protocol.INPUT_SHAPE_CHW)).astype(np.float32)
    with fp16_emulation.Fp16EmulationRunner(emulation=fp16_emulation.Emulation(toy_model)) as runner:
        aux, main = runner.infer(batch)
    assert aux.shape == main.shape == (1, *protocol.OUTPUT_SHAPE_CHW)
    assert np.array_equal(main, fp16.round_fp16(torch.from_numpy(main)).numpy())
    assert runner.describe()["rules"] == fp16.FORCE_FP16.as_dict()


def test_an_onnx_of_another_architecture_cannot_be_emulated(toy_onnx) -> None:  # noqa: ANN001
    with pytest.raises(fp16.Fp16Unsupported, match="not an export of this architecture|have no ONNX Conv node"):
        fp16_emulation.load_emulation(toy_onnx)
