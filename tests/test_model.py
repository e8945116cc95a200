"""intrada.model.deeplab against valeoai/ADVENT advent/model/deeplabv2.py (get_deeplab_v2 ->
ResNetMulti(Bottleneck, [3, 4, 23, 3], 19, multi_level=True)) and a state_dict listing made by
instantiating that source. Shapes come from the meta device (no weights, no compute);
numerical checks run single blocks / heads on small inputs against an independent functional
re-implementation written from the spec."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intrada.core import protocol
from intrada.model.deeplab import get_deeplab_v2

# sha256 of the reference listing as [[key, shape], ...] in registration order (compact separators):
# the exact 640 entries, in order, checked on every clone (the listing itself, where
# INTRADA_REFERENCE_DIR provides it, is compared too).
REFERENCE_LISTING_SHA256 = "62c5460fb1f8693db9440a1575491605b3d08a6fa8978ac52ab74d118ac25420"

# advent_deeplabv2_param_counts.json, restated (and compared with the file when it is present).
COUNTS = {
    "state_dict_entries": 640,
    "state_dict_entries_without_num_batches_tracked": 536,
    "parameters_total": 44_601_560,
    "parameters_requires_grad_true": 44_496_216,
    "parameters_bn_affine_frozen": 105_344,
    "buffer_elements_total": 105_448,
    "state_dict_elements_total": 44_707_008,
    "layer5_aux_classifier_params": 700_492,
    "layer6_main_classifier_params": 1_400_908,
    "single_level_model_state_dict_entries": 632,
    "single_level_model_parameters_total": 43_901_068,
}

# Spec section 1, "Layers": (name, blocks, planes, stride, dilation)
LAYERS = [("layer1", 3, 64, 1, 1), ("layer2", 4, 128, 2, 1), ("layer3", 23, 256, 1, 2), ("layer4", 3, 512, 1, 4)]
ASPP = (6, 12, 18, 24)


def spec_state_dict(multi_level: bool = True) -> list[tuple[str, list[int]]]:
    """The state_dict listing derived from ADVENT deeplabv2.py's key pattern and shapes alone."""
    out: list[tuple[str, list[int]]] = []

    def bn(prefix: str, c: int) -> None:
        out.extend([(f"{prefix}.weight", [c]), (f"{prefix}.bias", [c]), (f"{prefix}.running_mean", [c]),
                    (f"{prefix}.running_var", [c]), (f"{prefix}.num_batches_tracked", [])])

    out.append(("conv1.weight", [64, 3, 7, 7]))
    bn("bn1", 64)
    inplanes = 64
    for name, blocks, planes, _stride, _dil in LAYERS:
        for i in range(blocks):
            p = f"{name}.{i}"
            out.append((f"{p}.conv1.weight", [planes, inplanes, 1, 1]))
            bn(f"{p}.bn1", planes)
            out.append((f"{p}.conv2.weight", [planes, planes, 3, 3]))
            bn(f"{p}.bn2", planes)
            out.append((f"{p}.conv3.weight", [4 * planes, planes, 1, 1]))
            bn(f"{p}.bn3", 4 * planes)
            if i == 0:
                out.append((f"{p}.downsample.0.weight", [4 * planes, inplanes, 1, 1]))
                bn(f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    for head, c in ([("layer5", 1024)] if multi_level else []) + [("layer6", 2048)]:
        for b in range(4):
            out.extend([(f"{head}.conv2d_list.{b}.weight", [19, c, 3, 3]), (f"{head}.conv2d_list.{b}.bias", [19])])
    return out


def _listing_sha(listing: list[tuple[str, list[int]]]) -> str:
    return hashlib.sha256(json.dumps([[k, v] for k, v in listing], separators=(",", ":")).encode()).hexdigest()


def meta_model(**kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return get_deeplab_v2(**kwargs).eval()  # type: ignore[arg-type]


def listing(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


# --- keys, shapes, counts ------------------------------------------------------------------------


def test_spec_listing_is_the_reference_json(reference_json) -> None:
    expected = spec_state_dict()
    assert _listing_sha(expected) == REFERENCE_LISTING_SHA256
    ref = reference_json("advent_deeplabv2_state_dict.json")
    if ref is not None:
        assert [(k, list(v)) for k, v in ref.items()] == expected


def test_state_dict_keys_shapes_and_order_equal_reference() -> None:
    got = listing(meta_model())
    expected = spec_state_dict()
    assert len(got) == 640
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"state_dict entry {i}: got {g}, reference {e}"
    assert _listing_sha(got) == REFERENCE_LISTING_SHA256


def test_single_level_state_dict() -> None:
    got = listing(meta_model(multi_level=False))
    assert got == spec_state_dict(multi_level=False)
    assert len(got) == COUNTS["single_level_model_state_dict_entries"]
    assert not any(k.startswith("layer5.") for k, _ in got)


def test_parameter_counts(reference_json) -> None:
    ref = reference_json("advent_deeplabv2_param_counts.json")
    if ref is not None:
        for key, value in COUNTS.items():
            assert ref[key] == value, key
    m = meta_model()
    params = list(m.parameters())
    buffers = list(m.buffers())
    sd = m.state_dict()
    assert len(params) == 328
    assert len(buffers) == 312
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 104
    got = {
        "state_dict_entries": len(sd),
        "state_dict_entries_without_num_batches_tracked": sum(not k.endswith("num_batches_tracked") for k in sd),
        "parameters_total": sum(p.numel() for p in params),
        "parameters_requires_grad_true": sum(p.numel() for p in params if p.requires_grad),
        "parameters_bn_affine_frozen": sum(p.numel() for p in params if not p.requires_grad),
        "buffer_elements_total": sum(b.numel() for b in buffers),
        "state_dict_elements_total": sum(v.numel() for v in sd.values()),
        "layer5_aux_classifier_params": sum(p.numel() for p in m.layer5.parameters()),
        "layer6_main_classifier_params": sum(p.numel() for p in m.layer6.parameters()),
    }
    single = meta_model(multi_level=False)
    got["single_level_model_state_dict_entries"] = len(single.state_dict())
    got["single_level_model_parameters_total"] = sum(p.numel() for p in single.parameters())
    assert got == COUNTS


def test_batchnorm_settings() -> None:
    m = meta_model()
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    for bn in bns:
        assert bn.affine and bn.track_running_stats
        assert bn.eps == 1e-5 and bn.momentum == 0.1
        assert not bn.weight.requires_grad and not bn.bias.requires_grad  # frozen affine, as upstream
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 1 + 33 * 3 + 4 + 2 * 4  # stem, 33 bottlenecks, 4 downsample, 2 heads x 4 branches
    assert all(c.weight.requires_grad for c in convs)


# --- output shapes (512x1024 -> 65x129) ---------------------------------------------------------------


@pytest.mark.parametrize(("hw", "out_hw"), [((512, 1024), (65, 129)), ((1024, 2048), (129, 257)),
                                            ((720, 1280), (91, 161)), ((321, 321), (41, 41))])
def test_output_shapes(hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    out = meta_model()(torch.empty(2, 3, *hw, device="meta"))
    assert isinstance(out, tuple) and len(out) == 2
    aux, main = out
    assert tuple(aux.shape) == (2, 19, *out_hw)
    assert tuple(main.shape) == (2, 19, *out_hw)


def test_stage_shapes_for_512x1024() -> None:
    m = meta_model()
    seen: dict[str, tuple[int, ...]] = {}
    for name in ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "layer5", "layer6"):
        getattr(m, name).register_forward_hook(lambda _m, _i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    m(torch.empty(1, 3, 512, 1024, device="meta"))
    assert seen == {
        "conv1": (1, 64, 256, 512), "maxpool": (1, 64, 129, 257), "layer1": (1, 256, 129, 257),
        "layer2": (1, 512, 65, 129), "layer3": (1, 1024, 65, 129), "layer4": (1, 2048, 65, 129),
        "layer5": (1, 19, 65, 129), "layer6": (1, 19, 65, 129),
    }


def test_ceil_mode_false_gives_the_wrong_64x128() -> None:
    """The counter-example: without ceil_mode the protocol's 65x129 is not produced, so the
    shape tests above (and inspect_onnx) can fail."""
    _, main = meta_model(ceil_mode=False)(torch.empty(1, 3, 512, 1024, device="meta"))
    assert tuple(main.shape[2:]) == (64, 128)
    assert tuple(main.shape[1:]) != protocol.OUTPUT_SHAPE_CHW


def test_single_level_forward_returns_none_aux() -> None:
    aux, main = meta_model(multi_level=False)(torch.empty(1, 3, 512, 1024, device="meta"))
    assert aux is None and tuple(main.shape) == (1, 19, 65, 129)


# --- caffe-style structure (ADVENT deeplabv2.py) ----------------------------------------------------------


def test_stem() -> None:
    m = meta_model()
    assert (m.conv1.in_channels, m.conv1.out_channels) == (3, 64)
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert m.conv1.bias is None
    mp = m.maxpool
    assert isinstance(mp, nn.MaxPool2d)
    assert (mp.kernel_size, mp.stride, mp.padding, mp.ceil_mode) == (3, 2, 1, True)


@pytest.mark.parametrize(("name", "blocks", "planes", "stride", "dilation"), LAYERS)
def test_layer_structure(name: str, blocks: int, planes: int, stride: int, dilation: int) -> None:
    layer = getattr(meta_model(), name)
    assert len(layer) == blocks
    for i, block in enumerate(layer):
        s = stride if i == 0 else 1
        # caffe style: the stride sits on the 1x1 conv1; conv2 is always stride 1
        assert (block.conv1.kernel_size, block.conv1.stride) == ((1, 1), (s, s)), f"{name}.{i}.conv1"
        assert (block.conv2.kernel_size, block.conv2.stride) == ((3, 3), (1, 1)), f"{name}.{i}.conv2"
        # full dilation already in block 0 (not torchvision's previous-dilation block 0)
        assert block.conv2.dilation == (dilation, dilation), f"{name}.{i}.conv2 dilation"
        assert block.conv2.padding == (dilation, dilation), f"{name}.{i}.conv2 padding"
        assert block.conv3.kernel_size == (1, 1) and block.conv3.out_channels == 4 * planes
        assert all(c.bias is None for c in (block.conv1, block.conv2, block.conv3))
        if i == 0:
            ds = block.downsample
            assert ds is not None, f"{name}.0 must have a downsample branch"
            assert isinstance(ds[0], nn.Conv2d) and isinstance(ds[1], nn.BatchNorm2d)
            assert (ds[0].kernel_size, ds[0].stride) == ((1, 1), (stride, stride)), f"{name}.0.downsample.0"
            assert ds[0].bias is None and ds[0].out_channels == 4 * planes
        else:
            assert block.downsample is None, f"{name}.{i} must not have a downsample branch"


def test_classifier_heads_structure() -> None:
    m = meta_model()
    for head, c in (("layer5", 1024), ("layer6", 2048)):
        convs = getattr(m, head).conv2d_list
        assert len(convs) == 4
        for conv, d in zip(convs, ASPP):
            assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (c, 19, (3, 3))
            assert conv.dilation == (d, d) and conv.padding == (d, d) and conv.stride == (1, 1)
            assert conv.bias is not None


# --- numerics against a functional re-implementation of the spec ---------------------------------


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, momentum=0.0, eps=1e-5)


def _spec_bottleneck(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, stride: int, dilation: int,
                     downsample: bool) -> torch.Tensor:
    out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride), sd, f"{p}.bn1"))
    out = F.relu(_bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=1, padding=dilation, dilation=dilation),
                     sd, f"{p}.bn2"))
    out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
    res = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1") if downsample else x
    return F.relu(out + res)  # ReLU after the residual add


