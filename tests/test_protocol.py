"""intrada.core.protocol against its sources: valeoai/ADVENT (advent/domain_adaptation/config.py TEST.*
defaults, advent/dataset/cityscapes.py, cityscapes_list/info.json, eval_UDA.py eval_single,
advent/model/deeplabv2.py) and the model-zoo scripts (Ascend/ModelZoo-PyTorch
ACL_PyTorch/contrib/cv/segmentation/IntraDA: intrada_pth2onnx.py, intrada_preprocess.py,
intrada_postprocess.py). Every literal below is copied from those sources, not from the module, so a
drift of any constant fails here."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from intrada.core import protocol

# Spec section 4, "Label": the labelId -> trainId table (info.json label2train).
SPEC_LABEL_TABLE = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
SPEC_IGNORED_IDS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]
SPEC_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
SPEC_PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]


def test_input_geometry() -> None:
    # TEST.INPUT_SIZE_TARGET = (1024, 512) given as (W, H); NCHW input [N, 3, 512, 1024]
    assert (protocol.INPUT_W, protocol.INPUT_H, protocol.INPUT_C) == (1024, 512, 3)
    assert protocol.INPUT_SHAPE_CHW == (3, 512, 1024)


def test_resize_filter_is_pillow_bicubic() -> None:
    assert protocol.RESIZE_FILTER == "BICUBIC"
    assert getattr(Image.Resampling, protocol.RESIZE_FILTER) == Image.BICUBIC


def test_channel_order_and_no_scaling() -> None:
    assert protocol.CHANNEL_ORDER == "BGR"
    assert protocol.SCALE == 1.0  # no /255, no std division


def test_mean_is_the_exact_float32_config_values() -> None:
    mean = protocol.MEAN_BGR
    assert mean.dtype == np.float32 and mean.shape == (3,)
    # the exact float32 values named in the spec, compared as Python floats (no tolerance)
    assert [float(v) for v in mean] == [104.00698852539062, 116.66876983642578, 122.67891693115234]
    # ... which are the float32 roundings of the config's (B, G, R) numbers
    np.testing.assert_array_equal(mean, np.float32([104.00698793, 116.66876762, 122.67891434]))
    assert mean[0] < mean[1] < mean[2]  # B first: an RGB-ordered mean would be descending
    with pytest.raises(ValueError):
        mean[0] = 0.0  # read-only: nobody can shift the protocol at run time


def test_output_geometry_and_head_order() -> None:
    assert protocol.NUM_CLASSES == 19
    assert (protocol.OUTPUT_H, protocol.OUTPUT_W) == (65, 129)  # ceil_mode=True; 64x128 would be wrong
    assert protocol.OUTPUT_SHAPE_CHW == (19, 65, 129)
    assert protocol.MAIN_OUTPUT_INDEX == 1  # model(image)[1], layer6
    assert protocol.AUX_OUTPUT_INDEX == 0


def test_onnx_interface() -> None:
    assert protocol.ONNX_INPUT_NAME == "image"
    assert protocol.DEFAULT_OPSET == 11
    assert len(protocol.ONNX_OUTPUT_NAMES) == 2 and len(set(protocol.ONNX_OUTPUT_NAMES)) == 2
    # the seed's accidental name for the aux head must not come back
    assert "segmentation" not in protocol.ONNX_OUTPUT_NAMES
    assert "aux" in protocol.ONNX_OUTPUT_NAMES[protocol.AUX_OUTPUT_INDEX]
    assert "main" in protocol.ONNX_OUTPUT_NAMES[protocol.MAIN_OUTPUT_INDEX]


def test_evaluation_upsampling() -> None:
    # nn.Upsample(size=(1024, 2048), mode='bilinear', align_corners=True)
    assert (protocol.LABEL_H, protocol.LABEL_W) == (1024, 2048)
    assert protocol.UPSAMPLE_MODE == "bilinear"
    assert protocol.ALIGN_CORNERS is True
    assert protocol.IGNORE_INDEX == 255
    assert protocol.MIOU_DECIMALS == 2


def test_label_map_equals_info_json_label2train() -> None:
    assert protocol.LABEL_ID_TO_TRAIN_ID == SPEC_LABEL_TABLE
    # every train id exactly once, in labelId order
    assert sorted(SPEC_LABEL_TABLE.values()) == list(range(19))
    assert protocol.MAX_LABEL_ID == 33


def test_label_lookup_table() -> None:
    table = protocol.label_lookup_table()
    assert table.dtype == np.uint8 and table.shape == (256,)
    for label_id in range(256):
        expected = SPEC_LABEL_TABLE.get(label_id, 255)
        assert table[label_id] == expected, f"labelId {label_id}"
    for label_id in SPEC_IGNORED_IDS:
        assert table[label_id] == 255, f"labelId {label_id} must be ignored"
    assert table[34] == 255  # the extra [-1, 255] entry writes map_vector[34] = 255
    # every id 0..33 is either a train id or one of the spec's ignored ids: the two lists cover it
    assert sorted(SPEC_IGNORED_IDS + list(SPEC_LABEL_TABLE)) == list(range(34))
    # a fresh table each call: a caller writing into it cannot corrupt the protocol
    table[7] = 99
    assert protocol.label_lookup_table()[7] == 0


def test_class_names_and_palette() -> None:
    assert list(protocol.CLASS_NAMES) == SPEC_NAMES
    assert [tuple(c) for c in protocol.PALETTE_RGB] == SPEC_PALETTE
    assert len(protocol.CLASS_NAMES) == len(protocol.PALETTE_RGB) == protocol.NUM_CLASSES


def test_file_sizes() -> None:
    assert protocol.BIN_DTYPE == np.dtype("<f4")
    assert protocol.BIN_BYTES == 6_291_456  # 1x3x512x1024 float32
    assert protocol.DUMP_BYTES == 637_260  # 19x65x129 float32
    assert protocol.IMAGE_SUFFIX == "_leftImg8bit.png"
    assert protocol.LABEL_SUFFIX == "_gtFine_labelIds.png"
    assert (protocol.IMAGE_W, protocol.IMAGE_H) == (2048, 1024)


def test_val_split() -> None:
    assert protocol.VAL_CITIES == {"frankfurt": 267, "lindau": 59, "munster": 174}
    assert protocol.VAL_IMAGES == 500 == sum(protocol.VAL_CITIES.values())


def test_model_numbers(reference_json) -> None:
    assert protocol.STATE_DICT_ENTRIES == 640
    assert protocol.PARAMETERS_TOTAL == 44_601_560
    counts = reference_json("advent_deeplabv2_param_counts.json")
    if counts is not None:
        assert protocol.STATE_DICT_ENTRIES == counts["state_dict_entries"]
        assert protocol.PARAMETERS_TOTAL == counts["parameters_total"]
    assert 755.0 <= protocol.GFLOP_PER_IMAGE <= 763.0  # ~759 GFLOP, see test_model.test_conv_flops
    assert protocol.REFERENCE_MIOU == 47.0
