"""The network and its two serialised forms: the ADVENT DeepLabv2 (:mod:`.deeplab`), checkpoint
loading (:mod:`.checkpoint`) and the seed's ONNX export (:mod:`.onnx_export`). Imports only
:mod:`intrada.core`.

``from intrada.model import get_deeplab_v2`` keeps working (the network was ``intrada.model``
before the package was grouped); the names are resolved on first use, so importing a sibling such
as :mod:`.onnx_export` for ``inspect_onnx`` does not import torch.
"""
from __future__ import annotations

from typing import Any

_NETWORK = ("ASPP_DILATIONS", "Bottleneck", "ClassifierModule", "ResNetMulti", "get_deeplab_v2")
__all__ = list(_NETWORK)


def __getattr__(name: str) -> Any:
    if name in _NETWORK:
        from . import deeplab

        return getattr(deeplab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
