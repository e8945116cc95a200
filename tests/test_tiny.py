"""TinyIntraDA (intrada.model.tiny): the IntraDA interface on seven layers, the network the suite's
tests of the gate's mechanics run on; its demo weights segment the demo split like the demo's
DeepLabv2; the environment chooses it (intrada.model.network), nothing else."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from intrada.core import protocol
from intrada.core.errors import CheckpointError, IntradaError
from intrada.dataset.preprocess import to_network_input
from intrada.demo.checkpoint import make_tiny_checkpoint
from intrada.demo.scene import demo_sample
from intrada.evaluation.metrics import ConfusionMatrix
from intrada.evaluation.postprocess import upsample_argmax
from intrada.model.checkpoint import load_model, save_state_dict
from intrada.model.network import DEEPLABV2, ENV, NETWORKS, TINY, network_from_env
from intrada.model.tiny import TinyIntraDA


def test_the_interface_is_the_submissions() -> None:
    with torch.device("meta"):
        aux, main = TinyIntraDA()(torch.empty(2, *protocol.INPUT_SHAPE_CHW))
        floor_aux, _ = TinyIntraDA(ceil_mode=False)(torch.empty(1, *protocol.INPUT_SHAPE_CHW))
    assert tuple(aux.shape) == tuple(main.shape) == (2, *protocol.OUTPUT_SHAPE_CHW)
    assert tuple(floor_aux.shape[-2:]) == (64, 128)  # as the real network without ceil_mode


def test_demo_weights_segment_the_demo_split_like_the_demo_deeplab(tmp_path: Path) -> None:
    """Main head ~87 mIoU on the first two demo images (the demo DeepLabv2: 85.31), the aux head with
    its swapped pairs far below: the tiny network passes and fails the same demo thresholds."""
    state = make_tiny_checkpoint()
    assert all(torch.equal(state[k], v) for k, v in make_tiny_checkpoint().items())  # deterministic
    save_state_dict(state, tmp_path / "tiny.pth")
    model, _ = load_model(tmp_path / "tiny.pth", network=TINY)
    table = protocol.label_lookup_table()
    scores = {"aux": ConfusionMatrix(protocol.NUM_CLASSES), "main": ConfusionMatrix(protocol.NUM_CLASSES)}
    for i in range(2):
        sample = demo_sample(i)
        rgb = np.asarray(Image.fromarray(sample.rgb).resize((protocol.INPUT_W, protocol.INPUT_H),
                                                            Image.Resampling.BICUBIC))
        with torch.inference_mode():
            aux, main = model(torch.from_numpy(to_network_input(rgb))[None])
        for head, logits in (("aux", aux), ("main", main)):
            scores[head].update(table[sample.label_ids], upsample_argmax(logits[0].numpy()))
    miou = {head: acc.score(protocol.CLASS_NAMES).miou for head, acc in scores.items()}
    assert miou["main"] > 80.0 and miou["aux"] < 50.0, miou


def test_a_checkpoint_of_the_other_network_is_refused_by_name(tmp_path: Path) -> None:
    save_state_dict(make_tiny_checkpoint(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"tiny\.pth: state_dict does not match the IntraDA DeepLabv2: "
                                              r"531 missing: layer1\.0\.conv1\.weight.*Hint: .*get_deeplab_v2"):
        load_model(tmp_path / "tiny.pth")  # the default: the submission's architecture
    with pytest.raises(CheckpointError, match=r"does not match TinyIntraDA .*Hint: the checkpoint must be "
                                              r"intrada\.model\.tiny\.TinyIntraDA's"):
        state = make_tiny_checkpoint()
        state.pop("aux.bias")
        save_state_dict(state, tmp_path / "broken.pth")
        load_model(tmp_path / "broken.pth", network=TINY)


def test_the_environment_chooses_the_network() -> None:
    assert network_from_env({}) is DEEPLABV2 and DEEPLABV2.certifies
    assert network_from_env({ENV: "tiny"}) is TINY and not TINY.certifies
    with pytest.raises(IntradaError, match=f"{ENV}: unknown network 'resnet'. Hint: use one of "
                                           f"{', '.join(NETWORKS)}, or unset it"):
        network_from_env({ENV: "resnet"})