@pytest.mark.parametrize(("name", "index"), [("layer1", 0), ("layer2", 0), ("layer2", 1), ("layer3", 0),
                                             ("layer3", 1), ("layer4", 0)])
def test_bottleneck_equals_spec(random_model, random_state_dict, name: str, index: int) -> None:
    _, _, planes, stride, dilation = next(x for x in LAYERS if x[0] == name)
    inplanes = planes * 4 if index else {"layer1": 64, "layer2": 256, "layer3": 512, "layer4": 1024}[name]
    x = torch.randn(1, inplanes, 11, 13, generator=torch.Generator().manual_seed(3))
    sd = dict(random_state_dict)
    with torch.no_grad():
        got = getattr(random_model, name)[index](x.clone())
        expected = _spec_bottleneck(x, sd, f"{name}.{index}", stride if index == 0 else 1, dilation, index == 0)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _spec_head(x: torch.Tensor, sd: dict[str, torch.Tensor], head: str, branches: range = range(4)) -> torch.Tensor:
    return sum(F.conv2d(x, sd[f"{head}.conv2d_list.{b}.weight"], sd[f"{head}.conv2d_list.{b}.bias"],
                        padding=ASPP[b], dilation=ASPP[b]) for b in branches)  # type: ignore[return-value]


def test_aspp_head_sums_all_four_branches(random_model, random_state_dict) -> None:
    x = torch.randn(1, 1024, 30, 31, generator=torch.Generator().manual_seed(4))
    sd = dict(random_state_dict)
    with torch.no_grad():
        got = random_model.layer5(x)
        torch.testing.assert_close(got, _spec_head(x, sd, "layer5"), rtol=1e-4, atol=1e-5)
        # AdaptSegNet's bug (return inside the loop) sums branches 0 and 1 only: must differ
        assert not torch.allclose(got, _spec_head(x, sd, "layer5", range(2)), rtol=1e-3, atol=1e-4)
        # zeroing all branches but k leaves exactly branch k: every branch reaches the output
        for k in range(4):
            head = copy.deepcopy(random_model.layer5)
            for b, conv in enumerate(head.conv2d_list):
                if b != k:
                    conv.weight.zero_()
                    conv.bias.zero_()
            single = _spec_head(x, sd, "layer5", range(k, k + 1))
            assert single.abs().max() > 0
            torch.testing.assert_close(head(x), single, rtol=1e-4, atol=1e-5)


