"""Which network a checkpoint is loaded into: the submission's IntraDA DeepLabv2, or TinyIntraDA
(:mod:`intrada.model.tiny`), the same interface on seven layers for testing the gate's mechanics.

The choice is made once, by the environment (:data:`ENV`, read by :func:`intrada.gate.config.build_config`),
and passed to every builder that makes a network (the checkpoint loader, the ONNX export, the PyTorch
runner, the noise floor, the demo checkpoint); nothing else reads it. A real run never sets it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import IntradaError

ENV = "INTRADA_NETWORK"


def _deeplab(ceil_mode: bool = True) -> Any:
    from .deeplab import get_deeplab_v2

    return get_deeplab_v2(ceil_mode=ceil_mode)


def _tiny(ceil_mode: bool = True) -> Any:
    from .tiny import get_tiny

    return get_tiny(ceil_mode=ceil_mode)


@dataclass(frozen=True)
class Network:
    name: str
    title: str  # what a checkpoint must be, for messages
    build: Callable[..., Any]  # build(ceil_mode=True) -> torch module (on the current default device)
    hint: str  # what a checkpoint that does not match should be
    certifies: bool  # False: a test network, never the architecture a submission is judged as

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "certifies": self.certifies}


DEEPLABV2 = Network("deeplabv2", "the IntraDA DeepLabv2", _deeplab,
                    "the checkpoint must be ADVENT get_deeplab_v2(num_classes=19, multi_level=True)", True)
TINY = Network("tiny", "TinyIntraDA (the IntraDA interface on seven layers; a test network)", _tiny,
               "the checkpoint must be intrada.model.tiny.TinyIntraDA's", False)
NETWORKS: dict[str, Network] = {n.name: n for n in (DEEPLABV2, TINY)}


def network_from_env(environ: Mapping[str, str] | None = None) -> Network:
    """The network the environment declares (:data:`ENV`), DeepLabv2 when it declares none."""
    name = (os.environ if environ is None else environ).get(ENV, "").strip() or DEEPLABV2.name
    if name not in NETWORKS:
        raise IntradaError(ENV, f"unknown network {name!r}", f"use one of {', '.join(NETWORKS)}, or unset it "
                           f"(the submission's {DEEPLABV2.name})")
    return NETWORKS[name]
