"""The IntraDA / ADVENT evaluation protocol: every constant in one place.

Sources: valeoai/ADVENT (the copy IntraDA vendors at feipan664/IntraDA 070b0b7 is identical)
``advent/domain_adaptation/config.py`` (TEST.* defaults), ``advent/dataset/cityscapes.py`` and
``advent/dataset/cityscapes_list/info.json`` (label map, names, palette),
``advent/domain_adaptation/eval_UDA.py`` ``eval_single`` (upsampling, argmax, histogram),
``advent/model/deeplabv2.py`` (the network), and the model-zoo submission's scripts
(Ascend/ModelZoo-PyTorch ``ACL_PyTorch/contrib/cv/segmentation/IntraDA/``: intrada_pth2onnx.py,
intrada_preprocess.py, intrada_postprocess.py; bin and dump file formats).
Nothing else in the package may restate these numbers; tests pin each one.
"""
from __future__ import annotations

import numpy as np

# --- network input -------------------------------------------------------------------------
# TEST.INPUT_SIZE_TARGET = (1024, 512) is given as (W, H) upstream.
INPUT_W: int = 1024
INPUT_H: int = 512
INPUT_C: int = 3
INPUT_SHAPE_CHW: tuple[int, int, int] = (INPUT_C, INPUT_H, INPUT_W)
# Pillow's antialiased bicubic (a = -0.5) on the uint8 image, as ADVENT's Image.resize((1024, 512), BICUBIC).
RESIZE_FILTER: str = "BICUBIC"
# TEST.IMG_MEAN, BGR order, float32. The exact float32 values are
# 104.00698852539062, 116.66876983642578, 122.67891693115234.
MEAN_BGR: np.ndarray = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
MEAN_BGR.setflags(write=False)
CHANNEL_ORDER: str = "BGR"  # the network sees BGR minus mean, no /255 and no std division
SCALE: float = 1.0

# --- network output ------------------------------------------------------------------------
NUM_CLASSES: int = 19
OUTPUT_H: int = 65  # 512x1024 input -> 65x129 logits (output stride 8, maxpool ceil_mode=True)
OUTPUT_W: int = 129
OUTPUT_SHAPE_CHW: tuple[int, int, int] = (NUM_CLASSES, OUTPUT_H, OUTPUT_W)
AUX_OUTPUT_INDEX: int = 0  # layer5 on layer3, ignored by evaluation
MAIN_OUTPUT_INDEX: int = 1  # layer6 on layer4: ADVENT evaluates model(image)[1]

# --- ONNX interface --------------------------------------------------------------------------
ONNX_INPUT_NAME: str = "image"  # the seed's name; atc's --input_shape refers to it
# Meaningful names in ADVENT order. The seed named index 0 "segmentation" although it is the aux head.
ONNX_OUTPUT_NAMES: tuple[str, str] = ("aux_logits", "main_logits")
ONNX_BATCH_DIM: str = "batch"
DEFAULT_OPSET: int = 11  # the seed's opset_version

# --- evaluation ------------------------------------------------------------------------------
# TEST.OUTPUT_SIZE_TARGET = (2048, 1024) as (W, H): labels stay at native resolution and the
# logits are upsampled to it.
LABEL_W: int = 2048
LABEL_H: int = 1024
UPSAMPLE_MODE: str = "bilinear"
ALIGN_CORNERS: bool = True
IGNORE_INDEX: int = 255
MIOU_DECIMALS: int = 2  # upstream prints round(nanmean(iou) * 100, 2)

# info.json label2train: Cityscapes labelId -> trainId; all other ids (0..33 and -1) -> 255.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# gtFine_labelIds PNGs are 8-bit and hold ids 0..33 (the seed's postprocess asserts -1..33; -1, the
# license plate, never occurs in a PNG). Any other value means the file is not a labelIds map.
MAX_LABEL_ID: int = 33


def label_lookup_table() -> np.ndarray:
    """uint8 table of 256 entries mapping a uint8 labelId pixel to its trainId (255 = ignore)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


# info.json "label" (the spelling "motocycle" is upstream's; reports use the corrected name).
CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# info.json "palette", RGB per trainId.
PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# --- files -------------------------------------------------------------------------------------
BIN_DTYPE = np.dtype("<f4")  # raw little-endian float32, C order, no header
BIN_BYTES: int = INPUT_C * INPUT_H * INPUT_W * 4  # 6,291,456
DUMP_BYTES: int = NUM_CLASSES * OUTPUT_H * OUTPUT_W * 4  # 637,260 per sample and output
IMAGE_SUFFIX: str = "_leftImg8bit.png"
LABEL_SUFFIX: str = "_gtFine_labelIds.png"
IMAGE_W: int = 2048  # native Cityscapes resolution
IMAGE_H: int = 1024
VAL_IMAGES: int = 500  # the official val split: frankfurt 267, lindau 59, munster 174
VAL_CITIES: dict[str, int] = {"frankfurt": 267, "lindau": 59, "munster": 174}

# --- model -----------------------------------------------------------------------------------
STATE_DICT_ENTRIES: int = 640
PARAMETERS_TOTAL: int = 44_601_560
# Multiply-accumulates x 2 for one 3x512x1024 image (counted from the conv shapes; see model.flops).
GFLOP_PER_IMAGE: float = 759.0

# --- reference numbers -----------------------------------------------------------------------
REFERENCE_MIOU: float = 47.0  # upstream "Ours + entropy normalization"; the seed's online reference