def test_forward_returns_aux_from_layer3_and_main_from_layer4(random_model) -> None:
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        random_model.layer3.register_forward_hook(lambda _m, _i, o: seen.__setitem__("layer3_out", o)),
        random_model.layer4.register_forward_hook(lambda _m, _i, o: seen.__setitem__("layer4_out", o)),
        random_model.layer4.register_forward_pre_hook(lambda _m, i: seen.__setitem__("layer4_in", i[0])),
        random_model.layer5.register_forward_pre_hook(lambda _m, i: seen.__setitem__("layer5_in", i[0])),
        random_model.layer6.register_forward_pre_hook(lambda _m, i: seen.__setitem__("layer6_in", i[0])),
    ]
    try:
        x = torch.randn(1, 3, 57, 67, generator=torch.Generator().manual_seed(5)) * 50
        with torch.no_grad():
            out = random_model(x)
            assert isinstance(out, tuple) and len(out) == 2
            aux, main = out
            assert seen["layer5_in"] is seen["layer3_out"]  # aux head on layer3
            assert seen["layer4_in"] is seen["layer3_out"]
            assert seen["layer6_in"] is seen["layer4_out"]  # main head on layer4
            torch.testing.assert_close(aux, random_model.layer5(seen["layer3_out"]))
            torch.testing.assert_close(main, random_model.layer6(seen["layer4_out"]))
            assert not torch.allclose(aux, main)  # the order matters: (aux, main)
    finally:
        for h in hooks:
            h.remove()


