"""TinyIntraDA: the IntraDA DeepLabv2's interface on seven layers, for testing the gate's mechanics.

Same input and outputs as the submission's network (``image`` [N, 3, 512, 1024] BGR minus the caffe
mean -> ``(aux, main)``, each [N, 19, 65, 129] logits, main at index 1) and the same kinds of layers
(a 7x7/2 stem conv with BatchNorm and ReLU, the 3x3/2 max pool with ``ceil_mode=True`` that makes
65x129, a strided 1x1 conv, dilated 3x3 heads, the main head a sum of two branches), so it goes
through every code path the real network goes through: strict checkpoint loading, the seed's ONNX
export, ONNX Runtime, OpenVINO, the noise floor, the layer diff, the device runners. A forward costs
milliseconds instead of seconds.

It is never the architecture a submission is judged as: the gate uses it only where the environment
asks for it (``INTRADA_NETWORK=tiny``, see :mod:`intrada.model.network`), for the suite's tests of
caching, locks, workers and exit codes, and says so in its header and report.
:func:`intrada.demo.checkpoint.make_tiny_checkpoint` gives it weights that segment the demo split.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core import protocol

STEM_CHANNELS = 8
FEATURE_CHANNELS = 16
MAIN_DILATIONS = (6, 12)
AUX_DILATION = 2


class TinyIntraDA(nn.Module):
    def __init__(self, *, ceil_mode: bool = True, num_classes: int = protocol.NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(protocol.INPUT_C, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode)
        self.down = nn.Conv2d(STEM_CHANNELS, FEATURE_CHANNELS, 1, stride=2, bias=False)
        self.bn2 = nn.BatchNorm2d(FEATURE_CHANNELS)
        self.aux = nn.Conv2d(FEATURE_CHANNELS, num_classes, 3, padding=AUX_DILATION, dilation=AUX_DILATION)
        self.main_a = nn.Conv2d(FEATURE_CHANNELS, num_classes, 3, padding=MAIN_DILATIONS[0],
                                dilation=MAIN_DILATIONS[0])
        self.main_b = nn.Conv2d(FEATURE_CHANNELS, num_classes, 3, padding=MAIN_DILATIONS[1],
                                dilation=MAIN_DILATIONS[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.bn2(self.down(x)))
        main = self.main_a(x) + self.main_b(x)
        return self.aux(x), main


def get_tiny(ceil_mode: bool = True, **_: Any) -> TinyIntraDA:
    """The constructor :mod:`intrada.model.network` calls (``ceil_mode=False`` gives 64x128, the
    wrong shape, as it does for the real network)."""
    return TinyIntraDA(ceil_mode=ceil_mode)
