"""ADVENT / IntraDA DeepLabv2: caffe-style ResNet-101, output stride 8, two ASPP-sum heads.

Implemented from the specification (``advent/model/deeplabv2.py`` semantics), not imported: the
PyPI package ``advent`` is an unrelated placeholder. Attribute names (``conv1``, ``bn1``,
``layer5``, ``conv2d_list``, ``downsample.0`` ...) are kept only for checkpoint compatibility: they
produce exactly the 640 state_dict keys of the released checkpoints.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core import protocol


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Caffe style: the stride sits on the 1x1 conv1, the 3x3 conv2 always has stride 1.
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, affine=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, affine=True)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, affine=True)
        for bn in (self.bn1, self.bn2, self.bn3):
            for p in bn.parameters():
                p.requires_grad = False  # frozen affine BN, as upstream
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ClassifierModule(nn.Module):
    """Four parallel dilated 3x3 convs whose outputs are *all* summed (ADVENT's fixed version;
    AdaptSegNet's returns inside the loop and sums only two)."""

    def __init__(self, inplanes: int, dilations: tuple[int, ...], paddings: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(inplanes, num_classes, kernel_size=3, stride=1, padding=p, dilation=d, bias=True)
            for d, p in zip(dilations, paddings)
        )
        for m in self.conv2d_list:
            assert isinstance(m, nn.Conv2d)
            if not m.weight.is_meta:  # see ResNetMulti: meta layers are built to be loaded
                nn.init.normal_(m.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:]:
            out = out + conv(x)
        return out


ASPP_DILATIONS = (6, 12, 18, 24)


class ResNetMulti(nn.Module):
    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 23, 3),
                 num_classes: int = protocol.NUM_CLASSES, multi_level: bool = True,
                 ceil_mode: bool = True) -> None:
        """``ceil_mode`` exists only so tests can build the wrong (64x128) variant; upstream is True."""
        super().__init__()
        self.multi_level = multi_level
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, affine=True)
        for p in self.bn1.parameters():
            p.requires_grad = False
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=ceil_mode)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(512, layers[3], stride=1, dilation=4)
        if multi_level:
            self.layer5 = ClassifierModule(1024, ASPP_DILATIONS, ASPP_DILATIONS, num_classes)
        self.layer6 = ClassifierModule(2048, ASPP_DILATIONS, ASPP_DILATIONS, num_classes)
        for m in self.modules():
            if getattr(m, "weight", None) is not None and m.weight.is_meta:
                continue  # built on the meta device to be loaded (checkpoint.load_model): no values to init
            if isinstance(m, nn.Conv2d) and not any(m is c for c in self._classifier_convs()):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _classifier_convs(self) -> list[nn.Module]:
        heads = [self.layer6] + ([self.layer5] if self.multi_level else [])
        return [c for h in heads for c in h.conv2d_list]

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        # Block 0 of every layer has a downsample branch: layer1 for the channel change, layer2 for
        # the stride, layer3/4 because upstream also adds one when dilation is 2 or 4.
        downsample = None
        if stride != 1 or self.inplanes != planes * 4 or dilation in (2, 4):
            bn = nn.BatchNorm2d(planes * 4, affine=True)
            for p in bn.parameters():
                p.requires_grad = False
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False), bn)
        # Full dilation already in block 0 (unlike torchvision's replace_stride_with_dilation).
        modules = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * 4
        modules += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x1 = self.layer5(x) if self.multi_level else None
        x2 = self.layer6(self.layer4(x))
        return x1, x2  # (aux, main); evaluation uses index 1


def get_deeplab_v2(num_classes: int = protocol.NUM_CLASSES, multi_level: bool = True,
                   ceil_mode: bool = True) -> ResNetMulti:
    """Upstream's constructor, with upstream defaults (the seed calls it with no arguments)."""
    return ResNetMulti((3, 4, 23, 3), num_classes, multi_level, ceil_mode=ceil_mode)