# --- cost ---------------------------------------------------------------------------------------------


def _spec_flops(hw: tuple[int, int], multi_level: bool = True) -> int:
    """2 x MACs of every conv, from the weight shapes and stage sizes of ADVENT deeplabv2.py."""
    h, w = hw
    stem = ((h + 6 - 7) // 2 + 1, (w + 6 - 7) // 2 + 1)
    pool = (-(-(stem[0] + 2 - 3) // 2) + 1, -(-(stem[1] + 2 - 3) // 2) + 1)  # ceil_mode
    final = ((pool[0] - 1) // 2 + 1, (pool[1] - 1) // 2 + 1)
    total = 0
    for key, shape in spec_state_dict(multi_level):
        if len(shape) != 4:
            continue
        size = stem if key == "conv1.weight" else pool if key.startswith("layer1.") else final
        total += 2 * shape[0] * shape[1] * shape[2] * shape[3] * size[0] * size[1]
    return total


def conv_flops(input_hw: tuple[int, int] = (protocol.INPUT_H, protocol.INPUT_W),
               multi_level: bool = True) -> int:
    """2 x multiply-accumulates of every convolution for one image, counted on the meta device
    (no weights, no compute). Both heads are counted because the exported graph runs both. The
    oracle of protocol.GFLOP_PER_IMAGE (the run plan's and the perf gate's cost per image)."""
    total = 0

    def hook(mod: torch.nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, torch.nn.Conv2d)
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += 2 * k * out.shape[1] * out.shape[2] * out.shape[3]

    with torch.device("meta"):
        model = get_deeplab_v2(multi_level=multi_level)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, *input_hw, device="meta"))
    return total


def test_conv_flops() -> None:
    flops = conv_flops()
    assert flops == _spec_flops((512, 1024))
    assert flops / 1e9 == pytest.approx(759.0, rel=1e-3)
    assert flops / 1e9 == pytest.approx(protocol.GFLOP_PER_IMAGE, rel=1e-3)
    assert conv_flops((1024, 2048)) == _spec_flops((1024, 2048))
    assert conv_flops(multi_level=False) == _spec_flops((512, 1024), multi_level=False)
