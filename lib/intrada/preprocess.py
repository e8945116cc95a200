"""Image -> network input, byte-identical to ADVENT's arithmetic.

ADVENT: ``Image.open(p).convert('RGB').resize((1024, 512), BICUBIC)`` -> ``np.asarray(float32)``
-> ``[:, :, ::-1]`` (BGR) -> ``- IMG_MEAN`` (float32) -> ``transpose(2, 0, 1)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from . import protocol
from .errors import DatasetError


def load_resized_rgb(image_path: str | os.PathLike[str]) -> np.ndarray:
    """uint8 HWC RGB at 512x1024, resized by Pillow's BICUBIC exactly as upstream."""
    image_path = Path(image_path)
    try:
        with Image.open(image_path) as im:
            if im.size != (protocol.IMAGE_W, protocol.IMAGE_H):
                raise DatasetError(image_path, f"image is {im.size[0]}x{im.size[1]}, expected "
                                   f"{protocol.IMAGE_W}x{protocol.IMAGE_H}",
                                   "use the original leftImg8bit PNGs (the protocol resizes 2048x1024 to 1024x512)")
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(image_path, "image not found", "check the Cityscapes root") from None
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(image_path, f"cannot decode image ({exc})", "re-extract leftImg8bit") from None
    resized = rgb.resize((protocol.INPUT_W, protocol.INPUT_H), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def to_network_input(rgb: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, BGR minus the float32 caffe mean; no scaling."""
    out = np.empty(protocol.INPUT_SHAPE_CHW, dtype=np.float32)
    # One pass: channel c of the output is BGR channel c, i.e. RGB channel 2 - c.
    for c in range(3):
        np.subtract(rgb[:, :, 2 - c], protocol.MEAN_BGR[c], out=out[c], dtype=np.float32)
    return out


def preprocess_image(image_path: str | os.PathLike[str]) -> np.ndarray:
    """float32 (3, 512, 1024) network input for one image."""
    return to_network_input(load_resized_rgb(image_path))
